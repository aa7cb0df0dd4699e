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
