"""Load a module of this folder by its path, once per process.

Inside the collection (effdet_lab.lab) the filters import
`ansible_collections.effdet_lab.lab.plugins.module_utils.<name>`. Run from the
plain repository (roles_path=roles) that package does not exist, and the
tests/infra checks never have it; they all call load() from this file instead,
which they reach by path without importing anything:

    runpy.run_path("<repository>/plugins/module_utils/by_path.py")["load"]("gpu_request")

Each module is registered in sys.modules under a private name
(effdet_lab_module_utils_<name>), so a second caller in the same process gets
the same module, its classes and exceptions included, and a same-named module
elsewhere (tests/infra/nvidia_smi.py) is never shadowed.
"""
import importlib.util
import os
import sys
from types import ModuleType

PREFIX = "effdet_lab_module_utils_"
HERE = os.path.dirname(os.path.realpath(__file__))


def load(name: str) -> ModuleType:
    """plugins/module_utils/<name>.py as the module effdet_lab_module_utils_<name>."""
    key = PREFIX + name
    module = sys.modules.get(key)
    if module is not None:
        return module
    path = os.path.join(HERE, name + ".py")
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load {} from {}".format(name, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module
