"""effdet_follow: follow a detached training or benchmark run until it ends.

Runs on the controller. Every `poll_seconds` it asks the stage runner in the
lab container for the run's status (community.docker.docker_container_exec on
the host), copies the progress file back to the controller, and prints as it
goes, so a long run shows itself live:
  kind: train      one line per host with the step and loss when they change
  kind: benchmark  every measurement's own line ("line" in each progress record)
                   as it ends
Returns the final status; fails when the run failed or timed out. `run` is
the status step (what follows `python -m`), run as effdet_stage runs a step:
in effdet_tasks_container, as effdet_tasks_user, with effdet_tasks_exec_env.

progress.jsonl lives in the lab user's folder: it is read through the
effdet_safe_fs module (relative to `base`, the trusted host folder, never
through a link). A link there is not followed: the follower says so once and
goes on following the training's status without the loss.

With `slurm_job` (effdet_tasks_executor: slurm; the id effdet_stage returned
when it submitted the stage), the job's own state decides: while it is queued
the follower says so, with Slurm's reason; while it runs, the runner's status
is followed as above; once Slurm ends it, the runner's last status is read,
and a run that did not finish fails with Slurm's state and reason and the last
lines of the job's log (`slurm_output`: its stdout and stderr files).
"""
from __future__ import annotations

import base64
import json
import os
import runpy
import time
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

try:
    from ansible_collections.effdet_lab.lab.plugins.module_utils import slurm_job
except ImportError:  # the plain repository (roles_path=roles): the same file, by path
    slurm_job = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                            "../../../plugins/module_utils/by_path.py"))["load"]("slurm_job")

