"""Shared by every test folder: the tools of the running venv come first on PATH.

The tests start ansible-playbook, molecule, ansible-inventory and ssh-audit by
absolute path, but those tools start their siblings (ansible-config,
ansible-galaxy, ...) by name. `make test` runs the venv's python without
activating the venv; importing labbox puts its bin folder first on PATH.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from labbox import venv_bin_first_on_path  # noqa: E402

venv_bin_first_on_path()
