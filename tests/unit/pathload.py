"""How the unit tests load a file that is not part of a package (a role's
plugin or module, tests/infra, tests/parallel.py): by its path, under a name
of the test's choosing, registered in sys.modules (dataclasses look their
module up there)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
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


def run_collection_module(module: Path, args: dict, tmp_path: Path, collections: Path,
                          path_dirs: list[Path] | None = None) -> dict:
    """Run a module file of the collection as Ansible runs it (a subprocess given its arguments file), with
    the collections folder on its PYTHONPATH and, first on its PATH, path_dirs; its JSON result."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PYTHONPATH": str(collections)}
    if path_dirs:
        env["PATH"] = os.pathsep.join([*map(str, path_dirs), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, str(module), str(args_file)], capture_output=True, text=True,
                          env=env, check=False)
    return json.loads(proc.stdout)


def dpkg_installed_versions() -> dict[str, str]:
    """What this machine's dpkg-query lists as installed, name to version (the modules' answers are checked
    against it)."""
    listing = subprocess.run(["dpkg-query", "--show", "--showformat", "${Package}\t${Version}\t${db:Status-Abbrev}\n"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split("\t")[0]: line.split("\t")[1] for line in listing if line.split("\t")[2][1:2] == "i"}
