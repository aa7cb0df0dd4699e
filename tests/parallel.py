"""Run the test suite as two pytest processes side by side (what `make test` does).

The tests that use the shared lab (labhost-1..N, the molecule host, results/)
run in one pytest, in file order, as always. The tests named by --beside need
none of it (the unit tests, and modules that start scratch hosts of their
own): a second pytest runs them at the same time, its output kept in a file
and printed after the first one's. Both pytests share the lab-in-a-box
services; `python -m labbox` calls are serialised by a lock
(tests/integration/conftest.py).

    python tests/parallel.py --beside "tests/unit tests/integration/test_x.py" -- [pytest args] tests

The exit status is the first non-zero one of the two.
"""
from __future__ import annotations

import argparse
import subprocess
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
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: the main pytest's arguments")
    ns = parser.parse_args(argv)
    args = [a for a in ns.pytest_args if a != "--"] if ns.pytest_args[:1] == ["--"] else ns.pytest_args
    beside = ns.beside.split()
    main_cmd, side_cmd = commands(beside, args)
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+", prefix="pytest-beside-") as log:
        print(f"[parallel] beside: {' '.join(side_cmd[1:])}", flush=True)
        side = subprocess.Popen(side_cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        print(f"[parallel] main: {' '.join(main_cmd[1:])}", flush=True)
        main_rc = subprocess.run(main_cmd, cwd=REPO, check=False).returncode
        side_rc = side.wait()
        log.seek(0)
        print(f"\n[parallel] output of the pytest that ran beside (exit {side_rc}):", flush=True)
        sys.stdout.write(log.read())
    print(f"[parallel] main pytest exit {main_rc}, beside exit {side_rc}, "
          f"{time.monotonic() - started:.0f} s in all", flush=True)
    return main_rc or side_rc


if __name__ == "__main__":
    sys.exit(main())
