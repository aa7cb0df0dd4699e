"""task_profile: every task's wall time per host, as JSON lines, for bench/rerun_profile.py.

Enabled by bench/ only (ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins,
ANSIBLE_CALLBACKS_ENABLED=task_profile); writes one line per task and host to
the file named by EFFDET_TASK_PROFILE: play, role, task, action, host, status
(ok, changed, skipped, failed, unreachable) and seconds from the task's start
on that host to its result.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_profile
type: aggregate
short_description: per-task, per-host wall time as JSON lines (bench/ only)
description: Writes one JSON line per task and host to the file named by EFFDET_TASK_PROFILE.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("EFFDET_TASK_PROFILE")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (kept for the run)
        self._play = ""
        self._task_t0 = time.monotonic()
        self._started: dict[tuple[str, str], float] = {}

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play = play.get_name()

    def _task_start(self, task: Any) -> None:
        self._task_t0 = time.monotonic()   # for a result whose runner start was not seen

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task_start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task_start(task)

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._started[(host.get_name(), task._uuid)] = time.monotonic()

    def _record(self, result: Any, status: str) -> None:
        if self._out is None:
            return
        host = result._host.get_name()
        task = result._task
        t0 = self._started.pop((host, task._uuid), self._task_t0)
        role = task._role.get_name() if task._role else ""
        row = {"play": self._play, "role": role, "task": task.get_name(), "action": task.action,
               "host": host, "status": status, "seconds": round(time.monotonic() - t0, 4)}
        self._out.write(json.dumps(row) + "\n")
        self._out.flush()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")
