"""Mitogen's linear strategy, the one ansible.cfg runs every play through, with
Jinja's plugins loaded once per run.

ansible.cfg points strategy_plugins here, so the strategy is found wherever the
venv's site-packages lie; the strategy itself is mitogen's (requirements.txt
pins it). ANSIBLE_STRATEGY=linear goes back to Ansible's own;
bench/rerun_profile.py measures both side by side.

Ansible forks a worker per task and host, and the worker loads the filter and
test plugins its templates need: every filter file on the plugin path the first
time a template calls any filter, then each collection's filter by its name.
That was about a fifth of a no-change run's controller CPU (py-spy, 8 hosts).
Here the controller's main process loads them before it forks: the ones on the
plugin path (Ansible's own and the roles' filter_plugins, again whenever a role
adds its folder, which empties Ansible's cache), and those of the collections
in WARM_COLLECTIONS; a worker then finds them loaded (sys.modules and the
loaders' caches are inherited through fork).

mitogen's own _queue_task looks up the task's module, action and connection
plugins before every fork, so that the worker inherits warm caches: once per
host and task, each lookup building a new mixin class for the action. Here it
does so once per action and connection, again only when a loader's cache has
been emptied since (a role adding its plugin folder does that).

Two more costs of every worker move to the main process, or to once a run:

- Before each module of a collection, mitogen lists every installed collection
  (ansible.collections.list.list_collection_dirs), which imports each one and
  parses its meta/runtime.yml: 94 collections with the "ansible" package, in
  every worker that runs such a module (effdet_lab.lab.host_probe four
  times a host). Here the main process lists them once per run and mitogen's
  planner reuses that list.
- The Python code Jinja compiles the templates and conditionals into is kept
  on disk between workers and runs (plugin_utils/jinja_code_cache.py, which
  says what the key holds and how the folder is guarded;
  EFFDET_JINJA_CODE_CACHE=off turns it off).

Tasks that never reach the host (a host skips them, or their action runs on
the controller only: assert, debug, fail, set_fact, ...) run without a worker
per host: a skip in the main process, a task's controller-only runs shared out
among the main process and a batch worker per other CPU when the strategy
waits for the task's results. plugin_utils/in_main.py says how and which;
EFFDET_IN_MAIN=off turns it off.

What mitogen's connection multiplexer works out for each Python module it
sends to the hosts (the module compressed, the modules it imports, the
module_utils an Ansible module needs) is kept on disk between runs
(plugin_utils/mitogen_module_cache.py, which says what the key holds and what a
hit checks; EFFDET_MITOGEN_MODULE_CACHE=off turns it off).

And the controller's processes are left to the kernel's scheduler where
mitogen's CPU pinning would put them all on one CPU. mitogen pins its
connection multiplexer to CPU 0 and, below 4 CPUs, the top-level process and
every worker (and the ssh clients they start) together on the CPUs left, which
on a 2-CPU controller is CPU 1 alone: the main process, which forks a worker
per task and host one after the other, then waits behind the workers it just
forked, and the controller uses about 1.2 of its 2 CPUs (by hand, 8 hosts, the
host layer's no-change re-run: 34.6 s pinned, 22.4 s not). From 4 CPUs up
mitogen keeps a CPU for the top-level process, and its policy stays.
EFFDET_MITOGEN_CPU_PINNING: "auto" (the above), "mitogen" (always mitogen's
policy) or "off" (never pin).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import time
from typing import Any

import ansible_mitogen.affinity as mitogen_affinity
import ansible_mitogen.loaders as mitogen_loaders
import ansible_mitogen.planner as mitogen_planner
import ansible_mitogen.strategy as mitogen_strategy
from ansible.errors import AnsibleError
from ansible.collections.list import list_collection_dirs
from ansible.plugins.loader import filter_loader, test_loader
from ansible.utils.display import Display
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as MitogenLinear

try:
    from ansible_collections.effdet_lab.lab.plugins.plugin_utils import (jinja_code_cache, mitogen_module_cache,
                                                                         in_main)
except ImportError:     # the collection is not on the collections path: compile and fork as Ansible does
    jinja_code_cache = mitogen_module_cache = in_main = None

# The collection whose filters the roles call by their full name (this one).
WARM_COLLECTIONS = ("effdet_lab.lab",)


def warm_collection_filters(collection: str) -> None:
    """Import every filter plugin file of an installed collection (each FQCN resolves through it)."""
    try:
        package = importlib.import_module(f"ansible_collections.{collection}.plugins.filter")
    except ImportError:
        return
    for info in pkgutil.iter_modules(package.__path__):
        try:
            filter_loader.get(f"{collection}.{info.name}")
        except Exception:      # noqa: BLE001 - a plugin that fails to load fails later, where it is used
            continue


def warm_jinja_plugins() -> None:
    """Load the plugin path's filters and tests (a no-op while Ansible's cache of them holds)."""
    for loader in (filter_loader, test_loader):
        next(loader.all(path_only=True), None)


_COLLECTION_DIRS: tuple[str, ...] | None = None


def collection_dirs() -> tuple[str, ...]:
    """Every installed collection's folder, listed once per process (as mitogen's planner lists them)."""
    global _COLLECTION_DIRS
    if _COLLECTION_DIRS is None:
        _COLLECTION_DIRS = tuple(path.decode("utf-8") for path in list_collection_dirs())
    return _COLLECTION_DIRS


def load_collections_once(invocation: Any) -> None:
    """mitogen's planner._load_collections, from the list the main process made before it forked."""
    invocation._extra_sys_paths.update(collection_dirs())


