"""python -m effdetlab.stages STAGE --config CONFIG.json [--detach]

Stages: train (--detach: start in a new session, return at once), status, stop, export,
benchmark (--detach too), benchmark-prepare (its exports only), benchmark-status, infer, commands (print the automl command
lines), crosscheck (each benchmark mode by the stage vs by hand).
Exit: 0 ok, 1 automl failed (the named log says why), 2 bad input.
"""

import argparse
import sys
from typing import List, Optional

from effdetlab.errors import ConversionError
from effdetlab.stages import config as cfgmod
from effdetlab.stages.errors import StageInputError

STAGES = ("train", "status", "stop", "export", "benchmark", "benchmark-prepare", "benchmark-status", "infer",
          "commands", "crosscheck")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", required=True, help="the run's JSON config")
    p.add_argument("--detach", action="store_true", help="train, benchmark: run in the background")
    a = p.parse_args(argv)
    try:
        c = cfgmod.load(a.config)
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
        return {"benchmark": benchmark.run, "benchmark-prepare": benchmark.prepare,
                "benchmark-status": benchmark.status_cmd,
                "commands": benchmark.commands, "crosscheck": benchmark.crosscheck}[a.stage](c)
    except (StageInputError, ConversionError) as e:
        print(f"effdetlab.stages {a.stage}: error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
