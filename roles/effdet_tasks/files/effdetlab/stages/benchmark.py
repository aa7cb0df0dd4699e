"""benchmark / crosscheck / commands.

benchmark: every configuration (model, batch, threads, mode) of benchmark.pairs x modes x
threads, measured benchmark.repeats times in interleaved order (repeat 1 runs the
configurations in order, repeat 2 in reverse, ...: a drift over the run hits all alike).
  bm           model_inspect --runmode=bm --threads=T --bm_runs=N (network only, random
               weights; automl's 5 warm-up runs, then N timed runs)
  e2e          model_inspect --runmode=saved_model_benchmark on a saved_model exported FOR
               this batch size (automl's export loops over a fixed batch: a model exported
               for batch 1 fed 8 images processes 1), fed exactly `batch` images (the given
               ones repeated in order when fewer; benchmark.fill=false refuses instead);
               automl's 1 warm-up + 10 timed runs; threads through TF_NUM_INTRAOP_THREADS
  tflite       the .tflite of that export in TFLite's interpreter (effdetlab.stages.tflitebench:
               the profile's TensorFlow, its default delegate, num_threads=T), the same
               images, 5 warm-up runs and bm_runs timed runs like bm
  tflite-int8, tflite-drq
               the same for the quantized file the export stage writes (config quantize)
Latency: automl's own timer ("Per batch inference time") for bm and e2e, the mean of the
timed invoke() calls for the TFLite modes; fps = images fed per run / latency.
Exports for other batch sizes land in run_dir/exports/<model>-b<N>/ and are reused while
the checkpoint, image size and threshold are the same; `benchmark-prepare` makes them
without measuring anything (the role runs it on every host before any host measures).

Files in run_dir: benchmark.json (the list of records, rewritten after each measurement),
benchmark.progress.jsonl (one line per measurement as it ends), benchmark_status.json,
benchmark/logs/<model>-<mode>-b<N>-t<T>-r<R>.log. A record:
  {"host", "model", "mode", "batch", "threads", "repeat", "repeats", "device", "latency_ms",
   "fps", "images_fed", "distinct_images", "tf_version", "timestamp", "ok", "image_size",
   "runs", "warmup_runs", "threads_via", "runtime", "delegate", "quantization",
   "code_source", "dialect", "command", "log"}
   (+ "error" when ok is false, + "unsupported": true when this TensorFlow cannot run it)

A Slurm job array (one array task per point of points(), in that order):
  benchmark-reset    removes run_dir/points/ and benchmark.json, benchmark.progress.jsonl,
                     benchmark_status.json (a symlink is unlinked, never followed): run it
                     before submitting the array, so that the array starts clean
  benchmark-point    array task N (--task N, else SLURM_ARRAY_TASK_ID) measures point N for
                     repeat 1..repeats with the exports of its own (model, batch) only (made
                     under a lock when missing); writes run_dir/points/<N>.json (task, point,
                     host, node, slurm_job, records, ok; rewritten after each repeat, + "error"
                     when something other than a measurement ended it) and
                     points/<N>.progress.jsonl; never benchmark.json or benchmark_status.json.
                     Exit 1 when a measurement failed
  benchmark-collect  merges every points/<N>.json into benchmark.json (ordered by task, then
                     repeat: the records `benchmark` writes), rewrites benchmark.progress.jsonl
                     and writes benchmark_status.json (+ "tasks"); prints {"benchmark":
                     "collected", "tasks", "records", "failed_tasks", "points"}. A failed task:
                     its file unreadable or not JSON, from another plan, ended early, short of
                     repeats, or with a failed measurement. Exit 0 even then: the caller
                     compares the tasks with the points it submitted

crosscheck: each mode of the first (model, batch), per thread count, measured through the
stage and by pasting its printed command into /bin/sh (what a person does by hand),
`repeats` times each, interleaved; run_dir/crosscheck.json gives both medians, their
difference and the stage's own spread (agreement: within 5% or within that spread).
"""

import copy
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages import export as exportmod
from effdetlab.stages.config import Config
from effdetlab.stages.errors import StageInputError
from effdetlab.stages.parsers import last_error, parse_benchmark
from effdetlab.stages.runner import (eprint, pid_alive, proc_start, read_json, run_logged, shell_line,
                                     spawn_stage, tf_version, with_pkg_path, write_json)

