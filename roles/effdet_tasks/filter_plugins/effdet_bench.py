"""effdet_bench_points: the benchmark sweep's points, as the Slurm job array's tasks.

Task N of the array measures point N of effdetlab's points() (the stage
runner, roles/effdet_tasks/files/effdetlab/stages/benchmark.py): for each
(model, batch) pair, each mode, each thread count, where an exported mode
(e2e, tflite*) only for a model with an export. This filter lists them in the
same order, one label each ("efficientdet-d0 bm batch 4 threads 1"), so the
play knows the array's size and names each task. tests/unit/test_effdet_bench.py
checks the order against points() itself.
"""
from __future__ import annotations

from typing import Any, Sequence


def effdet_bench_points(pairs: Sequence[Sequence[Any]], modes: Sequence[str], threads: Sequence[Any],
                        exported_models: Sequence[str]) -> list[str]:
    """One label per point, in points() order."""
    return [f"{model} {mode} batch {int(batch)} threads {int(t)}"
            for model, batch in pairs for mode in modes for t in threads
            if mode == "bm" or model in exported_models]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"effdet_bench_points": effdet_bench_points}
