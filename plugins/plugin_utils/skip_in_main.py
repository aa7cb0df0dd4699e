"""A task that a host skips is skipped in the controller's main process, without
forking a worker for it.

Ansible forks a worker per host and task. The worker first works out the
task's loop items and its `when`, before anything touches the host; a false
`when`, or a loop with no items, ends it with a "skipped" result. That is a
fork, a worker's start and a result through the results queue for a decision
the main process can make itself. On the host layer's no-change re-run a third
of the tasks end that way.

How: Ansible's own TaskExecutor runs in the main process on a copy of the task
and of the host's variables, with two guards on the way to the host:

- the `when` (the copy's conditional): where it is false, the executor goes on
  as it would in a worker; where it holds, or fails to evaluate, it stops;
- the loop: where the items are there, it stops before the first item.

Where it stops (`WouldRunOnTheHost`) the task goes to a worker as before,
which works both out again, so what a worker does and reports (an error
included) is unchanged. Where it does not, the result is the worker's own: the
same dict, warnings and no_log handling, through the same results queue.

Only tasks with a `when` or a `loop`, and none of these: `with_<lookup>` or a
lookup() / query() / q() in the `when` or the loop (a lookup may act on the
controller, and it would run twice for a task that goes to a worker),
`delegate_to` (the executor works out the delegated host's variables first),
`throttle` (Ansible's _queue_task checks it before a worker starts) or a meta
task (the strategy runs those itself). Every other task goes to a worker
as before.

EFFDET_SKIP_IN_MAIN=off turns it off.
"""
from __future__ import annotations

import os
import re
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.executor.task_executor import TaskExecutor
from ansible.executor.task_result import _RawTaskResult
from ansible.plugins import loader as plugin_loader

SWITCH = "EFFDET_SKIP_IN_MAIN"
CHOICES = ("on", "off")
LOOKUP_CALL = re.compile(r"\b(lookup|query|q)\s*\(")


class WouldRunOnTheHost(BaseException):
    """The task reaches the host: it goes to a worker. A BaseException, so that the executor's own
    `except Exception` does not turn it into a failed result."""


def switch() -> bool:
    """Whether EFFDET_SKIP_IN_MAIN is on (the default); a value off its list is refused."""
    value = os.environ.get(SWITCH, "on")
    if value not in CHOICES:
        raise AnsibleError(f"{SWITCH} = {value!r} breaks the rule: one of {', '.join(CHOICES)}")
    return value == "on"


def calls_a_lookup(value: Any) -> bool:
    if isinstance(value, str):
        return bool(LOOKUP_CALL.search(value))
    if isinstance(value, (list, tuple)):
        return any(calls_a_lookup(item) for item in value)
    if isinstance(value, dict):
        return any(calls_a_lookup(item) for item in value.values())
    return False


def eligible(task: Any) -> bool:
    """Whether the main process may work out this task's skip (see the module's doc)."""
    if not (task.when or task.loop) or task.loop_with or task.delegate_to or task.throttle \
            or task.action in C._ACTION_META:
        return False
    return not calls_a_lookup(task.when) and not calls_a_lookup(task.loop)


def skipped_result(host: Any, task: Any, task_vars: dict, play_context: Any, loader: Any, final_q: Any,
                   variable_manager: Any) -> _RawTaskResult | None:
    """The result a worker would send for this host and task where the host skips it; None where the
    task must go to a worker."""
    mine = task.copy(exclude_tasks=True)
    decided = []
    resolve = mine._resolve_conditional

    def stop_unless_false(*args: Any, **kwargs: Any) -> bool:
        try:
            held = resolve(*args, **kwargs)
        except Exception as ex:
            raise WouldRunOnTheHost() from ex
        if held:
            raise WouldRunOnTheHost()
        decided.append("when")
        return held

    mine._resolve_conditional = stop_unless_false
    executor = TaskExecutor(host, mine, dict(task_vars), play_context, loader,
                            plugin_loader.get_plugin_loader_namespace(), final_q, variable_manager)
    loop_items = executor._get_loop_items

    def note_no_items() -> list | None:
        items = loop_items()
        if items is not None and len(items) == 0:
            decided.append("no items")
        return items

    def stop(_items: list) -> list:
        raise WouldRunOnTheHost()

    executor._get_loop_items = note_no_items
    executor._run_loop = stop
    try:
        result = executor.run()
    except WouldRunOnTheHost:
        return None
    if not decided or not result.get("skipped") or result.get("failed"):
        return None
    return _RawTaskResult(host=host, task=mine, return_data=result, task_fields=mine.dump_attrs())
