"""playbooks/filter_plugins/lab_reports.py: the verify and status reports, from
a junit XML that a real pytest run writes (testinfra's host ids) and from the
results that status.yml registers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "playbooks" / "filter_plugins"))
import lab_reports  # noqa: E402

HOSTS = ["labhost-1", "labhost-2", "labhost-3"]
CHECKS = '''
import pytest

HOSTS = ["ansible://labhost-1", "ansible://labhost-2"]


@pytest.mark.parametrize("host", HOSTS, ids=HOSTS)
def test_dockerd_active(host):
    pass


@pytest.mark.parametrize("host", HOSTS, ids=HOSTS)
def test_daemon_json_nvidia_runtime(host):
    assert host.endswith("1"), "runtimes | nvidia missing from daemon.json"


@pytest.mark.parametrize("host", HOSTS, ids=HOSTS)
def test_nvidia_smi_gpus(host):
    pytest.skip("verify_gpu_count is 0")


@pytest.fixture
def broken():
    raise RuntimeError("ssh: connect to host labhost-2 port 22: Connection refused")


@pytest.mark.parametrize("host", HOSTS[1:], ids=HOSTS[1:])
def test_lab_user_exists(host, broken):
    pass
'''


def pytest_junit(folder: Path, *args: str) -> str:
    """Run the checks above for real; the junit XML that pytest writes."""
    folder.mkdir(exist_ok=True)
    (folder / "test_checks.py").write_text(CHECKS)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={folder}/junit.xml",
                    *args, str(folder / "test_checks.py")], capture_output=True, text=True, check=False, cwd=folder)
    return (folder / "junit.xml").read_text()


@pytest.fixture(scope="module")
def junit(tmp_path_factory) -> str:
    return pytest_junit(tmp_path_factory.mktemp("verify"))


def test_verify_summary_counts_each_host_and_names_each_problem(junit):
    summary = lab_reports.lab_verify_summary(junit, HOSTS)
    rows = {r["host"]: r for r in summary["hosts"]}
    assert rows["labhost-1"] == {"host": "labhost-1", "passed": 2, "failed": 0, "error": 0, "skipped": 1}
    assert rows["labhost-2"] == {"host": "labhost-2", "passed": 1, "failed": 1, "error": 1, "skipped": 1}
    # A host of the inventory that pytest never reached shows as such, not as missing.
    assert rows["labhost-3"] == {"host": "labhost-3", "passed": 0, "failed": 0, "error": 0, "skipped": 0}
    assert summary["ok"] is False
    assert summary["totals"] == {"passed": 3, "failed": 1, "error": 1, "skipped": 2}
    assert summary["line"] == "3 passed, 1 failed, 1 error, 2 skipped"
    problems = " ".join(summary["problems"])
    assert "test_daemon_json_nvidia_runtime[ansible://labhost-2]" in problems
    assert "runtimes | nvidia missing from daemon.json" in problems
    assert "Connection refused" in problems
    md = summary["markdown"]
    assert "| labhost-1 | 2 | 0 | 1 |" in md and "| labhost-2 | 1 | 2 | 1 |" in md
    assert "PROBLEMS: 3 passed, 1 failed, 1 error, 2 skipped." in md
    assert "runtimes \\| nvidia missing" in md, "a pipe in a message must not split the table's cell"
    json.dumps(summary)  # the JSON file is the summary itself


def test_verify_summary_when_pytest_wrote_no_report():
    summary = lab_reports.lab_verify_summary("", HOSTS[:1], "ERROR: file or directory not found: tests/infra")
    assert summary["ok"] is False and summary["line"] == "no test ran"
    assert "file or directory not found" in summary["markdown"]


def test_verify_summary_all_passed(tmp_path):
    summary = lab_reports.lab_verify_summary(pytest_junit(tmp_path, "-k", "dockerd_active or nvidia_smi"), HOSTS[:2])
    assert summary["ok"] is True and summary["problems"] == []
    assert summary["hosts"][0] == {"host": "labhost-1", "passed": 1, "failed": 0, "error": 0, "skipped": 1}
    assert "OK: 2 passed, 2 skipped." in summary["markdown"]


GPUS = {"rc": 0, "stdout_lines": ["0, NVIDIA H200, 9.0"]}
NO_SMI = {"rc": 2, "stdout_lines": [], "msg": "[Errno 2] No such file or directory: b'nvidia-smi'"}
CONTAINER = {"exists": True, "container": {"Config": {"Image": "effdet-lab/lab:cpu-0123456789ab"},
                                           "State": {"Status": "running", "StartedAt": "2026-12-04T02:33:44.209909Z"}}}
TRAIN = json.dumps({"state": "finished", "global_step": 20, "train_steps": 20, "model_name": "efficientdet-d0",
                    "pid": 4711})
BENCH = json.dumps([
    {"ok": True, "model": "efficientdet-d0", "mode": "bm", "batch": 1, "threads": 2, "device": "cpu",
     "latency_ms": 210.5, "timestamp": "t1", "log": "x"},
    {"ok": True, "model": "efficientdet-d0", "mode": "tflite", "batch": 1, "threads": 2, "device": "cpu",
     "latency_ms": 95.25, "timestamp": "t2"},
    {"ok": False, "model": "efficientdet-d0", "mode": "e2e", "error": "oom"},
])


def test_status_row_line_and_table():
    row = lab_reports.lab_status_row("labhost-1", GPUS, CONTAINER, TRAIN, BENCH)
    assert row == {
        "host": "labhost-1", "gpus": ["0, NVIDIA H200, 9.0"], "gpu_note": "", "image": "effdet-lab/lab:cpu-0123456789ab",
        "container": "running since 2026-12-04T02:33:44",
        "training": {"state": "finished", "global_step": 20, "train_steps": 20, "model_name": "efficientdet-d0"},
        "benchmark": {"model": "efficientdet-d0", "mode": "tflite", "batch": 1, "threads": 2, "device": "cpu",
                      "latency_ms": 95.25, "timestamp": "t2"}}
    assert lab_reports.lab_status_line(row) == (
        "labhost-1: GPUs 1; image effdet-lab/lab:cpu-0123456789ab; container running since 2026-12-04T02:33:44; "
        "training finished step 20/20; last benchmark efficientdet-d0 tflite batch 1, 2 thread(s), cpu: 95.25 ms")
    bare = lab_reports.lab_status_row("labhost-2", NO_SMI, {"exists": False})
    assert bare["gpu_note"] == "no nvidia-smi" and bare["container"] == "absent"
    assert bare["training"] is None and bare["benchmark"] is None and bare["image"] is None
    assert lab_reports.lab_status_line(bare) == (
        "labhost-2: GPUs 0 (no nvidia-smi); image none; container absent; training none; last benchmark none")
    table = lab_reports.lab_status_markdown([row, bare]).splitlines()
    assert table[2] == ("| labhost-1 | 1 | effdet-lab/lab:cpu-0123456789ab | running since 2026-12-04T02:33:44 "
                        "| finished 20/20 | efficientdet-d0 tflite b1 t2 cpu | 95.25 |")
    assert table[3] == "| labhost-2 | 0 | - | absent | - | - | - |"
    # A file of failed measurements only: no benchmark to show.
    failed_only = lab_reports.lab_status_row("h", GPUS, CONTAINER, None, json.dumps([{"ok": False}]))
    assert failed_only["benchmark"] is None
