"""train / status / stop: automl main.py under a supervisor that logs and parses progress.

Files in run_dir:
  train.log            every attempt's full output, appended, with a header per attempt
  progress.jsonl       one object per logged step: {"step", "loss", "time", "attempt",
                       "box_loss", "cls_loss", "det_loss", "sec", "steps_per_sec"}
                       (step = global_step when the step began; TF's estimator log)
  eval.jsonl           one object per evaluation: {"step", "metrics": {AP, AP50, ...}}
  train_status.json    {"state": starting|running|finished|failed|stopped, "pid", "exit_code",
                       "attempt", "last_step", "last_loss", "checkpoint", ...}
  train.pid            the supervisor's pid (a detached run's session leader)
  train.json           the attempt's summary when it ends
Resume: run train again with the same model_dir; the estimator restores the latest
checkpoint and the global step continues (progress records carry the new attempt).
"""

import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, Optional

from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages.config import Config
from effdetlab.stages.errors import StageInputError
from effdetlab.stages.parsers import TrainLogParser, last_error
from effdetlab.stages.runner import (eprint, pid_alive, proc_start, read_json, run_logged, shell_line,
                                     spawn_stage, write_json)

def paths(c: Config) -> Dict[str, str]:
    r = c.run_dir
    return {k: os.path.join(r, v) for k, v in {
        "log": "train.log", "progress": "progress.jsonl", "eval": "eval.jsonl",
        "status": "train_status.json", "pid": "train.pid", "summary": "train.json",
        "supervisor_log": "train.supervisor.log"}.items()}