PINNING_CHOICES = ("auto", "mitogen", "off")
# Below this many CPUs mitogen reserves none for the top-level process (ansible_mitogen.affinity).
MITOGEN_CPUS_FOR_A_TOP_LEVEL_CPU = 4


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """An environment switch, checked against its choices; another value is refused by name, value and rule."""
    choice = os.environ.get(name, default)
    if choice not in choices:
        raise AnsibleError(f"{name} = {choice!r} breaks the rule: one of {', '.join(choices)}")
    return choice


def cpu_pinning_choice() -> str:
    """EFFDET_MITOGEN_CPU_PINNING, checked against its choices."""
    return env_choice("EFFDET_MITOGEN_CPU_PINNING", PINNING_CHOICES, "auto")


def pins_cpus(choice: str, usable_cpus: int) -> bool:
    """Whether mitogen's CPU pinning policy stays, for a choice and the CPUs this process may use."""
    if choice == "auto":
        return usable_cpus >= MITOGEN_CPUS_FOR_A_TOP_LEVEL_CPU
    return choice == "mitogen"


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_cpu_pinning() -> None:
    """Keep mitogen's pinning policy or replace it with its no-op base policy, before any process is pinned.

    mitogen reads ansible_mitogen.affinity.policy when its worker model starts (the top-level
    process and the multiplexer) and in every worker, so replacing the module's policy is enough."""
    if not pins_cpus(cpu_pinning_choice(), usable_cpus()):
        mitogen_affinity.policy = mitogen_affinity.Policy()


def plugin_caches() -> tuple:
    """The caches mitogen's warm-up fills. Ansible replaces a loader's path cache with a new one when
    it empties it (OLD_PLUGIN_CACHE_CLEARING keeps it, and its content); the objects themselves are
    kept here, so a new cache never passes for an old one."""
    return tuple(loader._plugin_path_cache for loader in (mitogen_loaders.module_loader,
                                                          mitogen_loaders.action_loader,
                                                          mitogen_loaders.connection_loader))


def same_caches(warmed: tuple, now: tuple) -> bool:
    return all(then is cache for then, cache in zip(warmed, now))


