"""tests/parallel.py: the suite split into two pytest processes that run side by side."""
from __future__ import annotations

import sys
from pathlib import Path
from pathload import load_module

RUNNER = Path(__file__).resolve().parents[1] / "parallel.py"
parallel = load_module(RUNNER, "parallel_runner")


def test_the_main_pytest_ignores_what_runs_beside_it():
    main, side = parallel.commands(["tests/unit", "tests/integration/test_x.py"], ["-x", "tests"])
    assert main == [sys.executable, "-m", "pytest", "-x", "tests", "--ignore=tests/unit",
                    "--ignore=tests/integration/test_x.py"]
    assert side == [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/unit",
                    "tests/integration/test_x.py"]


def test_both_exit_codes_count(tmp_path, monkeypatch):
    ok = tmp_path / "test_ok.py"
    ok.write_text("def test_ok():\n    pass\n")
    bad = tmp_path / "test_bad.py"
    bad.write_text("def test_bad():\n    assert False\n")
    monkeypatch.setattr(parallel, "REPO", tmp_path)
    assert parallel.main(["--beside", str(bad), "--", "-q", "-p", "no:cacheprovider", str(ok)]) != 0
    assert parallel.main(["--beside", str(ok), "--", "-q", "-p", "no:cacheprovider", str(bad)]) != 0
    assert parallel.main(["--beside", str(ok), "--", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_ok.py"),
                          f"--ignore={bad}"]) == 0
