"""plugins/plugin_utils/mitogen_module_cache.py: what mitogen works out for each module it sends, kept on disk.

Each case runs in its own Python (install() changes mitogen for the whole process), with mitogen's real
ModuleResponder (a Router of its own) and ansible_mitogen's real module_utils scan, on a package and an
Ansible module the test writes: with the cache off, cold and warm, the results must be the same, a warm
cache must answer without mitogen's own work, and a change to what a result depends on must be seen.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason="needs the project's venv (make venv)")

SCRIPT = r'''
import hashlib, json, sys, zlib
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import ansible_mitogen.module_finder
import mitogen.master
calls = {"build": 0, "scan": 0}
build, scan = mitogen.master.ModuleResponder._build_tuple, ansible_mitogen.module_finder.scan

def counted_build(self, fullname):
    if fullname not in self._cache:
        calls["build"] += 1
    return build(self, fullname)

def counted_scan(*args, **kwargs):
    calls["scan"] += 1
    return scan(*args, **kwargs)

mitogen.master.ModuleResponder._build_tuple = counted_build
ansible_mitogen.module_finder.scan = counted_scan
from ansible_collections.effdet_lab.lab.plugins.plugin_utils import mitogen_module_cache as cache
warnings = []
folder = cache.install(warn=warnings.append)
import probe_pkg  # noqa: F401 - mitogen lists the imports only of modules the controller has imported
broker = mitogen.master.Broker()
try:
    responder = mitogen.master.Router(broker).responder
    tuples = {}
    for name in ("probe_pkg", "probe_pkg.leaf"):
        fullname, pkg_present, path, blob, related = responder._build_tuple(name)
        tuples[name] = [fullname, pkg_present, path, hashlib.sha256(zlib.decompress(bytes(blob))).hexdigest(),
                        related]
finally:
    broker.shutdown()
    broker.join()
spec = json.loads(sys.argv[3])
found = ansible_mitogen.module_finder.scan(module_name="probe_module", module_path=spec["module"],
                                           search_path=tuple(spec["search_path"]))
print(json.dumps({"folder": folder, "warnings": warnings, "tuples": tuples, "scan": [list(r) for r in found],
                  "calls": calls}))
'''


def write_tree(root: Path) -> dict:
    """A package for mitogen to send (probe_pkg, importing its submodule), and an Ansible module with the
    module_utils it needs (probe_a imports probe_b)."""
    pkg = root / "site" / "probe_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from probe_pkg import leaf\nVALUE = leaf.VALUE\n")
    (pkg / "leaf.py").write_text("VALUE = 1\n")
    utils = root / "module_utils"
    utils.mkdir()
    (utils / "probe_a.py").write_text("from ansible.module_utils.probe_b import B\nA = B\n")
    (utils / "probe_b.py").write_text("B = 2\n")
    module = root / "probe_module.py"
    module.write_text("from ansible.module_utils.probe_a import A\n"
                      "try:\n    from ansible.module_utils.probe_later import L\nexcept ImportError:\n    L = None\n")
    return {"site": root / "site", "module": str(module), "search_path": [str(utils)]}


def run(tree: dict, env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EFFDET_MITOGEN_MODULE_CACHE"}
    if env_value is not None:
        env["EFFDET_MITOGEN_MODULE_CACHE"] = env_value
    done = subprocess.run([str(PYTHON), "-c", SCRIPT, str(REPO / "collections"), str(tree["site"]),
                           json.dumps({"module": tree["module"], "search_path": tree["search_path"]})],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def names(result: dict) -> list[str]:
    return [row[0] for row in result["scan"]]


def test_a_warm_cache_answers_without_mitogen_and_gives_the_same(tmp_path):
    tree = write_tree(tmp_path)
    folder = tmp_path / "cache"
    off = run(tree, "off")
    cold = run(tree, str(folder))
    warm = run(tree, str(folder))
    assert off["folder"] is None and cold["folder"] == str(folder) and warm["warnings"] == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert off["calls"] == cold["calls"] == {"build": 2, "scan": 1}
    assert warm["calls"] == {"build": 0, "scan": 0}
    assert off["tuples"] == cold["tuples"] == warm["tuples"]
    assert off["tuples"]["probe_pkg"][1] == ["leaf"] and off["tuples"]["probe_pkg"][4] == ["probe_pkg.leaf"]
    assert off["scan"] == cold["scan"] == warm["scan"]
    assert names(off) == ["ansible.module_utils.probe_a", "ansible.module_utils.probe_b"]
    for entry in folder.iterdir():
        assert json.loads(entry.read_text())        # JSON, no pickle


def test_a_changed_module_or_module_utils_is_worked_out_again(tmp_path):
    tree = write_tree(tmp_path)
    folder = str(tmp_path / "cache")
    run(tree, folder)
    (tree["site"] / "probe_pkg" / "leaf.py").write_text("VALUE = 3\n")
    (Path(tree["search_path"][0]) / "probe_b.py").write_text("from ansible.module_utils.probe_c import C\nB = C\n")
    (Path(tree["search_path"][0]) / "probe_c.py").write_text("C = 4\n")
    changed = run(tree, folder)
    assert changed["calls"] == {"build": 1, "scan": 1}       # the leaf's source changed; the package's did not
    assert changed["tuples"]["probe_pkg.leaf"] == run(tree, "off")["tuples"]["probe_pkg.leaf"]
    assert "ansible.module_utils.probe_c" in names(changed)


def test_a_module_utils_file_added_to_a_folder_the_scan_looked_in_is_found(tmp_path):
    tree = write_tree(tmp_path)
    folder = str(tmp_path / "cache")
    assert "ansible.module_utils.probe_later" not in names(run(tree, folder))
    (Path(tree["search_path"][0]) / "probe_later.py").write_text("L = 5\n")
    later = run(tree, folder)
    assert later["calls"]["scan"] == 1
    assert "ansible.module_utils.probe_later" in names(later)


def test_a_folder_others_can_write_is_not_used(tmp_path):
    tree = write_tree(tmp_path)
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    result = run(tree, str(folder))
    assert result["folder"] is None and list(folder.iterdir()) == []
    assert f"the mitogen module cache {folder} is off for this run" in result["warnings"][0]
    assert "0777" in result["warnings"][0] and "Set EFFDET_MITOGEN_MODULE_CACHE to another folder" in result["warnings"][0]
    assert result["calls"] == {"build": 2, "scan": 1}