class StrategyModule(MitogenLinear):
    def run(self, iterator: Any, play_context: Any) -> Any:
        choose_cpu_pinning()
        self._in_main = in_main is not None and env_choice(in_main.SWITCH, ("on", "off"), "on") == "on"
        self._run_here: list[tuple] = []
        self._runs_on_hosts: str | None = None    # the task whose skip was last found not to hold, if any
        self._cpus = usable_cpus()
        self._plugins_warmed: dict[tuple, tuple] = {}
        for collection in WARM_COLLECTIONS:
            warm_collection_filters(collection)
        collection_dirs()
        mitogen_planner._load_collections = load_collections_once
        if jinja_code_cache is not None:
            jinja_code_cache.install(warn=Display().warning)
        if mitogen_module_cache is not None:
            mitogen_module_cache.install(warn=Display().warning)
        return super().run(iterator, play_context)

    def _queue_task(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> Any:
        if self._in_main and self._done_in_main(host, task, task_vars, play_context):
            return None
        warm_jinja_plugins()
        key = (task.action, play_context.connection)
        if key in self._plugins_warmed and same_caches(self._plugins_warmed[key], plugin_caches()):
            # what mitogen's _queue_task does after its lookups: Ansible's own
            return super(mitogen_strategy.StrategyMixin, self)._queue_task(host, task, task_vars, play_context)
        result = super()._queue_task(host, task, task_vars, play_context)
        self._plugins_warmed[key] = plugin_caches()
        return result

    def _done_in_main(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> bool:
        """Run the task for this host without a worker of its own where it never reaches the host (in_main):
        what Ansible's _queue_task records and sends for a worker it starts, then the result that worker
        would have sent, through the same queue. A controller-only task runs when the strategy waits for
        the task's results, shared out among the main process and batch workers (_share_out_run_here).
        False: it goes to a worker."""
        args = (host, task, task_vars, play_context, self._loader, self._final_q, self._variable_manager)
        if in_main.run_here(task):
            self._started_here(host, task, task_vars, play_context)   # first: a loop sends its items' callbacks
            self._pending_results += 1
            if self.debugger_active or task.debugger:
                # the debugger's redo queues the task again and reads its result at once
                self._final_q.send_task_result(in_main.run_result(*args))
            else:
                self._run_here.append((host, task, task_vars, play_context))   # run when the strategy waits
            return True
        if task._uuid == self._runs_on_hosts or not in_main.skip_here(task):
            return False
        result = in_main.skipped_result(*args)
        if result is None:
            # The task runs on this host, so most likely on the task's other hosts too: they go straight to
            # their workers, without their skip worked out here first (the worker works it out anyway).
            self._runs_on_hosts = task._uuid
            return False
        self._started_here(host, task, task_vars, play_context)
        self._final_q.send_task_result(result)
        self._pending_results += 1
        return True

    def _wait_on_pending_results(self, iterator: Any) -> Any:
        self._share_out_run_here()
        return super()._wait_on_pending_results(iterator)

    def _share_out_run_here(self) -> None:
        """The controller-only runs kept since the last wait: a BatchWorker for each share but the first,
        then the main process's own share (in_main.batches)."""
        items, self._run_here = self._run_here, []
        # a process per CPU, the main process included, and no more batch workers than worker slots (forks)
        shares = in_main.batches(items, min(self._cpus, len(self._workers) + 1))
        for share in shares[1:]:
            self._start_batch_worker(share)
        for host, task, task_vars, play_context in shares[0] if shares else []:
            self._final_q.send_task_result(in_main.run_result(host, task, task_vars, play_context, self._loader,
                                                              self._final_q, self._variable_manager))

    def _start_batch_worker(self, share: list) -> None:
        """In a free worker slot, as Ansible's _queue_task starts a worker (the strategy has waited for the
        previous task's results, so the slots' workers are ending)."""
        while True:
            for index, worker in enumerate(self._workers):
                if worker is None or not worker.is_alive():
                    if worker:
                        worker.close()
                    batch = in_main.BatchWorker(share, self._final_q, self._loader, self._variable_manager, index)
                    self._workers[index] = batch
                    batch.start()
                    return
            time.sleep(0.0001)

    def _started_here(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> None:
        """What Ansible's _queue_task records, and the callback it sends, when it starts a worker."""
        self._queued_task_cache[(host.name, task._uuid)] = {"host": host, "task": task, "task_vars": task_vars,
                                                             "play_context": play_context}
        self._tqm.send_callback("v2_runner_on_start", host, task)
