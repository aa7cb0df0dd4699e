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
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from ansible.plugins.loader import filter_loader, test_loader
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as MitogenLinear

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


class StrategyModule(MitogenLinear):
    def run(self, iterator: Any, play_context: Any) -> Any:
        for collection in WARM_COLLECTIONS:
            warm_collection_filters(collection)
        return super().run(iterator, play_context)

    def _queue_task(self, host: Any, task: Any, task_vars: Any, play_context: Any) -> Any:
        warm_jinja_plugins()
        return super()._queue_task(host, task, task_vars, play_context)
