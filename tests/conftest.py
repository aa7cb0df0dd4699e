"""Shared by every test folder: the tools of the running venv come first on PATH.

The tests start ansible-playbook, molecule, ansible-inventory and ssh-audit by
absolute path, but those tools start their siblings (ansible-config,
ansible-galaxy, ...) by name. `make test` runs the venv's python without
activating the venv; importing labbox puts its bin folder first on PATH.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from labbox import venv_bin_first_on_path  # noqa: E402

venv_bin_first_on_path()


# `make test` runs the suite on two xdist workers with --dist loadgroup. Every
# test that uses the shared lab (labhost-1..N, the molecule host, results/)
# stays in one group, in file order, as before; a module that works only on a
# scratch host of its own names its own group (pytestmark xdist_group) and runs
# beside them. Unit tests form a group of their own.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "unit" if "/tests/unit/" in str(item.path) else "lab"
            item.add_marker(pytest.mark.xdist_group(group))
