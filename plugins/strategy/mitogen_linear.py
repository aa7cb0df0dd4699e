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

Two more costs of every worker move to the main process, or to once a run:

- Before each module of a collection, mitogen lists every installed collection
  (ansible.collections.list.list_collection_dirs), which imports each one and
  parses its meta/runtime.yml: 94 collections with the "ansible" package, in
  every worker that runs such a module (effdet_lab.lab.dpkg_installed three
  times a host). Here the main process lists them once per run and mitogen's
  planner reuses that list.
- The Python code Jinja compiles the templates and conditionals into is kept
  on disk between workers and runs (plugin_utils/jinja_code_cache.py, which
  says what the key holds and how the folder is guarded;
  EFFDET_JINJA_CODE_CACHE=off turns it off).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import ansible_mitogen.planner as mitogen_planner
from ansible.collections.list import list_collection_dirs
from ansible.plugins.loader import filter_loader, test_loader
from ansible.utils.display import Display
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as MitogenLinear

try:
    from ansible_collections.effdet_lab.lab.plugins.plugin_utils import jinja_code_cache
except ImportError:     # the collection is not on the collections path: compile as Ansible does
    jinja_code_cache = None

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


class StrategyModule(MitogenLinear):
    def run(self, iterator: Any, play_context: Any) -> Any:
        for collection in WARM_COLLECTIONS:
            warm_collection_filters(collection)
        collection_dirs()
        mitogen_planner._load_collections = load_collections_once
        if jinja_code_cache is not None:
            jinja_code_cache.install(warn=Display().warning)
        return super().run(iterator, play_context)

    def _queue_task(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> Any:
        warm_jinja_plugins()
        return super()._queue_task(host, task, task_vars, play_context)
