"""lab_container on the lab-in-a-box: ssh through the published port, hardening, idempotence, restarts."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paramiko

from conftest import run_playbook
from test_lab_image import (CONTAINER, KEY, PORT, USER, host_ip, host_sh, in_container,  # noqa: F401
                            lab_ssh)


def test_openssh_login_as_the_lab_user(lab_deployed):
    for host in lab_deployed["hosts"]:
        r = lab_ssh(host, "id -un; id -u; id -g; sudo -n true && echo sudo-ok")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [USER, "1001", "1001", "sudo-ok"]


def test_paramiko_login(lab_deployed):
    for host in lab_deployed["hosts"]:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(host_ip(host), port=PORT, username=USER, key_filename=str(KEY),
                       look_for_keys=False, allow_agent=False, timeout=15)
        try:
            _, out, _ = client.exec_command("id -un")
            assert out.read().decode().strip() == USER
        finally:
            client.close()


def test_root_login_refused(lab_deployed):
    for host in lab_deployed["hosts"]:
        r = lab_ssh(host, "true", "root")
        assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr


def test_password_login_refused(lab_deployed):
    for host in lab_deployed["hosts"]:
        r = lab_ssh(host, "true", USER, "-o", "PubkeyAuthentication=no",
                    "-o", "PreferredAuthentications=password,keyboard-interactive")
        assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr, r.stderr


def test_ssh_audit_no_failures(lab_deployed):
    audit = str(Path(sys.executable).with_name("ssh-audit"))
    for host in lab_deployed["hosts"]:
        # --skip-rate-test: the DHEat connection-rate probe is about throttling, not configuration.
        r = subprocess.run([audit, "-j", "--skip-rate-test", "-p", str(PORT), host_ip(host)],
                           capture_output=True, text=True, timeout=120, check=False)
        report = json.loads(r.stdout)
        failures = [(kind, alg["algorithm"], alg["notes"]["fail"]) for kind in ("kex", "key", "enc", "mac")
                    for alg in report.get(kind, []) if alg.get("notes", {}).get("fail")]
        assert failures == [], failures
        # Warnings: only "no post-quantum protection" on the classical key exchanges that the hardened
        # policy itself lists (and paramiko, without sntrup761, needs).
        warnings = [(alg["algorithm"], note) for kind in ("kex", "key", "enc", "mac")
                    for alg in report.get(kind, []) for note in alg.get("notes", {}).get("warn", [])]
        assert all(note == "does not provide protection against post-quantum attacks" and alg in CLASSICAL_KEX
                   for alg, note in warnings), warnings
        assert report.get("cves") == [], report.get("cves")
        assert "critical" not in report.get("recommendations", {}), report["recommendations"]


CLASSICAL_KEX = {"curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512",
                 "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha256"}


def test_ssh_audit_hardened_policy(lab_deployed):
    """The cpu profile (Debian 12, OpenSSH 9.2) passes ssh-audit's "Hardened Debian 12 (version 3)":
    exact kex list with strict KEX, chacha20 included, 4096-bit RSA host key, moduli >= 3072 bits."""
    audit = str(Path(sys.executable).with_name("ssh-audit"))
    for host in lab_deployed["hosts"]:
        r = subprocess.run([audit, "--skip-rate-test", "-P", "Hardened Debian 12 (version 3)", "-p", str(PORT),
                            host_ip(host)], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0 and "Passed" in r.stdout, r.stdout[-3000:] + r.stderr[-1000:]


def test_container_spec(lab_deployed):
    for host in lab_deployed["hosts"]:
        (info,) = json.loads(host_sh(host, f"docker container inspect {CONTAINER}").stdout)
        hc = info["HostConfig"]
        assert info["State"]["Running"]
        assert hc["ShmSize"] == 1024 ** 3
        assert hc["RestartPolicy"]["Name"] == "always"
        assert hc["PortBindings"]["22/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "5522"}]
        assert any(m["Destination"] == "/data" and m["Source"] == "/srv/effdet-lab/data" for m in info["Mounts"])
        assert any(m["Destination"] == "/etc/ssh/host_keys" and m["Type"] == "volume" for m in info["Mounts"])
        assert not hc.get("DeviceRequests"), "no GPU on a simulated host: no device request"


def test_container_is_idempotent(lab_deployed):
    run = run_playbook("playbooks/container.yml")
    assert run.rc == 0 and run.changed() == 0, run.tail(4000)
    run = run_playbook("playbooks/container.yml", "--check", "--diff")
    assert run.rc == 0 and run.changed() == 0, run.tail(4000)


def test_survives_a_docker_restart(lab_deployed):
    host = lab_deployed["hosts"][-1]   # labhost-1 is left alone: others work on it
    before = in_container(host, "cat /etc/ssh/host_keys/ssh_host_ed25519_key.pub").stdout
    host_sh(host, "systemctl restart docker")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = lab_ssh(host, "id -un")
        if r.returncode == 0:
            break
        time.sleep(2)
    assert r.returncode == 0 and r.stdout.strip() == USER, r.stderr
    assert in_container(host, "cat /etc/ssh/host_keys/ssh_host_ed25519_key.pub").stdout == before


def test_sudo_with_a_password_and_cuda_visible_devices(lab_deployed, tmp_path):
    """lab_image_sudo=password: the hash comes from a variable (vault in real use), is applied at
    start, and shows nowhere: not in the playbook output, the image history, or docker inspect."""
    host = lab_deployed["hosts"][-1]
    password = "effdet-lab-test-pw"
    hashed = subprocess.run(["openssl", "passwd", "-6", "-salt", "effdetlabsalt", password],
                            capture_output=True, text=True, check=True).stdout.strip()
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"lab_image_sudo": "password", "lab_container_user_password_hash": hashed,
                                 "lab_container_cuda_visible_devices": "-1"}))
    try:
        for playbook in ("playbooks/image.yml", "playbooks/container.yml"):
            run = run_playbook(playbook, "--limit", host, "-e", f"@{extra}", "-v")
            assert run.rc == 0, run.tail(4000)
            assert hashed not in run.output and password not in run.output
        r = lab_ssh(host, "LC_ALL=C sudo -n true")
        assert r.returncode != 0 and "password is required" in r.stderr, r.stderr
        r = lab_ssh(host, f"echo {password} | sudo -S -p '' id -u")
        assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
        assert lab_ssh(host, "echo $CUDA_VISIBLE_DEVICES").stdout.strip() == "-1"
        ref = host_sh(host, f"docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER}").stdout.strip()
        for cmd in (f"docker history --no-trunc {ref}", f"docker inspect {CONTAINER} {ref}"):
            assert hashed not in host_sh(host, cmd).stdout
        assert host_sh(host, "stat -c %a /etc/effdet-lab/secrets/effdet-lab.password-hash").stdout.strip() == "600"
    finally:
        for playbook in ("playbooks/image.yml", "playbooks/container.yml"):
            run = run_playbook(playbook, "--limit", host)
            assert run.rc == 0, run.tail(4000)
    assert lab_ssh(host, "sudo -n true").returncode == 0
