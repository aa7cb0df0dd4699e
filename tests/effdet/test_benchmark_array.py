"""The benchmark as a Slurm job array: benchmark-point (one array task per point of points()),
benchmark-collect (the tasks' points/<N>.json into benchmark.json) and benchmark-reset.

One task runs the real automl bm (the vendored PyPI copy, D0 at 128 px, one measurement: about
20 s on 2 cores); the rest runs a stand-in automl checkout (test_stages' 2020-05 flag definitions)
whose model_inspect.py replays the recorded bm output, so that many tasks, the plain benchmark
stage and failures cost a second or two each."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from test_stages import FIX, PY, _real_2020_checkout, base_cfg
from effdetlab.stages import benchmark as bench
from effdetlab.stages import config as cfgmod
from effdetlab.stages.__main__ import main as stages_main

SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")
# what changes from one measurement of the same point to the next
VOLATILE = ("timestamp", "latency_ms", "fps")


def stage(stage_name: str, cfg_path: str, *extra: str, env: dict | None = None,
          timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m effdetlab.stages STAGE --config CFG ...` with no Slurm variables but `env`'s."""
    e = {k: v for k, v in os.environ.items() if k not in SLURM_VARS}
    e.update(PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "effdetlab.stages", stage_name, "--config", cfg_path, *extra],
                          cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


def write_cfg(tmp_path, cfg: dict, name: str = "config.json") -> str:
    path = str(tmp_path / name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def json_lines(text: str) -> list:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


# ----------------------------------------------------------------------------- the stand-in automl

# Appended to the stand-in's model_inspect.py: logs its flags, replays the recorded bm output;
# fails (a traceback, exit 1) for another runmode or for the batch size in $STANDIN_FAIL_BATCH.
REPLAY_BM = (
    "import json, os, sys\n"
    "args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)\n"
    "with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'calls.jsonl'), 'a') as f:\n"
    "    f.write(json.dumps(args) + '\\n')\n"
    "if args.get('runmode') != 'bm' or args.get('batch_size') == os.environ.get('STANDIN_FAIL_BATCH'):\n"
    "    sys.exit('Traceback (most recent call last):\\nValueError: the stand-in fails batch %s'\n"
    "             % args.get('batch_size'))\n"
    f"with open({os.path.join(FIX, 'inspect-bm-d0-128-t1.log')!r}) as f:\n"
    "    sys.stdout.write(f.read())\n")

POINTS = [("efficientdet-d0", b, t, "bm") for b in (1, 2) for t in (1, 2)]


@pytest.fixture
def standin(tmp_path):
    """A config of 4 bm points, 2 repeats each, on the stand-in automl; returns its path."""
    checkout = _real_2020_checkout(tmp_path)
    with open(os.path.join(checkout, "efficientdet", "model_inspect.py"), "a") as f:
        f.write(REPLAY_BM)
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout, python=PY, device="cpu",
                   benchmark={"batch_sizes": [1, 2], "threads": [1, 2], "modes": ["bm"], "repeats": 2,
                              "bm_runs": 2, "host": "array-test"})
    cfg.pop("save_checkpoints_steps")  # 9f1cf16's main.py has no such flag
    path = write_cfg(tmp_path, cfg)
    assert bench.points(cfgmod.load(path)) == POINTS
    return path


def run_dir(cfg_path: str) -> str:
    return cfgmod.load(cfg_path).run_dir


# ----------------------------------------------------------------------------- benchmark-point

