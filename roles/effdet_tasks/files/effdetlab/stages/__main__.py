"""python -m effdetlab.stages STAGE --config CONFIG.json [--detach] [--task N]

Stages: train (--detach: start in a new session, return at once), status, stop, export,
benchmark (--detach too), benchmark-prepare (its exports only), benchmark-status, infer, commands (print the automl command
lines), crosscheck (each benchmark mode by the stage vs by hand).
The benchmark as a Slurm job array, one array task per point (model, batch, threads, mode):
benchmark-reset (clear the last array's points/ and benchmark files), benchmark-point (--task N,
else SLURM_ARRAY_TASK_ID: measure point N into run_dir/points/N.json), benchmark-collect (merge
the points/ files into benchmark.json and benchmark_status.json).
Exit: 0 ok, 1 automl failed (the named log says why), 2 bad input.
"""

import argparse
import sys
from typing import List, Optional

from effdetlab.errors import ConversionError
from effdetlab.stages import config as cfgmod
from effdetlab.stages.errors import StageInputError

STAGES = ("train", "status", "stop", "export", "benchmark", "benchmark-prepare", "benchmark-status", "infer",
          "commands", "crosscheck", "benchmark-point", "benchmark-collect", "benchmark-reset")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", required=True, help="the run's JSON config")
    p.add_argument("--detach", action="store_true", help="train, benchmark: run in the background")
    p.add_argument("--task", help="benchmark-point: the point to measure (default: $SLURM_ARRAY_TASK_ID)")
    a = p.parse_args(argv)
    try:
        c = cfgmod.load(a.config)
        if a.task is not None and a.stage != "benchmark-point":
            raise StageInputError("--task is only for benchmark-point")
        if a.stage == "train":
            from effdetlab.stages import train
            return train.detach(c) if a.detach else train.run(c)
        if a.detach and a.stage != "benchmark":
            raise StageInputError("--detach is only for train and benchmark")
        if a.stage in ("status", "stop"):
            from effdetlab.stages import train
            return train.status_cmd(c) if a.stage == "status" else train.stop_cmd(c)
        if a.stage == "export":
            from effdetlab.stages import export
            return export.run(c)
        if a.stage == "infer":
            from effdetlab.stages import infer
            return infer.run(c)
        from effdetlab.stages import benchmark
        if a.detach:
            return benchmark.detach(c)
        if a.stage == "benchmark-point":
            return benchmark.point(c, a.task)
        return {"benchmark": benchmark.run, "benchmark-prepare": benchmark.prepare,
                "benchmark-status": benchmark.status_cmd, "benchmark-collect": benchmark.collect,
                "benchmark-reset": benchmark.reset,
                "commands": benchmark.commands, "crosscheck": benchmark.crosscheck}[a.stage](c)
    except (StageInputError, ConversionError) as e:
        print(f"effdetlab.stages {a.stage}: error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
