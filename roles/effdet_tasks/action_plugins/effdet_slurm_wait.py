"""effdet_slurm_wait: follow a Slurm job array until every task has ended.

    - effdet_slurm_wait:
        job: "{{ effdet_tasks_bench_array.slurm_job }}"
        labels: ["d0 bm batch 1 threads 1", ...]   # one per task, in task order
        poll_seconds: 5
        timeout_minutes: 720

Runs on the host that submitted the array (any host with Slurm's client).
Every `poll_seconds` it asks squeue for the array's tasks and prints each
change as it happens ("task 2 (d0 bm batch 4 threads 1): RUNNING on node-2").
When squeue lists none, it reads each task's end from scontrol and returns
`tasks`: {task id (a string): {state, node, exit, reason, said}}, where `said` is one
line of Slurm's words (plugins/module_utils/slurm_job.py, outcome). It does
not fail for a task that failed: the caller reads the tasks' results where
they ran and fails naming each. It fails only when following fails or the
array outlives `timeout_minutes` (the array then stays queued).
"""
from __future__ import annotations

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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("job", "labels", "poll_seconds", "timeout_minutes"))

    def _command(self, argv: list[str], task_vars: dict[str, Any]) -> dict[str, Any]:
        return self._execute_module(module_name="ansible.legacy.command", module_args={"argv": argv},
                                    task_vars=task_vars)

    @staticmethod
    def _label(labels: list[str], task: int) -> str:
        return f" ({labels[task]})" if 0 <= task < len(labels) else ""

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        if self._task.check_mode:
            return {**result, "skipped": True, "msg": "check mode: no array is followed"}
        job = str(args.get("job") or "")
        if not job.isdigit():
            return {**result, "failed": True, "msg": f"effdet_slurm_wait: job must be a Slurm job id, not {job!r}"}
        labels = [str(x) for x in args.get("labels") or []]
        poll = max(1, int(args.get("poll_seconds", 5)))
        deadline = time.monotonic() + 60 * float(args.get("timeout_minutes", 720))
        seen: dict[int, tuple[str, str]] = {}
        ended: set[int] = set()
        started = time.monotonic()
        while True:
            res = self._command(slurm_job.squeue_argv(job, array=True), task_vars)
            entries = [e for e in slurm_job.parse_squeue(res.get("stdout", "")) if e.task is not None
                       and e.state not in slurm_job.ENDED_STATES] if res.get("rc", 1) == 0 else []
            now = {e.task for e in entries}
            for task in sorted(set(seen) - now - ended):
                ended.add(task)  # left the queue: it has ended (how, scontrol says below)
                display.display(f"  [effdet] array {job} task {task}{self._label(labels, task)}: ended "
                                f"(was {seen[task][0]} {seen[task][1]}); {len(ended)} of {len(labels) or '?'} ended")
            for e in entries:
                where = f"on {e.node}" if e.state == "RUNNING" else f"({e.reason})"
                if seen.get(e.task) != (e.state, where):
                    seen[e.task] = (e.state, where)
                    display.display(f"  [effdet] array {job} task {e.task}{self._label(labels, e.task)}: "
                                    f"{e.state} {where}")
            if not entries:
                break
            if time.monotonic() > deadline:
                return {**result, "failed": True, "slurm_job": job,
                        "msg": f"Slurm array {job} still has {len(entries)} task(s) queued or running after "
                               f"{args.get('timeout_minutes')} min; they stay queued: run the benchmark stage "
                               f"again to follow them, or scancel {job}"}
            time.sleep(poll)
        records = slurm_job.parse_records(self._command(
            slurm_job.scontrol_argv(job), task_vars).get("stdout", ""))
        tasks: dict[str, dict[str, Any]] = {}
        for record in records:
            task = record.get("ArrayTaskId", "")
            if not task.isdigit():
                continue
            tasks[task] = {"state": record.get("JobState"), "node": record.get("NodeList"),
                                "exit": record.get("ExitCode"), "reason": record.get("Reason"),
                                "said": slurm_job.outcome(record)}
        states = sorted({t["state"] for t in tasks.values()})
        return {**result, "changed": False, "slurm_job": job, "tasks": tasks,
                "seconds": round(time.monotonic() - started, 1),
                "msg": f"Slurm array {job}: {len(tasks)} task(s) ended ({', '.join(states) or 'none known'})"}
