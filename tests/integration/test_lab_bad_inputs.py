"""Bad lab inputs fail with a clear error before anything changes."""
from __future__ import annotations

import json

import pytest

from conftest import run_playbook

CASES = [
    ("uid-taken", "playbooks/image.yml", {"lab_image_uid": 1},
     "uid 1 is already taken in the base image by user 'daemon'"),
    ("gid-taken", "playbooks/image.yml", {"lab_image_gid": 100},
     "gid 100 is already taken in the base image by group 'users'"),
    ("invalid-user", "playbooks/image.yml", {"lab_image_user": "Bad User"}, "must be a portable user name"),
    ("missing-key", "playbooks/image.yml", {"lab_image_authorized_keys": []},
     "must list at least one OpenSSH public key"),
    ("not-a-key", "playbooks/container.yml", {"lab_image_authorized_keys": ["AAAA not a key"]},
     "Not a public key"),
    ("malformed-gpus", "playbooks/image.yml", {"lab_container_gpus": "device="}, "lab_container_gpus is malformed"),
    ("gpus-count-junk", "playbooks/container.yml", {"lab_container_gpus": "two"}, "lab_container_gpus is malformed"),
    ("gpus-without-gpu", "playbooks/container.yml", {"lab_container_gpus": "all"}, "Docker would refuse to start"),
    ("port-in-use", "playbooks/container.yml", {"lab_container_ssh_port": 22}, "Port 22 on labhost-2"),
    ("tf21-unknown-profile", "playbooks/image.yml", {"lab_image_profile": "tf1.15"}, "is not a profile"),
    ("password-without-hash", "playbooks/container.yml", {"lab_image_sudo": "password"},
     "lab_container_user_password_hash is missing"),
]


@pytest.mark.parametrize("playbook,extra,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_before_any_change(lab_deployed, tmp_path, playbook, extra, message):
    host = "labhost-2" if "labhost-2" in lab_deployed["hosts"] else lab_deployed["hosts"][-1]
    message = message.replace("labhost-2", host)
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra))
    run = run_playbook(playbook, "--limit", host, "-e", f"@{extra_file}")
    assert run.rc != 0, run.tail(3000)
    assert message in " ".join(run.output.split()), run.tail(3000)
    assert "Nothing was changed" in run.output or "Docker would refuse" in run.output
    assert run.recap[host]["changed"] == 0 and run.recap[host]["failed"] == 1, run.recap