def _ckpt_step(path: Optional[str]) -> Optional[int]:
    if not path:
        return None
    tail = path.rsplit("-", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else None


def current_status(c: Config) -> Dict[str, Any]:
    """train_status.json, corrected for a process that died without writing its end."""
    p = paths(c)
    st = read_json(p["status"]) or {"state": "never_started"}
    if st.get("state") == "starting" and st.get("pid") is None:
        if time.time() - float(st.get("started") or 0) > 60:  # the supervisor never came up
            st = dict(st, state="failed", exit_code=None,
                      reason=f"detached train never started; see {p['supervisor_log']}")
    elif st.get("state") in ("starting", "running") and not pid_alive(st.get("pid"), st.get("pid_start")):
        st = dict(st, state="failed", exit_code=None,
                  reason=f"train process {st.get('pid')} is gone without recording an exit status "
                         f"(killed, or the container restarted); run train again to resume")
    ck = cfgmod.latest_checkpoint(c.model_dir)
    st["checkpoint"] = ck
    st["global_step"] = _ckpt_step(ck)
    st["train_steps"] = c.train_steps if c.num_examples_per_epoch else None
    return st


def _check_not_running(c: Config, taking_over: bool) -> None:
    st = current_status(c)
    if st.get("state") == "starting" and st.get("pid") is None:
        if taking_over:
            return  # the --detach launch this process is
        raise StageInputError(f"a detached train is starting in {c.run_dir}; use the status stage")
    if st.get("state") in ("starting", "running") and st.get("pid") != os.getpid():
        raise StageInputError(f"training is already running in {c.run_dir} (pid {st.get('pid')}); "
                              f"use the status or stop stage")


def prepare(c: Config):
    """Validate, find the code and build main.py's command. Prints (stderr) a line for each
    flag dropped because the script lacks it (dialect.FLAGS); returns those lines too."""
    cfgmod.require_train_inputs(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    argv, notes = dl.train_plan(c, src, d)
    env = dl.child_env(c, src)
    for line in notes:
        eprint(f"effdetlab.stages train: {line}")
    return src, d, argv, env, notes


def detach(c: Config) -> int:
    """Start `train` in a new session and return at once (prints the pid)."""
    if not c.config_path:
        raise StageInputError("--detach needs a config file")
    notes = prepare(c)[4]  # validate everything before forking
    _check_not_running(c, taking_over=False)
    p = paths(c)
    os.makedirs(c.run_dir, exist_ok=True)
    prev = read_json(p["status"]) or {}
    # Written before the fork: the supervisor takes over this attempt number when it starts.
    write_json(p["status"], {"state": "starting", "pid": None, "started": time.time(),
                             "attempt": int(prev.get("attempt") or 0) + 1, "detached": True})
    proc = spawn_stage("train", c.config_path, p["supervisor_log"], c.run_dir, append=True)
    with open(p["pid"], "w") as f:
        f.write(f"{proc.pid}\n")
    out = {"stage": "train", "state": "starting", "pid": proc.pid, "detached": True,
           "status_file": p["status"], "log": p["log"]}
    if notes:
        out["flags_dropped"] = notes
    print(json.dumps(out), flush=True)
    return 0


def run(c: Config) -> int:
    src, d, argv, env, notes = prepare(c)
    _check_not_running(c, taking_over=True)
    p = paths(c)
    os.makedirs(c.run_dir, exist_ok=True)
    os.makedirs(c.model_dir, exist_ok=True)
    open(p["progress"], "a", encoding="utf-8").close()  # there from the start, empty until a step is logged
    prev = read_json(p["status"]) or {}
    launched = prev.get("state") == "starting" and prev.get("pid") is None  # by --detach
    attempt = int(prev.get("attempt") or 1) if launched else int(prev.get("attempt") or 0) + 1
    resumed_from = cfgmod.latest_checkpoint(c.model_dir)
    status: Dict[str, Any] = {
        "state": "running", "pid": os.getpid(), "pid_start": proc_start(os.getpid()), "child_pid": None,
        "attempt": attempt,
        "started": time.time(), "detached": launched,
        "resumed_from": resumed_from, "last_step": None, "last_loss": None, "exit_code": None,
        "train_steps": c.train_steps, "model_dir": c.model_dir, "log": p["log"]}
    if notes:
        status["flags_dropped"] = notes
    with open(p["pid"], "w") as f:
        f.write(f"{os.getpid()}\n")
    write_json(p["status"], status)

    parser = TrainLogParser()
    stats = {"steps": 0, "first_step": None, "nonfinite": 0}
    last_write = [0.0]

    def handle(recs, now: float) -> None:
        for r in recs:
            kind = r.pop("kind")
            r["attempt"] = attempt
            if kind == "step":
                with open(p["progress"], "a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
                stats["steps"] += 1
                if stats["first_step"] is None:
                    stats["first_step"] = r["step"]
                status["last_step"], status["last_loss"] = r["step"], r.get("loss")
                if not isinstance(r.get("loss"), (int, float)):
                    stats["nonfinite"] += 1
            elif kind == "eval":
                with open(p["eval"], "a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
                status["last_eval"] = r
            elif kind == "checkpoint":
                status["last_checkpoint_saved"] = r["path"]
            elif kind == "final":  # the estimator's "Loss for final step": automl 9f1cf16's
                status["final_loss"] = r.get("loss")  # TPUEstimator logs no per-step loss
                if status["last_loss"] is None:
                    status["last_loss"] = r.get("loss")
        if now - last_write[0] > 1.0:
            last_write[0] = now
            write_json(p["status"], status)

    def on_line(line: str, now: float) -> None:
        handle(parser.feed(line, now), now)

    def on_start(proc: subprocess.Popen) -> None:
        status["child_pid"] = proc.pid
        write_json(p["status"], status)

    res = run_logged(argv, env, p["log"], cwd=src.cwd, on_line=on_line, timeout_s=c.timeout_s,
                     header=f"train attempt {attempt}", on_start=on_start, preface=notes)
    handle(parser.flush(), time.time())
    ck = cfgmod.latest_checkpoint(c.model_dir)
    rc = res.returncode
    state = "finished" if rc == 0 else ("stopped" if rc in (-signal.SIGTERM, -signal.SIGINT) else "failed")
    status.update(state=state, exit_code=rc, ended=time.time(), checkpoint=ck,
                  global_step=_ckpt_step(ck), duration_s=round(res.duration_s, 1),
                  timed_out=res.timed_out)
    if rc != 0:
        status["reason"] = ("timed out" if res.timed_out else last_error(res.output))
    write_json(p["status"], status)
    summary = {
        "stage": "train", "ok": rc == 0, "state": state, "exit_code": rc, "attempt": attempt,
        "model_name": c.model_name, "mode": c.mode, "model_dir": c.model_dir,
        "resumed_from": resumed_from, "checkpoint": ck, "global_step": _ckpt_step(ck),
        "train_steps": c.train_steps, "steps_logged": stats["steps"],
        "first_step": stats["first_step"], "last_step": status["last_step"],
        "last_loss": status["last_loss"], "nonfinite_losses": stats["nonfinite"],
        "duration_s": round(res.duration_s, 1), "log": p["log"], "progress": p["progress"],
        "code_source": src.kind, "dialect": d.name, "device": c.device,
        "command": shell_line(argv, env, src.cwd), "flags_dropped": notes}
    if rc != 0:
        summary["reason"] = status["reason"]
    write_json(p["summary"], summary)
    print(json.dumps({k: summary[k] for k in ("stage", "ok", "state", "exit_code", "global_step",
                                               "last_loss", "duration_s", "log")}), flush=True)
    if rc != 0:
        eprint(f"effdetlab.stages train: automl main.py exited {rc}: {summary['reason']} (see {p['log']})")
        return 1
    return 0


def status_cmd(c: Config) -> int:
    st = current_status(c)
    r = c.run_dir
    st["outputs"] = {
        "export": (read_json(os.path.join(r, "export.json")) or {}).get("ok"),
        "benchmark_records": len(read_json(os.path.join(r, "benchmark.json")) or []),
        "infer": (read_json(os.path.join(r, "infer.json")) or {}).get("ok"),
    }
    print(json.dumps(st), flush=True)
    return 0


def stop_cmd(c: Config) -> int:
    st = current_status(c)
    pid = st.get("pid")
    if st.get("state") not in ("starting", "running") or not pid_alive(pid):
        print(json.dumps({"stage": "stop", "stopped": False, "state": st.get("state")}), flush=True)
        return 0
    os.kill(pid, signal.SIGTERM)  # the supervisor forwards it to automl's process group
    deadline = time.time() + 60
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.5)
    print(json.dumps({"stage": "stop", "stopped": not pid_alive(pid), "pid": pid}), flush=True)
    return 0
