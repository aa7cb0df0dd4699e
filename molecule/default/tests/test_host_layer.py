"""The host layer converged on a host that already had Docker and a hand-made daemon.json."""
from __future__ import annotations

from conftest import ORIGINAL_FOREIGN_KEYS

MIRROR = "http://effdet-lab-registry:5000"


def test_foreign_daemon_json_keys_survive(daemon_json):
    for key, value in ORIGINAL_FOREIGN_KEYS.items():
        assert daemon_json[key] == value, key
    assert daemon_json["runtimes"]["admin-runc"] == {"path": "/usr/sbin/runc", "runtimeArgs": ["--debug"]}


def test_nested_settings_merge_key_by_key(daemon_json):
    """Converge sets log-opts.max-size and default-ulimits.nproc; the admin's
    log-opts.max-file and default-ulimits.nofile stay."""
    assert daemon_json["log-opts"] == {"max-size": "50m", "max-file": "3"}
    assert daemon_json["default-ulimits"] == {
        "nofile": {"Name": "nofile", "Hard": 8192, "Soft": 4096},
        "nproc": {"Name": "nproc", "Hard": 4096, "Soft": 4096},
    }


def test_owned_keys_are_merged(daemon_json):
    assert daemon_json["registry-mirrors"] == [MIRROR]
    assert daemon_json["live-restore"] is True
    assert daemon_json["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime"}
    assert daemon_json["default-shm-size"] == "128M"


def test_a_backup_of_the_hand_made_file_is_kept(host):
    backups = host.check_output("ls /etc/docker/ | grep '^daemon.json\\..*~$' || true").split()
    assert backups, "copy(backup=true) should have left daemon.json.<timestamp>~"
    first = host.file(f"/etc/docker/{sorted(backups)[0]}").content_string
    assert '"admin-runc"' in first and "registry-mirrors" not in first


def test_docker_info_shows_mirror_runtime_and_live_restore(docker_info):
    assert MIRROR + "/" in docker_info["RegistryConfig"]["Mirrors"]
    assert "nvidia" in docker_info["Runtimes"]
    assert "admin-runc" in docker_info["Runtimes"]
    assert docker_info["LiveRestoreEnabled"] is True


def test_docker_is_enabled_and_running(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_toolkit_packages_are_pinned_and_held(host):
    for name in ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
                 "libnvidia-container-tools", "libnvidia-container1"):
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == "1.17.8-1", name
        assert host.check_output(f"dpkg-query -W -f='${{Status}}' {name}").startswith("hold"), name


def test_toolkit_source_is_signed_deb822_and_legacy_lists_are_gone(host):
    sources = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    assert "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.gpg" in sources
    assert host.file("/etc/apt/keyrings/nvidia-container-toolkit.gpg").exists
    assert not host.file("/etc/apt/keyrings/nvidia-container-toolkit.asc").exists
    for legacy in ("nvidia-docker.list", "libnvidia-container.list", "nvidia-container-runtime.list"):
        assert not host.file(f"/etc/apt/sources.list.d/{legacy}").exists


def test_pull_of_a_hub_name_goes_through_the_mirror(host):
    # Docker Hub itself is unreachable from here: a successful pull proves the mirror.
    host.run("docker rmi -f debian:bookworm")
    pulled = host.run("docker pull debian:bookworm")
    assert pulled.rc == 0, pulled.stderr
    assert host.run("docker image inspect debian:bookworm").rc == 0


def test_nvidia_runtime_runs_a_container(host):
    out = host.run("docker run --rm --runtime nvidia debian:bookworm echo runtime-ok")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "runtime-ok"


def test_container_started_before_converge_still_runs(host):
    running = host.check_output("docker inspect -f '{{.State.Running}}' pre-existing")
    assert running == "true"
    # The same process since prepare: it was not restarted, dockerd restarted
    # under it (live-restore). Both clocks are epoch seconds on the host.
    container_started = int(host.check_output(
        "date -d \"$(docker inspect -f '{{.State.StartedAt}}' pre-existing)\" +%s"))
    dockerd_started = int(host.check_output(
        "date -d \"$(systemctl show docker -p ActiveEnterTimestamp --value)\" +%s"))
    assert dockerd_started >= container_started, "dockerd should have restarted after the container started"
    assert host.check_output("docker inspect -f '{{.RestartCount}}' pre-existing") == "0"
