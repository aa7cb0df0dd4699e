"""A daemon.json change that stops dockerd from starting is rolled back, loudly."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CONFIG = "/etc/docker/daemon.json"
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def test_setting_that_breaks_dockerd_is_rolled_back(host, tmp_path):
    before = host.file(CONFIG).content_string
    pid_before = host.check_output("docker inspect -f '{{.State.Pid}}' pre-existing")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"docker_daemon_extra_config": {
        "default-shm-size": "128M",
        "storage-driver": "effdet-lab-no-such-driver",
    }}))
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(PROJECT / "playbooks" / "host.yml"), "-e", f"@{bad}"],
        capture_output=True, text=True, env={**os.environ, "ANSIBLE_ROLES_PATH": str(PROJECT / "roles")},
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "did not come back with the new /etc/docker/daemon.json" in output
    assert "storage-driver" in output
    # Restored byte for byte, the rejected file kept aside, dockerd back up.
    assert host.file(CONFIG).content_string == before
    assert "effdet-lab-no-such-driver" in host.file(CONFIG + ".rejected").content_string
    assert host.service("docker").is_running
    assert host.run("docker info").rc == 0
    # The user's container lived through two failed and one good dockerd start.
    assert host.check_output("docker inspect -f '{{.State.Running}} {{.State.Pid}}' pre-existing") == f"true {pid_before}"
