"""The effdet stages' Slurm jobs (plugins/module_utils/slurm_job.py).

The batch script is run here for real, by bash, with a `docker` double first
on PATH that records every call: the job's docker run must carry the lab
container's volumes, PID and network namespaces, the lab user, the stages'
environment and only the GPUs Slurm allocated, hostile values must stay one
argument each, and a cancelled job (SIGTERM to the script, as Slurm sends it)
must stop its container. Slurm's outputs are parsed as Debian's slurm-wlm
22.05.8 prints them (recorded on the lab-in-a-box's simulated hosts).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
sj = load_module(REPO / "plugins" / "module_utils" / "slurm_job.py", "effdet_slurm_job")
bench = load_module(REPO / "roles" / "effdet_tasks" / "filter_plugins" / "effdet_bench.py", "effdet_bench_filter")

# A docker double: records each call as one JSON line; `docker run` sleeps
# until `docker stop` (another call) touches the stop file, or DOCKER_RUN_S ends.
DOCKER = r'''#!/usr/bin/env python3
import json, os, sys, time
log = os.environ["DOCKER_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
cmd = sys.argv[1]
if cmd == "inspect":
    print("sha256:abc" if ".Image" in sys.argv[3] else "1073741824")
elif cmd == "stop":
    open(log + ".stopped", "w").close()
elif cmd == "run":
    end = time.time() + float(os.environ.get("DOCKER_RUN_S", "0"))
    while time.time() < end and not os.path.exists(log + ".stopped"):
        time.sleep(0.05)
    sys.exit(143 if os.path.exists(log + ".stopped") else int(os.environ.get("DOCKER_RUN_RC", "0")))
'''

HOSTILE = "a b'c\"$(touch /tmp/pwned)`x`;"


def spec(**overrides) -> object:
    values = dict(what="the export on labhost-1", container="effdet-lab", user="1001:1001", python="python3",
                  argv=["effdetlab.stages", "export", "--config", "/data/run/export.config.json"],
                  env={"PYTHONPATH": "/data/effdet-lab/code", "CUDA_VISIBLE_DEVICES": "-1"}, docker_gpus=True)
    values.update(overrides)
    return sj.JobSpec(**values)


@pytest.fixture()
def docker_double(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(DOCKER)
    (bindir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DOCKER_LOG": str(tmp_path / "docker.log"),
            "SLURM_JOB_ID": "41"}


def calls(env: dict[str, str]) -> list[list[str]]:
    return [json.loads(line) for line in Path(env["DOCKER_LOG"]).read_text().splitlines()]


def run_script(script: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_job_runs_the_lab_image_with_slurms_gpus_only(docker_double, tmp_path) -> None:
    env = {**docker_double, "SLURM_JOB_GPUS": "1,3"}
    done = run_script(sj.job_script(spec()), env, tmp_path)
    assert done.returncode == 0, done.stderr
    inspect, shm, run = calls(env)
    assert inspect[:2] == ["inspect", "--format"] and inspect[-1] == "effdet-lab"
    assert run[0] == "run"
    assert run[run.index("--name") + 1] == "effdet-job-41"
    assert run[run.index("--volumes-from") + 1] == "effdet-lab"
    assert run[run.index("--pid") + 1] == "container:effdet-lab"
    assert run[run.index("--network") + 1] == "container:effdet-lab"
    assert run[run.index("--shm-size") + 1] == "1073741824"
    assert run[run.index("--user") + 1] == "1001:1001"
    assert run[run.index("--gpus") + 1] == "device=1,3"
    assert "PYTHONPATH=/data/effdet-lab/code" in run and "CUDA_VISIBLE_DEVICES=-1" in run
    assert run[run.index("--entrypoint") + 1] == "python3"
    image = run.index("sha256:abc")
    assert run[image + 1:] == ["-m", "effdetlab.stages", "export", "--config", "/data/run/export.config.json"]


def test_no_gpus_flag_without_an_allocation_or_when_switched_off(docker_double, tmp_path) -> None:
    assert run_script(sj.job_script(spec()), docker_double, tmp_path).returncode == 0
    assert "--gpus" not in calls(docker_double)[-1]
    env = {**docker_double, "SLURM_JOB_GPUS": "0"}
    script = sj.job_script(spec(docker_gpus=False))
    assert run_script(script, env, tmp_path).returncode == 0
    assert "--gpus" not in calls(env)[-1]
    assert "effdet_tasks_slurm_docker_gpus is off" in script


def test_hostile_values_stay_one_argument_each(docker_double, tmp_path) -> None:
    script = sj.job_script(spec(argv=["effdetlab.stages", "infer", "--config", HOSTILE],
                                env={"X": HOSTILE}, what="x\n$(id)"))
    done = run_script(script, docker_double, tmp_path)
    assert done.returncode == 0, done.stderr
    run = calls(docker_double)[-1]
    assert run[-1] == HOSTILE and f"X={HOSTILE}" in run
    assert not Path("/tmp/pwned").exists()
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")], check=False).returncode == 0


def test_the_jobs_exit_status_is_the_stages(docker_double, tmp_path) -> None:
    env = {**docker_double, "DOCKER_RUN_RC": "1"}
    assert run_script(sj.job_script(spec()), env, tmp_path).returncode == 1


def test_a_missing_lab_container_fails_the_job_with_a_message(tmp_path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text("#!/bin/sh\necho 'Error: No such object: effdet-lab' >&2\nexit 1\n")
    (bindir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "SLURM_JOB_ID": "7"}
    done = run_script(sj.job_script(spec()), env, tmp_path)
    assert done.returncode == 3
    assert "effdet-lab: error: the lab container effdet-lab is not running on" in done.stderr


def test_a_cancelled_job_stops_its_container(docker_double, tmp_path) -> None:
    env = {**docker_double, "DOCKER_RUN_S": "20"}
    path = tmp_path / "job.sh"
    path.write_text(sj.job_script(spec()))
    proc = subprocess.Popen(["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline and not any(c[0] == "run" for c in (calls(env) if Path(env["DOCKER_LOG"]).exists() else [])):
        time.sleep(0.05)
    started = time.time()
    proc.send_signal(signal.SIGTERM)  # what Slurm sends on scancel, a node going down, a time limit
    rc = proc.wait(timeout=15)
    assert time.time() - started < 10
    assert ["stop", "--time", "20", "effdet-job-41"] in calls(env)
    assert rc != 0


def test_sbatch_command_lines() -> None:
    argv = sj.sbatch_argv("effdet-run-train-1-train", "gpu", "/var/log/effdet-lab/slurm", node="labhost-1", gpus=2)
    assert argv[:2] == ["sbatch", "--parsable"]
    assert argv[argv.index("--nodelist") + 1] == "labhost-1"
    assert argv[argv.index("--gres") + 1] == "gpu:2"
    assert argv[argv.index("--output") + 1] == "/var/log/effdet-lab/slurm/effdet-run-train-1-train-%j.out"
    assert "--no-requeue" in argv and "--wait" not in argv and "--array" not in argv
    array = sj.sbatch_argv("b", "gpu", "/l", gpus=0, array=4, exclusive=True, exclude=["n3", "n4"], wait=False)
    assert array[array.index("--array") + 1] == "0-3" and "--exclusive" in array and "--gres" not in array
    assert array[array.index("--exclude") + 1] == "n3,n4"
    assert array[array.index("--error") + 1] == "/l/b-%A_%a.err"
    assert "--nodelist" not in array
    assert "--wait" in sj.sbatch_argv("x", "gpu", "/l", wait=True, cpus=4)
    assert sj.output_paths("/l/", "x", "12", False) == {"out": "/l/x-12.out", "err": "/l/x-12.err"}


def test_squeue_and_scontrol_command_lines() -> None:
    assert sj.squeue_argv("12") == ["squeue", "--noheader", "--jobs", "12", "--format", "%K|%T|%N|%r"]
    assert sj.squeue_argv("12", array=True)[:3] == ["squeue", "--noheader", "--array"]
    assert sj.scontrol_argv("12") == ["scontrol", "--oneliner", "show", "job", "12"]


def test_job_ids_from_sbatch() -> None:
    assert sj.job_id("12\n") == "12"
    assert sj.job_id("13;lab\n") == "13"
    with pytest.raises(ValueError, match="no job id"):
        sj.job_id("sbatch: error: Batch job submission failed: Requested node configuration is not available\n")


def test_scontrol_records_and_outcome() -> None:
    text = (REPO / "tests" / "fixtures" / "slurm" / "scontrol_show_job_array.txt").read_text()
    records = sj.parse_records(text)
    assert records, text
    by_task = {r.get("ArrayTaskId"): r for r in records}
    failed = [r for r in records if r["JobState"] != "COMPLETED"]
    assert failed, "the recording has a failed task"
    line = sj.outcome(failed[0])
    assert line.startswith(f"Slurm job {failed[0]['ArrayJobId']}_{failed[0]['ArrayTaskId']} {failed[0]['JobState']}")
    assert "exit " + failed[0]["ExitCode"] in line
    assert all(r["JobState"] in sj.ENDED_STATES for r in by_task.values())
    assert all(r["TRES"].count("=") >= 2 for r in records if r.get("TRES")), "values holding '=' stay whole"


def test_squeue_lines() -> None:
    entries = sj.parse_squeue("0|RUNNING|scratch-9|None\n1|PENDING||Resources\n\nN/A|RUNNING|scratch-10|None\n")
    assert entries[0] == sj.QueueEntry(0, "RUNNING", "scratch-9", "None")
    assert entries[1].state in sj.QUEUED_STATES and entries[1].reason == "Resources"
    assert entries[2].task is None


def test_bench_points_follow_the_stage_runners_order() -> None:
    import sys
    sys.path.insert(0, str(REPO / "roles" / "effdet_tasks" / "files"))
    try:
        from effdetlab.stages import benchmark as stage_bench
    finally:
        sys.path.pop(0)

    class B:
        pairs = [["efficientdet-d0", 1], ["efficientdet-d0", 4], ["efficientdet-d1", 1]]
        modes = ["bm", "e2e", "tflite"]
        threads = [1, 2]
        saved_models = {"efficientdet-d0": "/x/saved_model"}

    class C:
        benchmark = B

    labels = bench.effdet_bench_points(B.pairs, B.modes, B.threads, ["efficientdet-d0"])
    points = stage_bench.points(C)
    assert labels == [f"{m} {mode} batch {b} threads {t}" for m, b, t, mode in points]
    assert len(labels) == 2 * 3 * 2 + 2
