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