@pytest.mark.slow
def test_a_task_measures_its_point_on_real_automl(tmp_path):
    """SLURM_ARRAY_TASK_ID picks the point; the record is the plain benchmark stage's."""
    cfg = {"run_dir": "run", "model_name": "efficientdet-d0", "device": "cpu",
           "hparams": {"image_size": 128, "num_classes": 2, "moving_average_decay": 0},
           "benchmark": {"model_names": ["efficientdet-d0"], "batch_sizes": [1], "threads": [1, 2],
                         "modes": ["bm"], "bm_runs": 2, "repeats": 1, "host": "real-host"},
           "timeout_s": 300}
    path = write_cfg(tmp_path, cfg)
    r = stage("benchmark-point", path, env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "4242"})
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run"
    res = read_json(run / "points" / "1.json")
    assert res["task"] == 1 and res["point"] == ["efficientdet-d0", 1, 2, "bm"] and res["ok"] is True
    assert res["host"] == "real-host" and res["node"] == socket.gethostname() and res["slurm_job"] == "4242"
    [rec] = res["records"]
    assert (rec["model"], rec["mode"], rec["batch"], rec["threads"], rec["repeat"], rec["repeats"]) == (
        "efficientdet-d0", "bm", 1, 2, 1, 1)
    assert rec["ok"] and rec["latency_ms"] > 0 and rec["fps"] == pytest.approx(1000.0 / rec["latency_ms"], rel=1e-3)
    assert rec["image_size"] == [128, 128] and rec["threads_via"] == "flag" and rec["runs"] == 2
    assert "--threads=2" in rec["command"] and "--batch_size=1" in rec["command"]
    with open(rec["log"]) as f:
        assert "Per batch inference time" in f.read()
    # stdout: the plain stage's per-measurement line; the progress file: its line
    assert json_lines(r.stdout) == [{k: rec[k] for k in ("model", "mode", "batch", "threads", "repeat",
                                                         "latency_ms", "fps", "ok")}]
    assert read_jsonl(run / "points" / "1.progress.jsonl") == [
        {"line": bench.row_line(rec), "ok": True, "n": 1, "total": 1}]
    assert bench.row_line(rec).startswith("d0 bm batch 1 threads 2 repeat 1/1: ")
    # the other point was not measured, and the whole-run files are collect's
    assert sorted(os.listdir(run / "points")) == ["1.json", "1.progress.jsonl"]
    for name in ("benchmark.json", "benchmark.progress.jsonl", "benchmark_status.json"):
        assert not (run / name).exists()


def test_task_ids_out_of_range_or_not_integers_are_refused(tmp_path, standin, monkeypatch, capsys):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    valid = "the valid task ids are 0..3 (4 point(s) in this config)"

    def refused(*extra):
        assert stages_main(["benchmark-point", "--config", standin, *extra]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("effdetlab.stages benchmark-point: error: "), lines
        return lines[0]

    assert refused("--task", "4").endswith(f"--task='4' is out of range: {valid}")
    assert refused("--task", "-1").endswith(f"--task='-1' is out of range: {valid}")
    assert refused("--task", "two").endswith(f"--task='two' is not an integer; {valid}")
    assert "no task id: give --task N or run it as a Slurm array task (SLURM_ARRAY_TASK_ID)" in refused()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "17")
    assert refused().endswith(f"SLURM_ARRAY_TASK_ID='17' is out of range: {valid}")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1.5")
    assert refused().endswith(f"SLURM_ARRAY_TASK_ID='1.5' is not an integer; {valid}")
    assert not os.path.exists(os.path.join(run_dir(standin), "points"))  # nothing started
    # --task is the point's alone
    assert stages_main(["benchmark-collect", "--config", standin, "--task", "0"]) == 2
    assert capsys.readouterr().err.strip() == "effdetlab.stages benchmark-collect: error: --task is only for benchmark-point"


