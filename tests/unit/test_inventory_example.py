"""inventory/gpu_hosts.example is a working inventory, and every role's
variables carry the role's prefix (the list of them in the example is
generated and checked by tests/unit/test_role_docs.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "gpu_hosts.example"
sys.path.insert(0, str(REPO / "tools"))
import role_docs  # noqa: E402


def test_every_variable_carries_its_role_prefix():
    for role_dir in role_docs.role_dirs():
        for option in role_docs.spec_options(role_dir):
            assert option.startswith(role_dir.name + "_"), option


def test_example_parses_as_an_inventory(tmp_path):
    inventory = tmp_path / "gpu_hosts"
    inventory.write_text(EXAMPLE.read_text())
    out = subprocess.run([str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(inventory), "--list"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "gpu-h100-01" in out and "docker_daemon_registry_mirrors" in out and "effdet_tasks_dataset_src" in out
