"""The molecule scenario of the host layer: create, prepare, converge,
idempotence, check mode, verify (testinfra), destroy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_molecule_default_scenario():
    subprocess.run(["docker", "volume", "rm", "-f", "effdet-lab-molecule-docker"], capture_output=True, check=False)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("molecule")), "test", "--scenario-name", "default"],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**__import__("os").environ, "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"},
    )
    subprocess.run(["docker", "volume", "rm", "-f", "effdet-lab-molecule-docker"], capture_output=True, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # Each stage really ran: idempotence and check mode reported no change.
    for stage in ("converge", "idempotence", "check", "verify"):
        assert f"{stage}: Executed: Successful" in output, stage
    assert " passed" in output
