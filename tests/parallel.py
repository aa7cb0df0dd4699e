"""Run the test suite as two pytest processes side by side (what `make test` does).

The tests that use the shared lab (labhost-1..N, the molecule host, results/)
run in one pytest, in file order, as always. The tests named by --beside need
none of it (the unit tests, and modules that start scratch hosts of their
own): a second pytest runs them at the same time, its output kept in a file
and printed after the first one's. Both pytests share the lab-in-a-box
services; `python -m labbox` calls are serialised by a lock
(tests/integration/conftest.py).

    python tests/parallel.py --beside "tests/unit tests/integration/test_x.py" \
        [--then "nice -n 10 .venv-effdet/bin/python -m pytest tests/effdet"] -- [pytest args] tests

--then: a command that runs in the second lane once its pytest is done (the
shared-lab pytest is the longer one); its output is kept and printed the same
way. The exit status is the first non-zero one of them all.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import threading
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(beside: list[str], args: list[str]) -> tuple[list[str], list[str]]:
    """The two pytest command lines: the main one (with args) ignores what runs beside it;
    the one beside takes the paths alone (and no cache, which the main one writes)."""
    pytest = [sys.executable, "-m", "pytest"]
    main = [*pytest, *args, *(f"--ignore={path}" for path in beside)]
    side = [*pytest, "-p", "no:cacheprovider", *beside]
    return main, side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beside", required=True, help="space-separated test paths for the second pytest")
    parser.add_argument("--then", default="", help="a command for the second lane after its pytest (shell words)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: the main pytest's arguments")
    ns = parser.parse_args(argv)
    args = [a for a in ns.pytest_args if a != "--"] if ns.pytest_args[:1] == ["--"] else ns.pytest_args
    beside = ns.beside.split()
    main_cmd, side_cmd = commands(beside, args)
    then_cmd = shlex.split(ns.then)
    started = time.monotonic()
    lane_rcs: list[int] = []
    # O_APPEND: the lane's own lines and its commands' output land in the order written.
    with tempfile.TemporaryFile(mode="a+", prefix="pytest-beside-") as log:
        def second_lane() -> None:
            for cmd in [side_cmd] + ([then_cmd] if then_cmd else []):
                log.write(f"[parallel] second lane: {' '.join(cmd)}\n")
                log.flush()
                lane_rcs.append(subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                                               check=False).returncode)
                log.write(f"[parallel] second lane: exit {lane_rcs[-1]} at {time.monotonic() - started:.0f} s\n")
                log.flush()

        print(f"[parallel] beside: {' '.join(side_cmd[1:])}", flush=True)
        if then_cmd:
            print(f"[parallel] then, beside: {' '.join(then_cmd)}", flush=True)
        lane = threading.Thread(target=second_lane)
        lane.start()
        print(f"[parallel] main: {' '.join(main_cmd[1:])}", flush=True)
        main_rc = subprocess.run(main_cmd, cwd=REPO, check=False).returncode
        main_s = time.monotonic() - started
        lane.join()
        side_rc = next((rc for rc in lane_rcs if rc != 0), 0)
        log.seek(0)
        print(f"\n[parallel] output of the second lane (exit {side_rc}):", flush=True)
        sys.stdout.write(log.read())
    print(f"[parallel] main pytest exit {main_rc} after {main_s:.0f} s, second lane exit {side_rc}, "
          f"{time.monotonic() - started:.0f} s in all", flush=True)
    return main_rc or side_rc

if __name__ == "__main__":
    sys.exit(main())