def test_a_failed_measurement_exits_1_and_keeps_every_repeat(tmp_path, standin):
    r = stage("benchmark-point", standin, "--task", "2", env={"STANDIN_FAIL_BATCH": "2", "SLURM_JOB_ID": "77"})
    assert r.returncode == 1, r.stdout + r.stderr
    res = read_json(os.path.join(run_dir(standin), "points", "2.json"))
    assert res["point"] == ["efficientdet-d0", 2, 1, "bm"] and res["ok"] is False and res["slurm_job"] == "77"
    assert [(x["repeat"], x["ok"]) for x in res["records"]] == [(1, False), (2, False)]
    assert res["records"][0]["error"] == "ValueError: the stand-in fails batch 2"
    err = [x for x in r.stderr.splitlines() if x.startswith("effdetlab.stages benchmark-point: ")]
    assert err == [f"effdetlab.stages benchmark-point: {bench.row_line(x)} (see {x['log']})" for x in res["records"]]
    assert "FAILED: ValueError: the stand-in fails batch 2" in err[0]
    assert [p["ok"] for p in read_jsonl(os.path.join(run_dir(standin), "points", "2.progress.jsonl"))] == [False, False]


def test_an_exported_mode_makes_the_exports_of_its_own_model_and_batch_only(tmp_path, monkeypatch, capsys):
    """artifacts(c, model, batch) of the task's point, never all_artifacts: a task does not export
    the batch sizes of the other tasks."""
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (32, 24)).save(imgs / "a.jpg")
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"")
    c = cfgmod.from_dict(base_cfg(tmp_path, benchmark={
        "batch_sizes": [1, 4], "threads": [1], "modes": ["bm", "tflite"], "repeats": 2, "images": str(imgs),
        "saved_models": {"efficientdet-d0": str(sm)}}))
    calls = []

    def artifacts(c_, model, batch, made=None):
        calls.append((model, batch))
        return {"e2e": bench.Artifact(str(sm)),
                "tflite": bench.Artifact(None, "this TensorFlow cannot convert it", unsupported=True)}

    def all_artifacts(*_a, **_k):
        raise AssertionError("an array task exported every (model, batch)")

    monkeypatch.setattr(bench, "artifacts", artifacts)
    monkeypatch.setattr(bench, "all_artifacts", all_artifacts)
    task = bench.points(c).index(("efficientdet-d0", 4, 1, "tflite"))
    assert bench.point(c, str(task)) == 0  # not measurable here is not a failure
    assert calls == [("efficientdet-d0", 4)]
    res = read_json(os.path.join(c.run_dir, "points", f"{task}.json"))
    assert res["ok"] is True and [r["repeat"] for r in res["records"]] == [1, 2]
    assert all(r["unsupported"] and r["error"] == "this TensorFlow cannot convert it" for r in res["records"])
    assert [json.loads(x)["ok"] for x in capsys.readouterr().out.splitlines()] == [False, False]


