"""A daemon.json that dockerd would not run on never costs the host its Docker.

dockerd is asked first (Debian 12's docker.io 20.10 has no --validate, so a
throw-away dockerd runs on the candidate): a file it rejects is never written.
A file that passes that check but still stops the real dockerd (here a metrics
port that is already taken, which the throw-away dockerd does not listen on) is
rolled back after the restart, loudly.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CONFIG = "/etc/docker/daemon.json"
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def converge_with(tmp_path: Path, extra_config: dict) -> tuple[int, str]:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"docker_daemon_extra_config": {"default-shm-size": "128M", **extra_config}}))
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(PROJECT / "playbooks" / "host.yml"), "-e", f"@{bad}"],
        capture_output=True, text=True, env={**os.environ, "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
                                              "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections")},
        check=False,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def dockerd_pid(host) -> str:
    return host.check_output("systemctl show docker -p MainPID --value")


def test_setting_dockerd_rejects_is_never_written(host, tmp_path):
    before = host.file(CONFIG).content_string
    pid_before = dockerd_pid(host)
    container_before = host.check_output("docker inspect -f '{{.State.Pid}}' pre-existing")
    rc, output = converge_with(tmp_path, {"storage-driver": "effdet-lab-no-such-driver"})
    assert rc != 0, output
    assert "rejects the new /etc/docker/daemon.json (changed keys: storage-driver" in output
    assert "driver not supported" in output, "dockerd's own words"
    assert "Nothing was changed" in output
    assert host.file(CONFIG).content_string == before
    assert not host.file(CONFIG + ".rejected").exists
    assert dockerd_pid(host) == pid_before, "dockerd was not even restarted"
    assert host.check_output("docker inspect -f '{{.State.Pid}}' pre-existing") == container_before


def test_setting_that_stops_dockerd_after_the_check_is_rolled_back(host, tmp_path):
    before = host.file(CONFIG).content_string
    pid_before = host.check_output("docker inspect -f '{{.State.Pid}}' pre-existing")
    # sshd listens on port 22 here: dockerd cannot bind its metrics server to it.
    rc, output = converge_with(tmp_path, {"metrics-addr": "127.0.0.1:22"})
    assert rc != 0, output
    assert "did not take the new /etc/docker/daemon.json (changed keys: metrics-addr)" in output
    assert "address already in use" in output, "dockerd's own words"
    # Restored byte for byte, the rejected file kept aside, dockerd back up.
    assert host.file(CONFIG).content_string == before
    assert "127.0.0.1:22" in host.file(CONFIG + ".rejected").content_string
    assert host.service("docker").is_running
    assert host.run("docker info").rc == 0
    # The user's container lived through the failed and the good dockerd start.
    assert host.check_output("docker inspect -f '{{.State.Running}} {{.State.Pid}}' pre-existing") == f"true {pid_before}"
    # Backups do not pile up.
    backups = host.check_output("ls /etc/docker | grep -c '^daemon.json\\..*~$' || true")
    assert int(backups) <= 3
