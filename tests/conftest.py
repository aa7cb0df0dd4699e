"""Shared by every test folder: the tools of the running venv come first on PATH.

The tests start ansible-playbook, molecule, ansible-inventory and ssh-audit by
absolute path, but those tools start their siblings (ansible-config,
ansible-galaxy, ...) by name. `make test` runs the venv's python without
activating the venv, so its bin folder is put first on PATH here, once.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_VENV_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _VENV_BIN:
    os.environ["PATH"] = os.pathsep.join([_VENV_BIN, os.environ.get("PATH", "")])
