"""The lab user is not trusted with the host (issue #9, part 2): the data folder
without set-uid, and every sudo mode.

A scratch host (index 6) of this module alone, so it runs beside the tests of the
shared lab: lab_container_volumes_nosuid (a set-uid-root file in the data folder
gives root neither in the container nor on the host; converges twice with
changed=0; back to the default), then every lab_image_sudo mode, each followed
by playbooks/verify.yml.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import PlaybookRun, verify_results


def verified_tests(host) -> list[str]:
    """playbooks/verify.yml on the scratch host's inventory; the names of the checks that ran."""
    return verify_results(host.play("playbooks/verify.yml", timeout=600)).ran


@pytest.mark.scratch_index(6)
def test_nosuid_data_folder_and_every_sudo_mode_pass_verify(scratch_host):
    host = scratch_host
    host_vars = host.inventory / "host_vars" / f"{host.name}.yml"
    host_vars.parent.mkdir(exist_ok=True)

    def converge(variables: dict, *playbooks: str) -> PlaybookRun:
        host_vars.write_text("---\n" + yaml.safe_dump(variables or {}))
        for playbook in playbooks:
            run = host.play(playbook, timeout=900)
            assert run.rc == 0, f"{playbook}: {run.tail(5000)}"
        return run

    def probe(user: str) -> str:
        return host.sh(f"docker exec -u {user} effdet-lab /data/.setuid-probe -u").stdout.strip()

    assert host.play("playbooks/host.yml").rc == 0
    # The converge's daemon.json check must leave the host's bridge alone: images are built on it next.
    assert host.sh("ip link show docker0", check=False).returncode == 0, "the host layer lost docker0"

    # nosuid,nodev on: the unit mounts the folder on the host, the container inherits it.
    converge({"lab_container_volumes_nosuid": True}, "playbooks/image.yml", "playbooks/container.yml")
    again = converge({"lab_container_volumes_nosuid": True}, "playbooks/container.yml")
    assert again.changed() == 0, again.tail(4000)
    check = host.play("playbooks/container.yml", "--check", "--diff")
    assert check.rc == 0 and check.changed() == 0, check.tail(4000)
    ran = verified_tests(host)
    assert any("test_lab_bind_volumes_nosuid" in name for name in ran), ran
    mounted = host.sh("docker exec effdet-lab sh -c 'mount | grep \" /data \"'").stdout
    assert "nosuid" in mounted and "nodev" in mounted, mounted
    # Container root leaves a set-uid-root copy of id(1) in the data folder.
    host.sh("docker exec effdet-lab sh -ec 'cp /usr/bin/id /data/.setuid-probe; chmod 4755 /data/.setuid-probe'")
    assert host.sh("stat -c '%U %a' /srv/effdet-lab/data/.setuid-probe").stdout.split() == ["root", "4755"]
    assert probe("lcg") == "1001", "the set-uid file gave the lab user root inside the container"
    on_host = host.sh("su -s /bin/sh nobody -c '/srv/effdet-lab/data/.setuid-probe -u'").stdout.strip()
    assert on_host == "65534", "the set-uid file gave a host user root"

    # Back to the default: the mount and the unit go, the container restarts without nosuid, and the
    # same file gives root again (what the variable closes).
    try:
        off = converge({}, "playbooks/container.yml")
        assert off.changed() > 0 and "Stop and disable the nosuid unit" in off.output
        assert host.sh("test -e /etc/systemd/system/effdet-lab-nosuid-effdet-lab.service", check=False).returncode != 0
        assert probe("lcg") == "0"
        assert converge({}, "playbooks/container.yml").changed() == 0
    finally:
        host.sh("rm -f /srv/effdet-lab/data/.setuid-probe")

    # Every lab_image_sudo mode: verify expects what the inventory says.
    password_hash = subprocess.run(["openssl", "passwd", "-6", "-salt", "effdetlabsalt", "effdet-lab-test-pw"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    # (nopasswd, the default, was verified above.)
    for variables in ({"lab_image_sudo": "none"},
                      {"lab_image_sudo": "password", "lab_container_user_password_hash": password_hash}):
        converge(variables, "playbooks/image.yml", "playbooks/container.yml")
        ran = verified_tests(host)
        assert any("test_lab_user_sudo" in name for name in ran), (variables, ran)