def test_a_task_refused_after_its_id_leaves_a_failed_result(tmp_path, monkeypatch, capsys):
    """Bad input found once the task is known (here: no saved_model for e2e): exit 2 with the
    one-line error, and points/<N>.json says so, for collect to name the task."""
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    missing = str(tmp_path / "no-saved-model")
    path = write_cfg(tmp_path, base_cfg(tmp_path, benchmark={
        "modes": ["e2e"], "repeats": 2, "saved_models": {"efficientdet-d0": missing}}))
    assert stages_main(["benchmark-point", "--config", path, "--task", "0"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("effdetlab.stages benchmark-point: error: ") and f"no saved_model at {missing}" in line
    res = read_json(os.path.join(run_dir(path), "points", "0.json"))
    assert res["ok"] is False and res["records"] == [] and res["error"] == "StageInputError: " + line.split(": error: ", 1)[1]
    assert stages_main(["benchmark-collect", "--config", path]) == 0
    assert json.loads(capsys.readouterr().out)["failed_tasks"] == [0]
    st = read_json(os.path.join(run_dir(path), "benchmark_status.json"))
    assert st["state"] == "failed" and st["reason"] == f"task 0: ended early: {res['error']}, 0 of 2 repeat(s)"


# ----------------------------------------------------------------------------- collect, reset

def test_collect_merges_the_tasks_as_the_plain_benchmark_stage_lists_them(tmp_path, standin):
    """The same config through `benchmark` and through the array (reset, a task per point,
    collect): the same records, but for the times; benchreport takes the collected file."""
    run = run_dir(standin)
    r = stage("benchmark", standin)
    assert r.returncode == 0, r.stdout + r.stderr
    plain = read_json(os.path.join(run, "benchmark.json"))
    assert len(plain) == 8

    r = stage("benchmark-reset", standin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"benchmark": "reset", "removed": [
        os.path.join(run, x) for x in ("benchmark.json", "benchmark.progress.jsonl", "benchmark_status.json")]}
    for n in (3, 0, 2, 1):  # the queue runs them in any order
        r = stage("benchmark-point", standin, env={"SLURM_ARRAY_TASK_ID": str(n), "SLURM_ARRAY_JOB_ID": "99"})
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(os.path.join(run, "benchmark.json"))
    r = stage("benchmark-collect", standin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"benchmark": "collected", "tasks": [0, 1, 2, 3], "records": 8,
                                    "failed_tasks": [], "points": 4}
    recs = read_json(os.path.join(run, "benchmark.json"))
    # by task, then repeat
    assert [(x["batch"], x["threads"], x["repeat"]) for x in recs] == [
        (b, t, rep) for _m, b, t, _mode in POINTS for rep in (1, 2)]

    def key(x):
        return (x["model"], x["mode"], x["batch"], x["threads"], x["repeat"])

    def stable(x):
        return {k: v for k, v in x.items() if k not in VOLATILE}

    assert sorted(map(key, recs)) == sorted(map(key, plain))
    assert sorted((stable(x) for x in recs), key=key) == sorted((stable(x) for x in plain), key=key)
    assert all(x["ok"] and x["host"] == "array-test" and x["dialect"] == "2020-05" for x in recs)

    progress = read_jsonl(os.path.join(run, "benchmark.progress.jsonl"))
    assert progress == [{"line": bench.row_line(x), "ok": True, "n": i, "total": 8} for i, x in enumerate(recs, 1)]
    st = read_json(os.path.join(run, "benchmark_status.json"))
    assert (st["state"], st["done"], st["total"], st["failed"], st["tasks"], st["reason"]) == (
        "finished", 8, 8, 0, [0, 1, 2, 3], None)
    assert isinstance(st["ended"], float)
    r = stage("benchmark-status", standin)
    assert json.loads(r.stdout)["state"] == "finished"

    out = str(tmp_path / "report")
    r = subprocess.run([sys.executable, "-m", "effdetlab.benchreport", run, "--out", out], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = read_json(out + ".json")["rows"]
    assert sorted((x["batch"], x["threads"], x["runs"]) for x in rows) == [(1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2)]
    with open(out + ".md") as f:
        assert "| array-test | efficientdet-d0 | bm | cpu | 2 | 2 |" in f.read()


def test_collect_names_a_corrupt_a_failed_and_a_stale_task(tmp_path, standin):
    run = run_dir(standin)
    for n in (0, 1):
        assert stage("benchmark-point", standin, "--task", str(n)).returncode == 0
    assert stage("benchmark-point", standin, "--task", "2", env={"STANDIN_FAIL_BATCH": "2"}).returncode == 1
    points = os.path.join(run, "points")
    with open(os.path.join(points, "3.json"), "w") as f:
        f.write('{"task": 3, "records": [')  # cut off (write_json is atomic: copied in by hand, a full disk)
    other = read_json(os.path.join(points, "0.json"))
    with open(os.path.join(points, "5.json"), "w") as f:
        json.dump(dict(other, task=5), f)  # an earlier, bigger plan: not this config's
    for name in ("notes.json", "0.json.tmp123", "x.json"):  # not <int>.json: ignored
        with open(os.path.join(points, name), "w") as f:
            f.write("junk")

    r = stage("benchmark-collect", standin)
    assert r.returncode == 0, r.stderr  # the caller decides
    assert json.loads(r.stdout) == {"benchmark": "collected", "tasks": [0, 1, 2, 3, 5], "records": 6,
                                    "failed_tasks": [2, 3, 5], "points": 4}
    recs = read_json(os.path.join(run, "benchmark.json"))
    assert [(x["batch"], x["threads"], x["repeat"], x["ok"]) for x in recs] == [
        (1, 1, 1, True), (1, 1, 2, True), (1, 2, 1, True), (1, 2, 2, True), (2, 1, 1, False), (2, 1, 2, False)]
    st = read_json(os.path.join(run, "benchmark_status.json"))
    assert (st["state"], st["done"], st["total"], st["failed"], st["tasks"]) == ("failed", 6, 6, 2, [0, 1, 2, 3, 5])
    assert st["reason"].startswith(f"2 measurement(s) failed: {bench.row_line(recs[4])}; task 3: not valid JSON (")
    assert "; task 5: holds task 5 point ['efficientdet-d0', 1, 1, 'bm']; this config's task 5 is none (0..3)" \
        in st["reason"]
    assert [p["ok"] for p in read_jsonl(os.path.join(run, "benchmark.progress.jsonl"))] == [True] * 4 + [False] * 2


def test_collect_without_any_task(tmp_path, standin):
    """A host where no task of the array ran: nothing wrong here (the play checks the sweep's coverage)."""
    r = stage("benchmark-collect", standin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"benchmark": "collected", "tasks": [], "records": 0,
                                    "failed_tasks": [], "points": 4}
    st = read_json(os.path.join(run_dir(standin), "benchmark_status.json"))
    assert (st["state"], st["done"], st["failed"], st["tasks"], st["reason"]) == (
        "finished", 0, 0, [], "no array task ran on this host")
    assert read_json(os.path.join(run_dir(standin), "benchmark.json")) == []


def test_a_task_cut_short_is_a_failed_task(tmp_path, standin):
    """A task killed after its first repeat leaves that repeat (kept) and fails the task."""
    assert stage("benchmark-point", standin, "--task", "1").returncode == 0
    path = os.path.join(run_dir(standin), "points", "1.json")
    res = read_json(path)
    with open(path, "w") as f:
        json.dump(dict(res, records=res["records"][:1]), f)
    r = stage("benchmark-collect", standin)
    assert json.loads(r.stdout)["failed_tasks"] == [1] and json.loads(r.stdout)["records"] == 1
    st = read_json(os.path.join(run_dir(standin), "benchmark_status.json"))
    assert st["state"] == "failed" and st["failed"] == 0 and st["reason"] == "task 1: 1 of 2 repeat(s)"


def test_reset_removes_the_points_and_never_follows_a_symlink(tmp_path, standin):
    run = run_dir(standin)
    assert stage("benchmark-point", standin, "--task", "0").returncode == 0
    assert stage("benchmark-collect", standin).returncode == 0
    keep = tmp_path / "keep.txt"
    keep.write_text("not the benchmark's")
    os.symlink(str(keep), os.path.join(run, "points", "link.txt"))  # inside: unlinked, target kept
    r = stage("benchmark-reset", standin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] == [os.path.join(run, x) for x in (
        "points", "benchmark.json", "benchmark.progress.jsonl", "benchmark_status.json")]
    assert not os.path.lexists(os.path.join(run, "points")) and keep.read_text() == "not the benchmark's"
    left = os.listdir(run)
    assert "benchmark" in left and not {"points", "benchmark.json", "benchmark.progress.jsonl",
                                        "benchmark_status.json"} & set(left)

    # points/ itself a symlink: the link goes, the folder it names and its files stay
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "0.json").write_text("{}")
    os.symlink(str(elsewhere), os.path.join(run, "points"))
    r = stage("benchmark-reset", standin)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] == [os.path.join(run, "points")]
    assert not os.path.lexists(os.path.join(run, "points"))
    assert (elsewhere / "0.json").read_text() == "{}"
    # nothing left: nothing removed, still exit 0
    r = stage("benchmark-reset", standin)
    assert r.returncode == 0 and json.loads(r.stdout) == {"benchmark": "reset", "removed": []}
