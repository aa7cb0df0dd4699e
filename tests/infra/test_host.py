"""Non-GPU checks of a converged GPU host: dockerd, daemon.json, the nvidia
runtime, sshd; and, in the lab container, its user, sudo and sshd."""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import docker_json


def _norm(url: str) -> str:
    # dockerd normalises mirrors with a trailing slash in `docker info`.
    return url.rstrip("/")


def test_dockerd_active(host) -> None:
    docker = host.service("docker")
    assert docker.is_running, "docker.service is not active"
    assert docker.is_enabled, "docker.service is not enabled"
    assert host.run("docker version --format '{{.Server.Version}}'").rc == 0, "dockerd does not answer"


def test_host_sshd_active(host) -> None:
    r = host.run("systemctl is-active ssh.service || systemctl is-active sshd.service")
    assert r.stdout.strip().splitlines()[-1] == "active", r.stdout


@pytest.fixture(scope="module")
def daemon_json(host) -> dict:
    f = host.file("/etc/docker/daemon.json")
    assert f.is_file, "/etc/docker/daemon.json is missing"
    return json.loads(f.content_string)  # must parse


def test_daemon_json_live_restore(daemon_json) -> None:
    assert daemon_json.get("live-restore") is True


def test_daemon_json_mirrors(daemon_json, expect) -> None:
    if expect.registry_mirrors is None:
        pytest.skip("no registry mirrors expected (verify_registry_mirrors / docker_daemon_registry_mirrors unset)")
    assert [_norm(m) for m in daemon_json.get("registry-mirrors", [])] == [
        _norm(m) for m in expect.registry_mirrors
    ]


def test_daemon_json_nvidia_runtime(host, daemon_json, expect) -> None:
    runtimes = daemon_json.get("runtimes") or {}
    assert "nvidia" in runtimes, f"no nvidia runtime in daemon.json: {sorted(runtimes)}"
    path = runtimes["nvidia"]["path"]
    assert path == expect.nvidia_runtime_path
    f = host.file(path)
    assert f.exists and f.mode & 0o111, f"{path} is not an executable on the host"


@pytest.fixture(scope="module")
def docker_info(host) -> dict:
    return docker_json(host, "info", "--format", "{{json .}}")


def test_docker_info_mirrors(docker_info, expect) -> None:
    if expect.registry_mirrors is None:
        pytest.skip("no registry mirrors expected (verify_registry_mirrors / docker_daemon_registry_mirrors unset)")
    live = [_norm(m) for m in (docker_info.get("RegistryConfig") or {}).get("Mirrors") or []]
    assert live == [_norm(m) for m in expect.registry_mirrors], "dockerd has not loaded the mirrors in daemon.json"


def test_docker_info_live_restore(docker_info) -> None:
    assert docker_info.get("LiveRestoreEnabled") is True


def test_docker_info_nvidia_runtime(docker_info, expect) -> None:
    runtimes = docker_info.get("Runtimes") or {}
    assert "nvidia" in runtimes, f"dockerd does not know the nvidia runtime: {sorted(runtimes)}"
    assert runtimes["nvidia"].get("path") == expect.nvidia_runtime_path


# ---------------------------------------------------------------------------
# Inside the lab container (skipped only while it does not exist)


def _exec(host, container: str, cmd: str, user: str | None = None):
    u = f"-u {shlex.quote(user)} " if user else ""
    return host.run(f"docker exec {u}{shlex.quote(container)} sh -c {shlex.quote(cmd)}")


def test_lab_user_exists(host, lab_container, expect) -> None:
    r = _exec(host, lab_container.name, f"getent passwd {shlex.quote(expect.lab_user)}")
    assert r.rc == 0, f"user {expect.lab_user} missing in {lab_container.name}"
    home = r.stdout.strip().split(":")[5]
    assert _exec(host, lab_container.name, f"test -d {shlex.quote(home)}").rc == 0, f"home {home} missing"


def test_lab_user_sudo(host, lab_container, expect) -> None:
    """The lab user's sudo is what the inventory asked for (lab_image_sudo / lab_container_sudo /
    verify_lab_sudo): nopasswd, password or none."""
    user = shlex.quote(expect.lab_user)
    policy = _exec(host, lab_container.name, f"LC_ALL=C sudo -l -U {user}")
    assert policy.rc == 0, f"sudo -l -U {expect.lab_user} failed: {policy.stderr}"
    no_password = _exec(host, lab_container.name, "LC_ALL=C sudo -n id -u", user=expect.lab_user)
    if expect.lab_sudo == "nopasswd":
        assert no_password.rc == 0, f"{expect.lab_user} cannot sudo without a password: {no_password.stderr}"
        assert no_password.stdout.strip() == "0"
        return
    assert no_password.rc != 0 and no_password.stdout.strip() != "0", (
        f"lab_image_sudo is {expect.lab_sudo}, but {expect.lab_user} becomes root without a password")
    if expect.lab_sudo == "password":
        assert "password is required" in no_password.stderr, no_password.stderr
        assert "(ALL : ALL) ALL" in policy.stdout and "NOPASSWD" not in policy.stdout, policy.stdout
        shadow = _exec(host, lab_container.name, f"getent shadow {user}")
        assert shadow.rc == 0 and shadow.stdout.split(":")[1].startswith("$"), (
            f"sudo asks {expect.lab_user} for a password, but no password hash is set "
            "(lab_container_user_password_hash)")
    else:
        assert "is not allowed to run sudo" in policy.stdout, policy.stdout


def _vfs_options(host, command: str) -> set[str]:
    out = host.run(command)
    lines = out.stdout.strip().splitlines()
    assert out.rc == 0 and lines, f"{command}: {out.stderr}"
    return set(lines[-1].split(","))


def test_lab_bind_volumes_nosuid(host, lab_container, expect) -> None:
    """lab_container_volumes_nosuid: every bind folder is nosuid,nodev on the host, and so is its mount
    in the running container (a set-uid or device file left there gives root to no one)."""
    if not expect.lab_volumes_nosuid:
        pytest.skip("lab_container_volumes_nosuid is false (verify_lab_volumes_nosuid): not asked for")
    assert expect.lab_bind_volumes, "lab_container_volumes_nosuid is true, but lab_container_volumes has no bind volume"
    pid = int(lab_container.inspect["State"]["Pid"])
    for src, dest in expect.lab_bind_volumes:
        on_host = _vfs_options(host, f"findmnt -rn -o VFS-OPTIONS --target {shlex.quote(src)}")
        assert {"nosuid", "nodev"} <= on_host, f"{src} on the host is mounted {','.join(sorted(on_host))}"
        inside = _vfs_options(host, f"findmnt -rn -N {pid} -o VFS-OPTIONS --mountpoint {shlex.quote(dest)}")
        assert {"nosuid", "nodev"} <= inside, (
            f"{dest} in {lab_container.name} is mounted {','.join(sorted(inside))}: restart the container "
            "(run the container stage) so it takes the host folder's nosuid,nodev")


def test_lab_sshd_running(host, lab_container) -> None:
    r = _exec(host, lab_container.name, "cat /proc/[0-9]*/comm 2>/dev/null | grep -qx sshd")
    assert r.rc == 0, f"no sshd process in {lab_container.name}"
