"""How the unit tests load a file that is not part of a package (a role's
plugin or module, tests/infra, tests/parallel.py): by its path, under a name
of the test's choosing, registered in sys.modules (dataclasses look their
module up there)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_collection_module(path: Path, name: str, collections: Path) -> ModuleType:
    """load_module for a file that imports the collection (ansible_collections.effdet_lab.lab...): the
    collections folder is on sys.path only while it loads, and the ansible_collections packages this
    imported are taken out of sys.modules again, so other tests import the collection (or not) as before."""
    before = {key for key in sys.modules if key.split(".")[0] == "ansible_collections"}
    sys.path.insert(0, str(collections))
    try:
        return load_module(path, name)
    finally:
        sys.path.remove(str(collections))
        for key in [key for key in sys.modules if key.split(".")[0] == "ansible_collections" and key not in before]:
            del sys.modules[key]