Point = Tuple[str, int, int, str]  # model, batch, threads, mode
EXPORTED_MODES = ("e2e", "tflite", "tflite-int8", "tflite-drq")
TFLITE_WARMUP = 5  # as automl's bm
E2E_RUNS, E2E_WARMUP = 10, 1  # fixed in automl's ServingDriver.benchmark


class Artifact:
    """What an exported mode runs for one (model, batch): a path, or why there is none."""

    def __init__(self, path: Optional[str] = None, reason: str = "", unsupported: bool = False,
                 quantization: Optional[str] = None) -> None:
        self.path, self.reason, self.unsupported, self.quantization = path, reason, unsupported, quantization


# ----------------------------------------------------------------------------- the plan

def points(c: Config) -> List[Point]:
    b = c.benchmark
    return [(m, bs, t, mode) for m, bs in b.pairs for mode in b.modes for t in b.threads
            if mode == "bm" or m in b.saved_models]


def schedule(pts: List[Point], repeats: int) -> List[Tuple[int, Point]]:
    """Interleaved: every configuration once per round, odd rounds in reverse order."""
    out = []
    for r in range(1, repeats + 1):
        out += [(r, p) for p in (pts if r % 2 else list(reversed(pts)))]
    return out


def stage_images(files: List[str], folder: str) -> str:
    """A folder of links to exactly these images; returns a glob automl can take."""
    fill_batch(files, folder, len(files))
    return os.path.join(folder, "*")


