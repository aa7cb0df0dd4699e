"""benchmark / crosscheck / commands.

benchmark: for each model_name x batch_size x threads x mode
  bm   model_inspect --runmode=bm --threads=T --bm_runs=N   (network only, random weights;
       5 warm-up runs, then N timed runs)
  e2e  model_inspect --runmode=saved_model_benchmark on an exported saved_model (decode-free
       preprocessing + network + NMS; 1 warm-up, 10 timed runs; threads through
       TF_NUM_INTRAOP_THREADS because that runmode builds a default Session)
The latency is automl's own timer ("Per batch inference time: S"), parsed from its output;
nothing of ours runs inside the timed loop.  run_dir/benchmark.json is a list of records:
  {"host", "model", "mode", "batch", "threads", "device", "latency_ms", "fps", "tf_version",
   "timestamp", "ok", "image_size", "runs", "threads_via", "code_source", "dialect",
   "command", "log"}                              (+ "error" when ok is false)

crosscheck: the same bm measurement twice per thread count: once through the stage runner,
once by pasting the printed command into /bin/sh (what a person does by hand); writes
run_dir/crosscheck.json with both latencies and their difference.
"""

import json
import os
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages.config import Config
from effdetlab.stages.errors import StageInputError
from effdetlab.stages.parsers import last_error, parse_benchmark
from effdetlab.stages.runner import eprint, run_logged, shell_line, tf_version, write_json


def stage_images(files: List[str], folder: str) -> str:
    """A folder of symlinks to exactly these images; returns a glob automl can take."""
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    for i, f in enumerate(files):
        os.symlink(os.path.abspath(f), os.path.join(folder, f"{i:05d}-{os.path.basename(f)}"))
    return os.path.join(folder, "*")


def _plan(c: Config) -> List[Tuple[str, int, int, str]]:
    b = c.benchmark
    return [(m, bs, t, mode) for m in b.model_names for mode in b.modes
            for bs in b.batch_sizes for t in b.threads]


def _check(c: Config) -> Optional[str]:
    """Validate the whole matrix before running anything; returns the e2e images glob."""
    b = c.benchmark
    if "e2e" not in b.modes:
        return None
    for m in b.model_names:
        sm = b.saved_models.get(m)
        if not sm:
            raise StageInputError(f"benchmark e2e for {m}: no saved_model given "
                                  f"(benchmark.saved_models has {sorted(b.saved_models)})")
        cfgmod.require_saved_model(sm, f"benchmark e2e {m}")
    files = cfgmod.require_images(b.images, "benchmark.images (or infer_images)")
    return stage_images(files, os.path.join(c.run_dir, "benchmark", "_images"))


def command_for(c: Config, src: dl.CodeSource, d: dl.Dialect, model: str, batch: int,
                threads: int, mode: str, images_glob: Optional[str]):
    tag = f"{model}-{mode}-b{batch}-t{threads}"
    if mode == "bm":
        logdir = os.path.join(c.run_dir, ".inspect-logdir", tag)
        argv, dropped = dl.bm_cmd(c, src, d, model, batch, threads, logdir)
        env = dl.child_env(c, src)
        hp = c.benchmark.hparams
        via = "flag" if "threads" not in dropped else "none"
    else:
        assert images_glob
        argv, dropped = dl.e2e_cmd(c, src, d, model, batch, c.benchmark.saved_models[model], images_glob)
        env = dl.child_env(c, src, dl.e2e_thread_env(threads))
        hp = dl.infer_hparams(c)
        via = "env" if threads > 0 else "none"
    return tag, argv, env, dl.image_size_of(c, hp, model), via, dropped


