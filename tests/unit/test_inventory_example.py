"""inventory/gpu_hosts.example documents every variable of every public role."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "gpu_hosts.example"
INTERNAL_ROLES = {"apt_signed_source"}


def public_role_options() -> list[tuple[str, str]]:
    options = []
    spec_files = sorted(REPO.glob("roles/*/meta/argument_specs.yml")) + [REPO / "effdet_tasks/meta/argument_specs.yml"]
    for spec_file in spec_files:
        role = spec_file.parts[-3]
        if role in INTERNAL_ROLES:
            continue
        spec = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]
        options += [(role, name) for name in spec.get("options", {})]
    return options


@pytest.mark.parametrize("role, option", public_role_options())
def test_every_role_option_is_documented(role, option):
    assert f"{option}:" in EXAMPLE.read_text(), f"{option} ({role}) is missing from {EXAMPLE.name}"


def test_every_variable_carries_its_role_prefix():
    for role, option in public_role_options():
        assert option.startswith(role + "_"), option


def test_example_parses_as_an_inventory(tmp_path):
    inventory = tmp_path / "gpu_hosts"
    inventory.write_text(EXAMPLE.read_text())
    out = subprocess.run([str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(inventory), "--list"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "gpu-h100-01" in out and "docker_daemon_registry_mirrors" in out and "effdet_tasks_dataset_src" in out