def fill_batch(files: List[str], folder: str, n: int) -> List[str]:
    """A folder holding exactly n links: the files in order, repeated as needed."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    out = []
    for i in range(n):
        f = files[i % len(files)]
        out.append(os.path.join(folder, f"{i:05d}-{os.path.basename(f)}"))
        os.symlink(os.path.abspath(f), out[-1])
    return out


def _check(c: Config) -> List[str]:
    """Validate the whole matrix before anything runs; returns the input images."""
    b = c.benchmark
    if not any(m in EXPORTED_MODES for m in b.modes):
        return []
    for m, _bs in b.pairs:
        if m in b.saved_models:
            cfgmod.require_saved_model(b.saved_models[m], f"benchmark {m}")
    if not any(m in b.saved_models for m, _ in b.pairs):
        raise StageInputError(f"benchmark modes {', '.join(x for x in b.modes if x in EXPORTED_MODES)} "
                              f"need an exported model: benchmark.saved_models has {sorted(b.saved_models)}, "
                              f"the points are {sorted({m for m, _ in b.pairs})}")
    files = cfgmod.require_images(b.images, "benchmark.images (or infer_images)")
    biggest = max(bs for m, bs in b.pairs if m in b.saved_models)
    if not b.fill and len(files) < biggest:
        raise StageInputError(f"benchmark batch {biggest}: {len(files)} image(s) in {b.images} and "
                              f"benchmark.fill is false: give at least {biggest} images, or set fill "
                              f"to repeat them until each batch is full")
    return files


# ----------------------------------------------------------------------------- exports per batch

def _base_export(c: Config, model: str) -> Dict[str, Any]:
    """export.json of the saved_model the config names (the export stage's run)."""
    sm = c.benchmark.saved_models[model]
    ex = read_json(os.path.join(os.path.dirname(sm.rstrip("/")), "export.json")) or {}
    if (ex.get("saved_model") or {}).get("dir") not in (sm, sm.rstrip("/")):
        return {"batch_size": c.export_batch_size, "saved_model": {"ok": True, "dir": sm},
                "tflite": {"ok": False, "reason": f"no export.json beside {sm}: the TFLite file is unknown"}}
    return ex


def _export_for_batch(c: Config, model: str, batch: int, kinds: List[str],
                      made: Optional[List[str]] = None) -> Dict[str, Any]:
    """export.json of a saved_model (+ .tflite files) exported for this batch size; an export
    made now (not found made before) is named in `made`."""
    base = _base_export(c, model)
    if int(base.get("batch_size") or 1) == batch and all(k in (base.get("quantized") or {}) for k in kinds):
        return base
    d = os.path.join(c.run_dir, "exports", f"{model}-b{batch}")
    ckpt = cfgmod.latest_checkpoint(c.model_dir)
    c2 = copy.copy(c)
    c2.run_dir, c2.saved_model_dir = d, os.path.join(d, "saved_model")
    c2.tflite_path = os.path.join(d, f"{model}.tflite")
    c2.export_batch_size, c2.quantize, c2.accuracy, c2.model_name = batch, kinds, False, model
    hw = dl.image_size_of(c2, c2.hparams, model)
    old = read_json(os.path.join(d, "export.json")) or {}
    if (old.get("ok") and old.get("checkpoint") == ckpt and old.get("batch_size") == batch
            and old.get("image_size") == hw and old.get("min_score_thresh") == c.min_score_thresh
            and all(k in (old.get("quantized") or {}) for k in kinds)):
        return old
    if not ckpt:
        raise StageInputError(f"benchmark {model} batch {batch}: the saved_model was exported for "
                              f"batch {base.get('batch_size')}, and there is no checkpoint in "
                              f"{c.model_dir} to export one for batch {batch}")
    print(json.dumps({"benchmark": "exporting", "model": model, "batch": batch, "dir": d}), flush=True)
    exportmod.run(c2)
    if made is not None:
        made.append(f"{model}-b{batch}")
    return read_json(os.path.join(d, "export.json")) or {"ok": False, "saved_model": {
        "ok": False, "reason": f"the export for batch {batch} wrote no export.json (see {d}/export.log)"}}


def artifacts(c: Config, model: str, batch: int, made: Optional[List[str]] = None) -> Dict[str, Artifact]:
    kinds = sorted({m.split("-", 1)[1] for m in c.benchmark.modes if m.startswith("tflite-")})
    ex = _export_for_batch(c, model, batch, kinds, made)
    sm, tfl = ex.get("saved_model") or {}, ex.get("tflite") or {}
    out = {"e2e": Artifact(sm.get("dir") if sm.get("ok") else None,
                           "" if sm.get("ok") else f"export for batch {batch} failed: {sm.get('reason')}"),
           "tflite": Artifact(tfl.get("path") if tfl.get("ok") else None, str(tfl.get("reason", "")),
                              unsupported=not tfl.get("ok") and sm.get("ok", False))}
    for k in kinds:
        q = (ex.get("quantized") or {}).get(k) or {"ok": False, "reason": "not exported"}
        out["tflite-" + k] = Artifact(q.get("path") if q.get("ok") else None, str(q.get("reason", "")),
                                      unsupported=bool(q.get("unsupported")), quantization=q.get("quantization"))
    return out


def all_artifacts(c: Config, made: Optional[List[str]] = None) -> Dict[Tuple[str, int], Dict[str, Artifact]]:
    """artifacts() of every (model, batch) an exported mode measures."""
    if not any(x in EXPORTED_MODES for x in c.benchmark.modes):
        return {}
    return {(m, bs): artifacts(c, m, bs, made) for m, bs in c.benchmark.pairs if m in c.benchmark.saved_models}


# ----------------------------------------------------------------------------- one measurement

def command_for(c: Config, src: dl.CodeSource, d: dl.Dialect, p: Point, art: Optional[Artifact],
                images: List[str], tag: str) -> Tuple[List[str], Dict[str, str], str, List[str]]:
    """argv, environment additions, how threads are set, flags left out."""
    model, batch, threads, mode = p
    if mode == "bm":
        logdir = os.path.join(c.run_dir, ".inspect-logdir", tag)
        argv, dropped = dl.bm_cmd(c, src, d, model, batch, threads, logdir)
        return argv, dl.child_env(c, src), ("flag" if "threads" not in dropped else "none"), dropped
    assert art is not None and art.path
    if mode == "e2e":
        glob_ = os.path.join(os.path.dirname(images[0]), "*")
        argv, dropped = dl.e2e_cmd(c, src, d, model, batch, art.path, glob_)
        return (argv, dl.child_env(c, src, dl.e2e_thread_env(threads)),
                ("env" if threads > 0 else "none"), dropped)
    argv = [c.python, "-m", "effdetlab.stages.tflitebench", art.path, "--batch", str(batch),
            "--threads", str(threads), "--warmup", str(TFLITE_WARMUP), "--runs",
            str(c.benchmark.bm_runs)] + images
    return argv, with_pkg_path(dl.child_env(c, src)), ("num_threads" if threads > 0 else "none"), []


def _parse(mode: str, output: str) -> Tuple[Optional[float], Dict[str, Any]]:
    """(latency in seconds, extra record fields) from a measurement's output."""
    if mode in ("bm", "e2e"):
        out = parse_benchmark(output)
        return (out.latency_s if out else None), ({"runs": out.runs} if out and out.runs else {})
    for line in output.splitlines():
        if line.startswith("EFFDETLAB_TFLITE "):
            r = json.loads(line.split(" ", 1)[1])
            extra = {k: r[k] for k in ("delegate", "input_dtype", "output_shape") if k in r}
            if not r.get("ok"):
                extra["error"] = r.get("reason")
            return r.get("latency_s"), extra
    return None, {}


def measure(c: Config, src: dl.CodeSource, d: dl.Dialect, p: Point, repeat: int,
            arts: Dict[Tuple[str, int], Dict[str, Artifact]], images: List[str],
            tfv: Optional[str], tag_prefix: str = "", images_dir: Optional[str] = None) -> Dict[str, Any]:
    """One measurement of point p. images_dir: where the batch's image links are made
    (run_dir/benchmark/_images/b<batch> unless given: an array task has a folder of its own)."""
    model, batch, threads, mode = p
    hw = dl.image_size_of(c, dl.bm_hparams(c, model) if mode == "bm" else dl.infer_hparams(c), model)
    rec: Dict[str, Any] = {
        "host": c.benchmark.host, "model": model, "mode": mode, "batch": batch, "threads": threads,
        "repeat": repeat, "repeats": c.benchmark.repeats, "device": c.device, "latency_ms": None,
        "fps": None, "images_fed": batch, "distinct_images": None, "tf_version": tfv,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ok": False, "image_size": hw,
        "runs": {"bm": c.benchmark.bm_runs, "e2e": E2E_RUNS}.get(mode, c.benchmark.bm_runs),
        "warmup_runs": {"bm": 5, "e2e": E2E_WARMUP}.get(mode, TFLITE_WARMUP),
        "runtime": {"bm": "TF session, frozen graph (automl bm)",
                    "e2e": "TF session, saved_model (automl saved_model_benchmark)"}.get(
                        mode, "TFLite interpreter"),
        "delegate": None, "quantization": None, "code_source": src.kind, "dialect": d.name}
    art = None
    tag = f"{tag_prefix}{model}-{mode}-b{batch}-t{threads}-r{repeat}"
    staged: List[str] = []
    if mode != "bm":
        art = arts[(model, batch)][mode]
        rec["quantization"] = art.quantization
        if not art.path:
            rec.update(error=art.reason or "not exported", unsupported=art.unsupported,
                       threads_via=None, command=None, log=None)
            return rec
        staged = fill_batch(images, images_dir or os.path.join(c.run_dir, "benchmark", "_images", f"b{batch}"),
                            batch)
        rec["distinct_images"] = min(len(images), batch)
    argv, env, via, dropped = command_for(c, src, d, p, art, staged, tag)
    log = os.path.join(c.run_dir, "benchmark", "logs", tag + ".log")
    if os.path.exists(log):
        os.remove(log)
    res = run_logged(argv, env, log, cwd=src.cwd, timeout_s=c.timeout_s, header=f"benchmark {tag}")
    lat_s, extra = _parse(mode, res.output)
    rec.update(extra)
    rec.update(threads_via=via, command=shell_line(argv, env, src.cwd), log=log)
    if dropped:
        rec["flags_not_supported"] = dropped
    rec["ok"] = res.returncode == 0 and lat_s is not None and lat_s > 0
    if rec["ok"]:
        rec["latency_ms"] = round(1000.0 * lat_s, 3)
        rec["fps"] = round(batch / lat_s, 3)
    elif "error" not in rec:
        rec["error"] = ("timed out" if res.timed_out else
                        last_error(res.output) if res.returncode else "no latency in the output")
    return rec


def row_line(r: Dict[str, Any]) -> str:
    """One human line per measurement, printed as it ends."""
    head = (f"{r['model'].replace('efficientdet-', '')} {r['mode']} batch {r['batch']} "
            f"threads {r['threads'] or 'default'} repeat {r['repeat']}/{r['repeats']}")
    if r["ok"]:
        return f"{head}: {r['latency_ms']:.1f} ms, {r['fps']:.2f} images/s ({r['images_fed']} per run)"
    return f"{head}: {'not measurable' if r.get('unsupported') else 'FAILED'}: {r.get('error')}"


# ----------------------------------------------------------------------------- the stage

def paths(c: Config) -> Dict[str, str]:
    return {k: os.path.join(c.run_dir, v) for k, v in {
        "records": "benchmark.json", "progress": "benchmark.progress.jsonl",
        "status": "benchmark_status.json", "supervisor_log": "benchmark.supervisor.log"}.items()}


def prepare(c: Config) -> int:
    """Export what the exported modes need for every (model, batch) of the config, and
    nothing else: run before the measurements of every host start (the role runs it on all
    hosts first), so that no host measures while another one exports."""
    _check(c)
    made: List[str] = []
    out = {f"{m}-b{bs}": {k: (a.path or f"none: {a.reason}") for k, a in arts.items()}
           for (m, bs), arts in all_artifacts(c, made).items()}
    print(json.dumps({"benchmark": "prepared", "exported": made, "artifacts": out}), flush=True)
    return 0


def run(c: Config) -> int:
    images = _check(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    p = paths(c)
    os.makedirs(c.run_dir, exist_ok=True)
    pts = points(c)
    plan = schedule(pts, c.benchmark.repeats)
    status: Dict[str, Any] = {"state": "running", "pid": os.getpid(), "pid_start": proc_start(os.getpid()),
                              "started": time.time(), "done": 0, "total": len(plan), "failed": 0}
    write_json(p["status"], status)
    open(p["progress"], "w").close()
    records: List[Dict[str, Any]] = []
    try:
        tfv = tf_version(c.python)
        arts = all_artifacts(c)
        for repeat, pt in plan:
            rec = measure(c, src, d, pt, repeat, arts, images, tfv)
            records.append(rec)
            write_json(p["records"], records)  # partial results survive an interrupted matrix
            _report(p["progress"], rec, len(records), len(plan))
            status.update(done=len(records), failed=sum(1 for r in records if _failed(r)))
            write_json(p["status"], status)
    except BaseException as e:
        status.update(state="failed", reason=f"{type(e).__name__}: {e}", ended=time.time())
        write_json(p["status"], status)
        raise
    bad = [r for r in records if _failed(r)]
    for r in bad:
        eprint(f"effdetlab.stages benchmark: {row_line(r)} (see {r['log']})")
    status.update(state="finished" if not bad else "failed", ended=time.time(),
                  reason=_failed_reason(bad) if bad else None)
    write_json(p["status"], status)
    return 1 if bad else 0


def _failed(r: Dict[str, Any]) -> bool:
    """A measurement that failed (not one this TensorFlow cannot run)."""
    return not r["ok"] and not r.get("unsupported")


def _failed_reason(bad: List[Dict[str, Any]]) -> str:
    return f"{len(bad)} measurement(s) failed: {row_line(bad[0])}"


def _progress_line(rec: Dict[str, Any], n: int, total: int) -> str:
    """A line of benchmark.progress.jsonl: measurement n of total."""
    return json.dumps({"line": row_line(rec), "ok": rec["ok"], "n": n, "total": total})


def _report(progress: str, rec: Dict[str, Any], n: int, total: int) -> None:
    """A measurement has ended: its progress line into the file, its JSON line to stdout."""
    with open(progress, "a", encoding="utf-8") as f:
        f.write(_progress_line(rec, n, total) + "\n")
    print(json.dumps({k: rec[k] for k in ("model", "mode", "batch", "threads", "repeat",
                                          "latency_ms", "fps", "ok")}), flush=True)


def detach(c: Config) -> int:
    """Validate, then run the benchmark in a new session and return at once."""
    if not c.config_path:
        raise StageInputError("--detach needs a config file")
    _check(c)
    p = paths(c)
    st = current_status(c)
    if st.get("state") == "running":
        raise StageInputError(f"a benchmark is already running in {c.run_dir} (pid {st.get('pid')})")
    os.makedirs(c.run_dir, exist_ok=True)
    write_json(p["status"], {"state": "starting", "pid": None, "started": time.time(), "done": 0})
    open(p["progress"], "w").close()
    proc = spawn_stage("benchmark", c.config_path, p["supervisor_log"], c.run_dir, append=False)
    print(json.dumps({"stage": "benchmark", "state": "starting", "pid": proc.pid,
                      "status_file": p["status"]}), flush=True)
    return 0


def current_status(c: Config) -> Dict[str, Any]:
    p = paths(c)
    st = read_json(p["status"]) or {"state": "never_started"}
    if st.get("state") == "starting" and time.time() - float(st.get("started") or 0) > 60:
        st = dict(st, state="failed", reason=f"the detached benchmark never started; see {p['supervisor_log']}")
    elif st.get("state") == "running" and not pid_alive(st.get("pid"), st.get("pid_start")):
        st = dict(st, state="failed", reason=f"benchmark process {st.get('pid')} is gone without "
                                             f"recording its end; see {p['supervisor_log']}")
    return st


def status_cmd(c: Config) -> int:
    print(json.dumps(current_status(c)), flush=True)
    return 0


# ----------------------------------------------------------------------------- a Slurm job array: a task per point

POINT_FILE = re.compile(r"^(0|[1-9][0-9]*)\.json$")  # points/<N>.json; not <N>.progress.jsonl, tmp files
ROW_KEYS = ("model", "mode", "batch", "threads", "repeat", "repeats", "ok")  # what row_line() reads


def points_dir(c: Config) -> str:
    return os.path.join(c.run_dir, "points")


def task_id(given: Optional[str], pts: List[Point]) -> int:
    """The array task's index into points(): --task, else SLURM_ARRAY_TASK_ID."""
    where = "--task" if given is not None else "SLURM_ARRAY_TASK_ID"
    raw = given if given is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    valid = (f"the valid task ids are 0..{len(pts) - 1} ({len(pts)} point(s) in this config)" if pts
             else "this config has no point to measure")
    if raw is None:
        raise StageInputError(f"no task id: give --task N or run it as a Slurm array task "
                              f"(SLURM_ARRAY_TASK_ID); {valid}")
    try:
        n = int(raw)
    except ValueError:
        raise StageInputError(f"{where}={raw!r} is not an integer; {valid}") from None
    if not 0 <= n < len(pts):
        raise StageInputError(f"{where}={raw!r} is out of range: {valid}")
    return n


def _artifacts_locked(c: Config, model: str, batch: int) -> Dict[str, Artifact]:
    """artifacts() of one (model, batch) under an exclusive lock: of the array tasks that need
    the same export at once, one makes it, the others wait and reuse it."""
    import fcntl
    lock = os.path.join(c.run_dir, "exports", f"{model}-b{batch}.lock")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with open(lock, "a", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
        return artifacts(c, model, batch)


def _point_result(c: Config, n: int, pt: Point, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"task": n, "point": list(pt), "host": c.benchmark.host, "node": socket.gethostname(),
            "slurm_job": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
            "records": records, "ok": not any(_failed(r) for r in records)}


def point(c: Config, task: Optional[str] = None) -> int:
    """Array task N: point N of points(), measured `repeats` times, into points/<N>.json."""
    pts = points(c)
    n = task_id(task, pts)
    pt, repeats = pts[n], c.benchmark.repeats
    out = os.path.join(points_dir(c), f"{n}.json")
    progress = os.path.join(points_dir(c), f"{n}.progress.jsonl")
    os.makedirs(points_dir(c), exist_ok=True)
    if os.path.lexists(out):
        os.remove(out)  # an earlier try of this task: never taken for this one's result
    open(progress, "w").close()
    records: List[Dict[str, Any]] = []
    try:
        images = _check(c)
        src = dl.locate(c)
        d = dl.resolve(c, src)
        tfv = tf_version(c.python)
        model, batch, _threads, mode = pt
        arts = {(model, batch): _artifacts_locked(c, model, batch)} if mode in EXPORTED_MODES else {}
        staged = os.path.join(c.run_dir, "benchmark", "_images", f"task{n}")
        for repeat in range(1, repeats + 1):
            records.append(measure(c, src, d, pt, repeat, arts, images, tfv, images_dir=staged))
            write_json(out, _point_result(c, n, pt, records))  # partial results survive
            _report(progress, records[-1], len(records), repeats)
    except BaseException as e:
        write_json(out, dict(_point_result(c, n, pt, records), ok=False, error=f"{type(e).__name__}: {e}"))
        raise
    bad = [r for r in records if _failed(r)]
    for r in bad:
        eprint(f"effdetlab.stages benchmark-point: {row_line(r)} (see {r['log']})")
    return 1 if bad else 0


def _read_point(path: str) -> Tuple[Any, Optional[str]]:
    """(the file's JSON, None) or (None, why it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except OSError as e:
        return None, f"unreadable ({e})"
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return None, f"not valid JSON ({e})"


def _point_records(doc: Any, n: int, pts: List[Point], repeats: int) -> Tuple[Optional[List[Dict[str, Any]]], List[str]]:
    """(task n's records in repeat order, or None where none can be trusted; why it failed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        return None, ["not a point result (no records list)"]
    if n >= len(pts) or doc.get("task") != n or doc.get("point") != list(pts[n]):
        want = list(pts[n]) if n < len(pts) else f"none (0..{len(pts) - 1})"
        return None, [f"holds task {doc.get('task')!r} point {doc.get('point')!r}; "
                      f"this config's task {n} is {want}"]
    if not all(isinstance(r, dict) and all(k in r for k in ROW_KEYS) and isinstance(r["repeat"], int)
               for r in doc["records"]):
        return None, ["a malformed record"]
    recs = sorted(doc["records"], key=lambda r: r["repeat"])
    why = [f"ended early: {doc['error']}"] if doc.get("error") else []
    if len(recs) < repeats:
        why.append(f"{len(recs)} of {repeats} repeat(s)")
    bad = sum(1 for r in recs if _failed(r))
    if bad:
        why.append(f"{bad} measurement(s) failed")
    return recs, why


def _collect_tasks(c: Config) -> Tuple[List[int], List[Dict[str, Any]], Dict[int, List[str]]]:
    """(task ids found, their records by task then repeat, why each failed task failed)."""
    folder, pts = points_dir(c), points(c)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    tasks = sorted(int(m.group(1)) for m in (POINT_FILE.match(x) for x in names) if m)
    records: List[Dict[str, Any]] = []
    failed: Dict[int, List[str]] = {}
    for n in tasks:
        doc, unreadable = _read_point(os.path.join(folder, f"{n}.json"))
        recs, why = (None, [unreadable]) if unreadable else _point_records(doc, n, pts, c.benchmark.repeats)
        records += recs or []
        if why:
            failed[n] = why
    return tasks, records, failed


def collect(c: Config) -> int:
    """Merge the array tasks' points/<N>.json into benchmark.json, benchmark.progress.jsonl
    and benchmark_status.json, as `benchmark` would have written them."""
    p = paths(c)
    tasks, records, failed = _collect_tasks(c)
    bad = [r for r in records if _failed(r)]
    other = {n: [w for w in why if not w.endswith("measurement(s) failed")] for n, why in failed.items()}
    reasons = ([_failed_reason(bad)] if bad else []) + [
        f"task {n}: {', '.join(why)}" for n, why in sorted(other.items()) if why]
    # A host where no task ran has nothing wrong of its own: the play checks that
    # the hosts' tasks together cover the sweep (benchmark_slurm.yml).
    os.makedirs(c.run_dir, exist_ok=True)
    write_json(p["records"], records)
    tmp = f"{p['progress']}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(_progress_line(r, i, len(records)) + "\n" for i, r in enumerate(records, 1))
    os.replace(tmp, p["progress"])
    write_json(p["status"], {"state": "failed" if reasons else "finished", "done": len(records),
                             "total": len(records), "failed": len(bad), "tasks": tasks, "ended": time.time(),
                             "reason": "; ".join(reasons) if reasons else
                             (None if tasks else "no array task ran on this host")})
    print(json.dumps({"benchmark": "collected", "tasks": tasks, "records": len(records),
                      "failed_tasks": sorted(failed), "points": len(points(c))}), flush=True)
    return 0


def _remove(path: str) -> bool:
    """Remove a file, a folder or a symlink; a symlink is unlinked, what it names is left."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)  # unlinks the symlinks inside, never descends into them
    else:
        return False
    return True


def reset(c: Config) -> int:
    """Clear the last array's results (points/, benchmark.json, its progress and status)."""
    p = paths(c)
    removed = [x for x in (points_dir(c), p["records"], p["progress"], p["status"]) if _remove(x)]
    print(json.dumps({"benchmark": "reset", "removed": removed}), flush=True)
    return 0


# ----------------------------------------------------------------------------- commands, crosscheck

def commands(c: Config) -> int:
    """Print the exact shell line of every automl command the stages would run."""
    from effdetlab.stages import infer as infermod
    src = dl.locate(c)
    d = dl.resolve(c, src)
    env = dl.child_env(c, src)
    out: Dict[str, Any] = {"code_source": src.kind, "dialect": d.name}
    try:
        argv, notes = dl.train_plan(c, src, d)
        out["train"] = shell_line(argv, env, src.cwd)
        if notes:
            out["train_flags_dropped"] = notes
    except StageInputError as e:
        out["train"] = f"# {e}"
    out["export"] = shell_line(dl.export_cmd(c, src, d, c.model_dir, os.path.join(
        c.run_dir, ".inspect-logdir", "export"))[0], env, src.cwd)
    imgs = [os.path.join(c.run_dir, "benchmark", "_images", "b<N>", "<image>")]
    lines = []
    for pt in points(c):
        model, batch, _t, mode = pt
        art = (Artifact(os.path.join(c.run_dir, "exports", f"{model}-b{batch}",
                                     f"{model}.tflite" if mode.startswith("tflite") else "saved_model"))
               if mode != "bm" else None)
        argv, e, _v, _d = command_for(c, src, d, pt, art, imgs, f"{model}-{mode}-b{batch}")
        lines.append(shell_line(argv, e, src.cwd))
    out["benchmark"] = lines
    out["infer"] = shell_line(infermod.command(c, src, d)[0], env, src.cwd)
    print(json.dumps(out, indent=1), flush=True)
    return 0


def crosscheck(c: Config) -> int:
    """Every mode through the stage vs the same command run by hand in /bin/sh."""
    images = _check(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    tfv = tf_version(c.python)
    model, batch = c.benchmark.pairs[0]
    arts = ({(model, batch): artifacts(c, model, batch)}
            if model in c.benchmark.saved_models else {})
    pairs = []
    for mode in c.benchmark.modes:
        if mode != "bm" and (model, batch) not in arts:
            continue
        for threads in c.benchmark.threads:
            pt = (model, batch, threads, mode)
            stage_ms, hand_ms, line = [], [], None
            for r in range(1, c.benchmark.repeats + 1):
                rec = measure(c, src, d, pt, r, arts, images, tfv, tag_prefix="crosscheck-")
                if not rec["ok"]:
                    break
                stage_ms.append(rec["latency_ms"])
                line = rec["command"]
                hand = subprocess.run(["/bin/sh", "-c", line], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, universal_newlines=True,
                                      timeout=c.timeout_s)
                with open(rec["log"].replace(".log", ".by-hand.log"), "w", encoding="utf-8") as f:
                    f.write(f"$ {line}\n{hand.stdout}")
                lat_s = _parse(mode, hand.stdout)[0]
                if lat_s:
                    hand_ms.append(round(1000.0 * lat_s, 3))
            pairs.append(_agreement(pt, stage_ms, hand_ms, line, rec))
            print(json.dumps({k: pairs[-1][k] for k in ("mode", "threads", "stage_latency_ms",
                                                         "by_hand_latency_ms", "diff_pct", "agree")}),
                  flush=True)
    write_json(os.path.join(c.run_dir, "crosscheck.json"),
               {"host": c.benchmark.host, "tf_version": tfv, "device": c.device,
                "repeats": c.benchmark.repeats, "pairs": pairs})
    return 0 if all(p["stage_latency_ms"] and p["by_hand_latency_ms"] for p in pairs) else 1


def _agreement(pt: Point, stage_ms: List[float], hand_ms: List[float], line: Optional[str],
               last: Dict[str, Any]) -> Dict[str, Any]:
    model, batch, threads, mode = pt
    s = statistics.median(stage_ms) if stage_ms else None
    h = statistics.median(hand_ms) if hand_ms else None
    spread = round(100.0 * (max(stage_ms) - min(stage_ms)) / s, 2) if stage_ms else None
    diff = round(100.0 * (s - h) / h, 2) if s and h else None
    out = {"model": model, "batch": batch, "threads": threads, "mode": mode,
           "image_size": last.get("image_size"), "stage_latency_ms": s, "by_hand_latency_ms": h,
           "stage_runs_ms": stage_ms, "by_hand_runs_ms": hand_ms, "stage_spread_pct": spread,
           "diff_pct": diff, "within_5pct": diff is not None and abs(diff) <= 5.0,
           "agree": diff is not None and abs(diff) <= max(5.0, spread or 0.0),
           "by_hand_command": line}
    if not stage_ms:
        out["error"] = last.get("error")
    return out
