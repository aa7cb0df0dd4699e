"""Lab-in-a-box: simulated GPU hosts, a local registry mirror and a signed apt
repository, all built locally, so that effdet-lab runs end to end without a GPU,
Docker Hub or NVIDIA's servers."""

import os as _os
import sys as _sys
from pathlib import Path as _Path

# The venv's tools (ansible-playbook and the siblings it starts by name) come
# first on PATH, whether or not the venv was activated.
_VENV_BIN = str(_Path(_sys.executable).parent)
if _os.environ.get("PATH", "").split(_os.pathsep)[0] != _VENV_BIN:
    _os.environ["PATH"] = _os.pathsep.join([_VENV_BIN, _os.environ.get("PATH", "")])
