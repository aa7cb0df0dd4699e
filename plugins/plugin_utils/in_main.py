"""Tasks that never reach the host run in the controller's main process,
without a worker forked for them.

Ansible forks a worker per host and task. That is a fork, a worker's start and
a result through the results queue, also for two kinds of task that never
reach the host:

- a task the host skips: the worker works out the loop items and the `when`
  first, and a false `when`, or a loop with no items, ends it;
- a task whose action runs on the controller only: `assert`, `debug`, `fail`,
  `set_fact`, `validate_argument_spec`, and `include_tasks` and `include_role`
  (the worker returns what to include; the strategy includes it).

On the host layer's no-change re-run these are 60 of the 68 tasks a host runs.

Both run Ansible's own TaskExecutor in the main process, on a copy of the task
and of the host's variables, and send its result through the same results
queue, as the worker would have: the same dict, the same warnings, no_log
handling and loop-item callbacks.

Which tasks:

- controller-only (run_here): those actions, without `delegate_to`, `until`,
  `async`, `timeout` or `throttle` (a retry's delay or a timeout's alarm would
  stop the main process; `throttle` is checked before a worker starts). The
  task runs whole in the main process.
- skip decisions (skip_here): any other task with a `when` or a `loop`,
  without `with_<lookup>`, a lookup() / query() / q() in its `when` or loop
  (a lookup may act on the controller, and it would run twice when the task
  goes on to a worker), `delegate_to` (the executor first works out the
  delegated host's variables), `throttle`, or a meta action (the strategy runs
  those itself). The executor runs with two guards on the way to the host: a
  `when` that holds, or fails to evaluate, and a loop with items stop it
  (`WouldRunOnTheHost`) before anything touches the host, and the task goes to
  a worker as before, which works both out again, so what a worker does and
  reports (an error included) is unchanged. Once a host's `when` holds, the
  task's next hosts go straight to their workers: the hosts of a fleet are
  mostly alike, and working the `when` out here first would only add to what
  their workers do.

Every other task goes to a worker as before. EFFDET_IN_MAIN=off turns both off.

The main process is one process: on a fleet, it would run a controller-only
task for every host one after the other while the controller's other CPUs
wait. So the strategy keeps a task's controller-only runs until it waits for
the task's results, and then shares them out (batches()): the main process
runs one share, and a BatchWorker, forked once for a share, runs each of the
others; it sends each host's result through the results queue as a worker
would. A task's share is small (a few hosts) and a fork costs about as much as
one run, so below MIN_SPLIT hosts the main process runs them all.
"""
from __future__ import annotations

import re
from typing import Any

from ansible import constants as C
from ansible import context
from ansible._internal import _task
from ansible.executor.process.worker import WorkerProcess
from ansible.executor.task_executor import TaskExecutor
from ansible.executor.task_result import _RawTaskResult
from ansible.plugins import loader as plugin_loader
from ansible.utils.fqcn import add_internal_fqcns

SWITCH = "EFFDET_IN_MAIN"    # on (default) or off; the strategy shim checks it
# Controller-only runs of one task: from this many on, they are shared out among processes, at least
# MIN_SHARE a process.
MIN_SPLIT = 4
MIN_SHARE = 2
LOOKUP_CALL = re.compile(r"\b(lookup|query|q)\s*\(")
CONTROLLER_ONLY = frozenset(add_internal_fqcns(("assert", "debug", "fail", "set_fact", "validate_argument_spec",
                                                "include_tasks", "include_role")))


class WouldRunOnTheHost(BaseException):
    """The task reaches the host: it goes to a worker. A BaseException, so that the executor's own
    `except Exception` does not turn it into a failed result."""


def calls_a_lookup(value: Any) -> bool:
    if isinstance(value, str):
        return bool(LOOKUP_CALL.search(value))
    if isinstance(value, (list, tuple)):
        return any(calls_a_lookup(item) for item in value)
    if isinstance(value, dict):
        return any(calls_a_lookup(item) for item in value.values())
    return False


def run_here(task: Any) -> bool:
    """Whether the task's action runs on the controller only, and it may run whole in the main process."""
    return task.action in CONTROLLER_ONLY and not task.delegate_to and not task.until and not task.async_val \
        and not task.timeout and not task.throttle


