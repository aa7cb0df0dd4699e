"""Lab-in-a-box: simulated GPU hosts, a local registry mirror and a signed apt
repository, all built locally, so that effdet-lab runs end to end without a GPU,
Docker Hub or NVIDIA's servers."""

import os as _os
import sys as _sys
from pathlib import Path as _Path


def venv_bin_first_on_path() -> None:
    """Put the running venv's bin folder first on PATH, whether or not the venv was
    activated: ansible-playbook, molecule and testinfra start their siblings
    (ansible-config, ansible-inventory, ...) by name."""
    venv_bin = str(_Path(_sys.executable).parent)
    path = _os.environ.get("PATH", "")
    if path.split(_os.pathsep)[0] != venv_bin:
        _os.environ["PATH"] = _os.pathsep.join([venv_bin, path])


venv_bin_first_on_path()