def measure(c: Config, src: dl.CodeSource, d: dl.Dialect, model: str, batch: int, threads: int,
            mode: str, images_glob: Optional[str], tfv: Optional[str]) -> Dict[str, Any]:
    tag, argv, env, hw, via, dropped = command_for(c, src, d, model, batch, threads, mode, images_glob)
    log = os.path.join(c.run_dir, "benchmark", "logs", tag + ".log")
    if os.path.exists(log):
        os.remove(log)
    res = run_logged(argv, env, log, cwd=src.cwd, timeout_s=c.timeout_s, header=f"benchmark {tag}")
    out = parse_benchmark(res.output)
    rec: Dict[str, Any] = {
        "host": c.benchmark.host, "model": model, "mode": mode, "batch": batch, "threads": threads,
        "device": c.device, "latency_ms": round(out.latency_ms, 3) if out else None,
        "fps": round(out.fps, 3) if out else None, "tf_version": tfv,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ok": res.returncode == 0 and out is not None and out.latency_s > 0,
        "image_size": hw, "runs": (out.runs if out and out.runs else (10 if mode == "e2e" else None)),
        "threads_via": via, "code_source": src.kind, "dialect": d.name,
        "command": shell_line(argv, env, src.cwd), "log": log}
    if dropped:
        rec["flags_not_supported"] = dropped
    if not rec["ok"]:
        rec["error"] = ("timed out" if res.timed_out else
                        last_error(res.output) if res.returncode else "no latency in the output")
    return rec


def run(c: Config) -> int:
    images_glob = _check(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    tfv = tf_version(c.python)
    records = []
    path = os.path.join(c.run_dir, "benchmark.json")
    for model, batch, threads, mode in _plan(c):
        rec = measure(c, src, d, model, batch, threads, mode, images_glob, tfv)
        records.append(rec)
        write_json(path, records)  # partial results survive an interrupted matrix
        print(json.dumps({k: rec[k] for k in ("model", "mode", "batch", "threads", "latency_ms",
                                              "fps", "ok")}), flush=True)
    bad = [r for r in records if not r["ok"]]
    for r in bad:
        eprint(f"effdetlab.stages benchmark: {r['model']} {r['mode']} batch {r['batch']} "
               f"threads {r['threads']} failed: {r['error']} (see {r['log']})")
    return 1 if bad else 0


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
    glob_ = os.path.join(c.run_dir, "benchmark", "_images", "*")
    out["benchmark"] = [shell_line(a, e, src.cwd) for _t, a, e, *_ in
                        (command_for(c, src, d, m, b, t, mode, glob_) for m, b, t, mode in _plan(c))]
    out["infer"] = shell_line(infermod.command(c, src, d)[0], env, src.cwd)
    print(json.dumps(out, indent=1), flush=True)
    return 0


def crosscheck(c: Config) -> int:
    """bm through the stage vs the same command run by hand in /bin/sh, per thread count."""
    src = dl.locate(c)
    d = dl.resolve(c, src)
    tfv = tf_version(c.python)
    model, batch = c.benchmark.model_names[0], c.benchmark.batch_sizes[0]
    pairs = []
    for threads in c.benchmark.threads:
        stage = measure(c, src, d, model, batch, threads, "bm", None, tfv)
        tag, argv, env, hw, _via, _dr = command_for(c, src, d, model, batch, threads, "bm", None)
        line = shell_line(argv, env, src.cwd)
        hand = subprocess.run(["/bin/sh", "-c", line], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=c.timeout_s)
        ho = parse_benchmark(hand.stdout + "\n" + hand.stderr)
        with open(os.path.join(c.run_dir, "benchmark", "logs", tag + ".by-hand.log"), "w",
                  encoding="utf-8") as f:
            f.write(f"$ {line}\n{hand.stdout}{hand.stderr}")
        hand_ms = round(ho.latency_ms, 3) if ho else None
        diff = (round(100.0 * (stage["latency_ms"] - hand_ms) / hand_ms, 2)
                if stage["latency_ms"] and hand_ms else None)
        pairs.append({"model": model, "batch": batch, "threads": threads, "image_size": hw,
                      "stage_latency_ms": stage["latency_ms"], "by_hand_latency_ms": hand_ms,
                      "diff_pct": diff, "within_5pct": diff is not None and abs(diff) <= 5.0,
                      "by_hand_command": line})
        print(json.dumps({k: pairs[-1][k] for k in ("threads", "stage_latency_ms",
                                                     "by_hand_latency_ms", "diff_pct")}), flush=True)
    write_json(os.path.join(c.run_dir, "crosscheck.json"),
               {"host": c.benchmark.host, "tf_version": tfv, "device": c.device, "pairs": pairs})
    return 0 if all(p["stage_latency_ms"] and p["by_hand_latency_ms"] for p in pairs) else 1