def skip_here(task: Any) -> bool:
    """Whether the main process may work out this task's skip (see the module's doc)."""
    if not (task.when or task.loop) or task.loop_with or task.delegate_to or task.throttle \
            or task.action in C._ACTION_META:
        return False
    return not calls_a_lookup(task.when) and not calls_a_lookup(task.loop)


def executor(host: Any, task: Any, task_vars: dict, play_context: Any, loader: Any, final_q: Any,
             variable_manager: Any) -> TaskExecutor:
    return TaskExecutor(host, task, dict(task_vars), play_context, loader,
                        plugin_loader.get_plugin_loader_namespace(), final_q, variable_manager)


def as_sent(host: Any, mine: Any, result: dict) -> _RawTaskResult:
    """The result as a worker sends it: with the fields of its own copy of the task."""
    return _RawTaskResult(host=host, task=mine, return_data=result, task_fields=mine.dump_attrs())


def run_result(host: Any, task: Any, *args: Any) -> _RawTaskResult:
    """The task run whole in the main process (run_here), and the result a worker would have sent."""
    mine = task.copy(exclude_tasks=True)
    return as_sent(host, mine, executor(host, mine, *args).run())


def skipped_result(host: Any, task: Any, *args: Any) -> _RawTaskResult | None:
    """The result a worker would send for this host and task where the host skips it; None where the
    task must go to a worker."""
    mine = task.copy(exclude_tasks=True)
    decided = []
    resolve = mine._resolve_conditional

    def stop_unless_false(*when_args: Any, **kwargs: Any) -> bool:
        try:
            held = resolve(*when_args, **kwargs)
        except Exception as ex:
            raise WouldRunOnTheHost() from ex
        if held:
            raise WouldRunOnTheHost()
        decided.append("when")
        return held

    mine._resolve_conditional = stop_unless_false
    guarded = executor(host, mine, *args)
    loop_items = guarded._get_loop_items

    def note_no_items() -> list | None:
        items = loop_items()
        if items is not None and len(items) == 0:
            decided.append("no items")
        return items

    def stop(_items: list) -> list:
        raise WouldRunOnTheHost()

    guarded._get_loop_items = note_no_items
    guarded._run_loop = stop
    try:
        result = guarded.run()
    except WouldRunOnTheHost:
        return None
    if not decided or not result.get("skipped") or result.get("failed"):
        return None
    return as_sent(host, mine, result)


def batches(items: list, cpus: int) -> list[list]:
    """items shared out in order among at most `cpus` processes, at least MIN_SHARE each; the first share is
    the main process's. One share below MIN_SPLIT items or with one CPU."""
    if len(items) < MIN_SPLIT or cpus < 2:
        return [items] if items else []
    count = min(cpus, len(items) // MIN_SHARE)      # at least 2: MIN_SPLIT items, 2 CPUs
    size, extra = divmod(len(items), count)
    shares, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        shares.append(items[start:end])
        start = end
    return shares


class BatchWorker(WorkerProcess):
    """A worker for a share of one task's controller-only runs (run_here), host after host: each result
    goes through the results queue as a worker's does. The first item stands for the worker's own host
    and task (what Ansible's worker fields and its error report name)."""

    def __init__(self, items: list[tuple], final_q: Any, loader: Any, variable_manager: Any,
                 worker_id: int) -> None:
        host, task, task_vars, play_context = items[0]
        super().__init__(final_q=final_q, task_vars=task_vars, host=host, task=task, play_context=play_context,
                         loader=loader, variable_manager=variable_manager,
                         shared_loader_obj=plugin_loader.get_plugin_loader_namespace(), worker_id=worker_id,
                         cliargs=context.CLIARGS)
        self._items = items

    def _run(self) -> None:
        for host, task, task_vars, play_context in self._items:
            with _task.TaskContext(task):
                result = run_result(host, task, task_vars, play_context, self._loader, self._final_q,
                                    self._variable_manager)
            host.vars = {}      # what a worker clears before it sends: this process's copy of the host
            host.groups = []
            self._final_q.send_task_result(result)
