"""effdet_tasks' effdet_stage action: a failed stage's message is its own words."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "roles" / "effdet_tasks" / "action_plugins" / "effdet_stage.py"
effdet_stage = load_module(PLUGIN, "effdet_stage")


def stage(*args: str) -> dict:
    """What docker_container_exec registers, from a real run of the stage runner."""
    proc = subprocess.run([sys.executable, "-m", "effdetlab.stages", *args], cwd=REPO, capture_output=True,
                          text=True, check=False)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def test_the_stages_own_error_line_is_the_message(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_name": "efficientdet-d0"}')
    result = stage("export", "--config", str(config))
    assert result["rc"] == 2
    message = effdet_stage.exec_error(result, "the export on labhost-1")
    assert message == "the export on labhost-1 failed (exit 2): effdetlab.stages export: error: config: run_dir is required"


def test_the_last_error_line_wins_over_tensorflow_noise():
    noise = "\n".join(f"W1130 02:21:4{i}.80 deprecation.py:50] something is deprecated" for i in range(8))
    result = {"rc": 1, "stderr": noise + "\nerror: --num-shards must be 'auto' or an integer, got 'x'\n"}
    assert effdet_stage.exec_error(result, "conversion").endswith(
        "failed (exit 1): error: --num-shards must be 'auto' or an integer, got 'x'")


def test_without_an_error_line_the_last_lines_are_shown():
    result = {"rc": 137, "stderr": "\n".join(f"line {i}" for i in range(10)) + "\n\n"}
    assert effdet_stage.exec_error(result, "inference") == (
        "inference failed (exit 137): line 5 / line 6 / line 7 / line 8 / line 9")


def test_silent_failures_say_so():
    assert effdet_stage.exec_error({"rc": 1, "stderr": "", "stdout": ""}, "x") == "x failed (exit 1): no output"
    assert effdet_stage.exec_error({"rc": 3, "stdout": "only stdout\n"}, "x") == "x failed (exit 3): only stdout"