ENDED = ("finished", "failed", "stopped", "never_started")
# Consecutive polls whose status could not be read (the container restarting,
# a dropped connection) before following gives up.
STATUS_TRIES = 6


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("kind", "run", "base", "base_alias", "progress_src", "progress_dest", "poll_seconds",
                             "timeout_minutes", "slurm_job", "slurm_output"))
    LOG_TAIL = 8
    _warned = False

    def _status(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        # As effdet_stage runs a step: in the lab container, as the lab user,
        # with the environment and the interpreter every stage shares.
        shared = self._templar.resolve_variable_expression
        res = self._execute_module(
            module_name="community.docker.docker_container_exec",
            module_args={"container": shared("effdet_tasks_container"), "user": shared("effdet_tasks_user"),
                         "env": shared("effdet_tasks_exec_env") or {},
                         "argv": [str(shared("effdet_tasks_python")), "-m", *map(str, args["run"])]},
            task_vars=task_vars)
        if res.get("failed") or res.get("rc", 1) != 0:
            raise RuntimeError(f"status failed: {res.get('msg') or res.get('stderr')}")
        return json.loads(res["stdout"].strip().splitlines()[-1])

    def _copy_progress(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any] | None:
        res = self._execute_module(
            module_name="effdet_safe_fs",
            module_args={"op": "read", "base": args["base"], "base_alias": args.get("base_alias"),
                         "path": args["progress_src"], "missing_ok": True, "unsafe": "skip"},
            task_vars=task_vars)
        if res.get("failed") or res.get("skipped"):
            if not self._warned:
                self._warned = True
                display.warning(f"effdet_follow: progress not copied: {res.get('msg')}")
            return None
        if not res.get("exists"):
            return None
        text = base64.b64decode(res["content"]).decode("utf-8", errors="replace")
        dest = args["progress_dest"]
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w", encoding="utf-8") as out:
            out.write(text)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        self._records = lines
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None

    def _command(self, argv: list[str], task_vars: dict[str, Any]) -> dict[str, Any]:
        return self._execute_module(module_name="ansible.legacy.command", module_args={"argv": argv},
                                    task_vars=task_vars)

    def _job_queue_state(self, job: str, task_vars: dict[str, Any]) -> tuple[str, str]:
        """(state, reason) of a queued or running job; ('', '') once Slurm has ended it."""
        res = self._command(slurm_job.squeue_argv(job), task_vars)
        if res.get("rc", 1) != 0:  # squeue refuses a job id it no longer knows
            return "", ""
        entries = slurm_job.parse_squeue(res.get("stdout", ""))
        if not entries or entries[0].state in slurm_job.ENDED_STATES:
            return "", ""
        return entries[0].state, entries[0].reason

    def _job_failure(self, job: str, args: dict[str, Any], task_vars: dict[str, Any]) -> str:
        """Slurm's word on an ended job and the last lines of its log."""
        records = slurm_job.parse_records(self._command(
            slurm_job.scontrol_argv(job), task_vars).get("stdout", ""))
        said = slurm_job.outcome(records[0]) if records else f"Slurm job {job} (no longer known to scontrol)"
        tails = []
        for key in ("err", "out"):
            path = (args.get("slurm_output") or {}).get(key)
            if not path:
                continue
            text = self._command(["tail", "-n", str(self.LOG_TAIL), path], task_vars).get("stdout", "")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                tails.append(f"{path}: " + " / ".join(lines))
        return said + (". Last lines: " + "; ".join(tails) if tails else "")

    def _print_new_rows(self, host: str) -> None:
        """kind benchmark: each progress record's line, once, in order."""
        for raw in self._records[self._shown:]:
            try:
                display.display(f"  [effdet] {host}: {json.loads(raw).get('line')}")
            except ValueError:
                continue
        self._shown = len(self._records)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = self._task.args
        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        kind = args.get("kind", "train")
        what = "the benchmark" if kind == "benchmark" else "training"
        self._records: list[str] = []
        self._shown = 0
        if self._task.check_mode:
            return {**result, "skipped": True, "msg": f"check mode: {what} is not followed"}
        poll = max(1, int(args.get("poll_seconds", 15)))
        deadline = time.monotonic() + 60 * float(args.get("timeout_minutes", 720))
        last_line = ""
        misses = 0
        job = str(args["slurm_job"]) if args.get("slurm_job") else ""
        job_ended = not job
        last = None
        try:
            while True:
                if job and not job_ended:
                    state, reason = self._job_queue_state(job, task_vars)
                    if state in slurm_job.QUEUED_STATES:
                        line = f"{host}: Slurm job {job} {state.lower()} ({reason})"
                        if line != last_line:
                            display.display(f"  [effdet] {line}")
                            last_line = line
                        if time.monotonic() > deadline:
                            return {**result, "failed": True, "slurm_job": job,
                                    "msg": f"{what} on {host}: Slurm job {job} still {state.lower()} ({reason}) "
                                           f"after {args.get('timeout_minutes')} min; it stays queued: "
                                           f"run the {kind} stage again to follow it, or scancel {job}"}
                        time.sleep(poll)
                        continue
                    job_ended = not state
                try:
                    status = self._status(args, task_vars)
                except (RuntimeError, ValueError) as exc:
                    misses += 1
                    if misses >= STATUS_TRIES:
                        raise
                    display.display(f"  [effdet] {host}: no status ({str(exc)[:120]}); asking again in {poll} s")
                    time.sleep(poll)
                    continue
                misses = 0
                last = self._copy_progress(args, task_vars)
                if kind == "benchmark":
                    self._print_new_rows(host)
                    line = f"{host}: benchmark {status.get('state')}, {status.get('done', 0)}/{status.get('total', '?')} measured"
                else:
                    line = (f"{host}: {status.get('state')}, step {status.get('global_step', '-')}"
                            f"/{status.get('train_steps', '?')}" + (f", loss {last.get('loss')}" if last else ""))
                    if line != last_line:
                        display.display(f"  [effdet] {line}")
                        last_line = line
                if status.get("state") in ENDED and job_ended:
                    break
                if job_ended and job and status.get("state") not in ENDED:
                    # Slurm ended the job, and the runner never recorded its end (killed hard)
                    status = dict(status, state="failed", reason="its Slurm job ended first")
                    break
                if time.monotonic() > deadline:
                    return {**result, "failed": True, "status": status,
                            "msg": f"{what} still {status.get('state')} after {args.get('timeout_minutes')} min; "
                                   f"it keeps running in the container: run the {kind} stage again to follow it"}
                time.sleep(poll)
        except (RuntimeError, ValueError) as exc:
            return {**result, "failed": True,
                    "msg": f"could not follow {what} on {host} ({STATUS_TRIES} tries): {exc}"}
        finished = status.get("state") == "finished"
        message = line if finished else f"{what} {status.get('state')}: {status.get('reason') or 'see its log'}"
        if job and not finished:
            message = f"{what} on {host} did not finish: {self._job_failure(job, args, task_vars)}. Runner: {message}"
        return {**result, "changed": False, "status": status, "last_progress": last, "slurm_job": job or None,
                "failed": not finished, "msg": message}
