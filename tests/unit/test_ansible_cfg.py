"""Host key checking stays on for real labs: only the lab-in-a-box inventory turns it off."""
from __future__ import annotations

import configparser
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_ansible_cfg_keeps_host_key_checking_on():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    for section in cfg.sections():
        assert "host_key_checking" not in cfg[section], section
    assert "StrictHostKeyChecking" not in cfg.get("ssh_connection", "ssh_args", fallback="")


def test_only_the_labbox_inventory_skips_it():
    labbox = yaml.safe_load((REPO / "inventory" / "labbox" / "group_vars" / "gpu_hosts" / "main.yml").read_text())
    assert labbox["ansible_host_key_checking"] is False
    example = (REPO / "inventory" / "gpu_hosts.example").read_text()
    assert "host_key_checking" not in example.replace("# ansible_host_key_checking", "")
    assert "StrictHostKeyChecking=no" not in example


def test_every_play_runs_through_the_pinned_mitogen_strategy():
    """strategy mitogen_linear, found through strategy_plugins in this repo (wherever the venv's
    site-packages lie), from the mitogen that requirements.txt pins."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg.get("defaults", "strategy") == "mitogen_linear"
    shim = REPO / cfg.get("defaults", "strategy_plugins") / "mitogen_linear.py"
    assert "from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule" in shim.read_text()
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("mitogen")]
    assert pins == ["mitogen==0.3.54"]
    import ansible_mitogen.plugins.strategy.mitogen_linear as strategy  # noqa: F401  (the pin is installed)


def test_the_hosts_python_is_named_not_discovered():
    """interpreter_python names the distribution's Python: "auto" under mitogen costs an ssh connection per
    candidate name before the one that answers (3 extra on Debian 12, about 1.3 s per host and run)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg.get("defaults", "interpreter_python") == "/usr/bin/python3"
    example = (REPO / "inventory" / "gpu_hosts.example").read_text()
    assert "ansible_python_interpreter" in example, "the example inventory says how a host overrides it"
