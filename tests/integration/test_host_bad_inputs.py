"""Bad inventory values and host states that must be refused before anything changes.

Each case runs the whole host layer (playbooks/host.yml) against a converged
simulated host with one bad value and asserts: the run fails, the message
names the problem, and no task anywhere reported a change.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import docker_sh, run_playbook

HOST = "labhost-1"
CONTAINER = "effdet-lab-host-1"

BAD_VALUES = [
    pytest.param({"docker_engine_source": "snap"},
                 "docker_engine_source must be one of: auto, distro, docker", id="engine-source-choice"),
    pytest.param({"docker_engine_apt_cache_valid_time": "soon"},
                 "docker_engine_apt_cache_valid_time", id="engine-cache-time-not-int"),
    pytest.param({"docker_engine_source": "docker", "docker_engine_repo_key_fingerprint": "DEADBEEF"},
                 "must be a full 40-hex-digit fingerprint", id="engine-short-fingerprint"),
    pytest.param({"docker_engine_source": "docker", "docker_engine_repo_url": "download.docker.com/linux/debian"},
                 "must be http(s):// or file:// URLs", id="engine-url-without-scheme"),
    pytest.param({"docker_engine_supported_releases": {"Ubuntu": ["noble"]}},
                 "docker_engine supports Ubuntu noble", id="engine-unsupported-os"),
    pytest.param({"docker_daemon_registry_mirrors": ["registry.lab:5000"]},
                 'docker_daemon_registry_mirrors = ["registry.lab:5000"] breaks the rule: '
                 'every registry mirror is an http:// or https:// URL',
                 id="daemon-mirror-without-scheme"),
    pytest.param({"docker_daemon_live_restore": "maybe"},
                 "docker_daemon_live_restore", id="daemon-live-restore-not-bool"),
    pytest.param({"docker_daemon_runtimes": "nvidia"},
                 "docker_daemon_runtimes", id="daemon-runtimes-not-dict"),
    pytest.param({"docker_daemon_extra_config": {"registry-mirrors": ["http://m:5000"]}},
                 'docker_daemon_extra_config = ["registry-mirrors"] breaks the rule: '
                 'docker_daemon_extra_config does not set registry-mirrors',
                 id="daemon-owned-key-in-extra"),
    pytest.param({"docker_daemon_config_path": "daemon.json"},
                 'docker_daemon_config_path = "daemon.json" breaks the rule: an absolute path', id="daemon-relative-path"),
    pytest.param({"docker_daemon_start_timeout": 0},
                 "docker_daemon_start_timeout = 0 breaks the rule: docker_daemon_start_timeout must be positive",
                 id="daemon-zero-timeout"),
    pytest.param({"docker_daemon_insecure_registries": ["foo bar"]},
                 'docker_daemon_insecure_registries = ["foo bar"] breaks the rule: every insecure registry is host[:port]',
                 id="daemon-insecure-with-space"),
    pytest.param({"docker_daemon_insecure_registries": ["http://reg.lab:5000"]},
                 'docker_daemon_insecure_registries = ["http://reg.lab:5000"] breaks the rule', id="daemon-insecure-with-scheme"),
    pytest.param({"docker_daemon_registry_mirrors": ["https://mirror.lab/v2\n\"debug\": true"]},
                 "every registry mirror is an http:// or https:// URL", id="daemon-mirror-with-newline"),
    pytest.param({"docker_daemon_extra_config": {"log-opts": "notadict"}},
                 "docker_daemon_extra_config['log-opts'] = \"notadict\" breaks the rule: "
                 "dockerd expects an object whose values are strings",
                 id="daemon-log-opts-not-a-dict"),
    pytest.param({"docker_daemon_extra_config": {"debug": "yes"}},
                 "docker_daemon_extra_config['debug'] = \"yes\" breaks the rule: dockerd expects true or false",
                 id="daemon-debug-not-bool"),
    pytest.param({"docker_daemon_runtimes": {"my runtime": {"path": "/usr/bin/runc"}}},
                 'docker_daemon_runtimes = ["my runtime"] breaks the rule: every runtime name is', id="daemon-runtime-name"),
    pytest.param({"docker_daemon_runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}},
                 'docker_daemon_runtimes = ["nvidia"] breaks the rule: every runtime\'s "path" is an absolute path',
                 id="daemon-runtime-relative-path"),
    pytest.param({"docker_daemon_service": "docker; reboot"},
                 'docker_daemon_service = "docker; reboot" breaks the rule: a systemd unit name', id="daemon-service-injection"),
    pytest.param({"docker_daemon_config_path": "/etc/docker/../shadow"},
                 'docker_daemon_config_path = "/etc/docker/../shadow" breaks the rule', id="daemon-path-dotdot"),
    pytest.param({"docker_daemon_backups_keep": 0},
                 "docker_daemon_backups_keep = 0 breaks the rule: keep at least 1", id="daemon-backups-zero"),
    pytest.param({"nvidia_container_toolkit_version": "latest"},
                 "the version must look like 1.17.8-1", id="toolkit-version-latest"),
    pytest.param({"nvidia_container_toolkit_legacy_sources": ["/etc/apt/sources.list.d/nvidia-docker.list",
                                                              "/etc/passwd"]},
                 'nvidia_container_toolkit_legacy_sources = ["/etc/passwd"] breaks the rule: every legacy source is '
                 "a list file of apt's own folder", id="toolkit-legacy-source-outside-apt"),
    pytest.param({"nvidia_container_toolkit_legacy_sources": ["/etc/apt/sources.list.d/../../passwd.list"]},
                 "nvidia_container_toolkit_legacy_sources = [\"/etc/apt/sources.list.d/../../passwd.list\"] breaks the rule",
                 id="toolkit-legacy-source-dotdot"),
    pytest.param({"nvidia_container_toolkit_source": "ppa"},
                 "nvidia_container_toolkit_source must be one of: repo, debs", id="toolkit-source-choice"),
    pytest.param({"nvidia_container_toolkit_repo_key_fingerprint": "C95B321B"},
                 "the fingerprint must be 40 hex digits", id="toolkit-short-fingerprint"),
    pytest.param({"nvidia_container_toolkit_repo_url": "nvidia.github.io/libnvidia-container"},
                 "the URLs need a scheme", id="toolkit-url-without-scheme"),
    pytest.param({"nvidia_container_toolkit_source": "debs", "nvidia_container_toolkit_debs_dir": "/nonexistent"},
                 "/nonexistent on the controller lacks libnvidia-container1_1.17.8-1_amd64.deb",
                 id="toolkit-offline-folder-incomplete"),
]


def host_file(path: str) -> str:
    return subprocess.run(["docker", "exec", CONTAINER, "cat", path], capture_output=True, text=True).stdout


def host_sh(script: str) -> None:
    docker_sh(CONTAINER, script)


@pytest.mark.parametrize("bad, message", BAD_VALUES)
def test_bad_value_is_refused_before_any_change(converged_hosts, tmp_path, bad, message):
    before = host_file("/etc/docker/daemon.json")
    extra = tmp_path / "bad.json"
    extra.write_text(json.dumps(bad))
    run = run_playbook("playbooks/host.yml", "--limit", HOST, "-e", f"@{extra}")
    assert run.rc != 0, run.tail(3000)
    assert message in " ".join(run.output.split()), run.tail(3000)
    assert run.recap[HOST]["changed"] == 0, run.tail(3000)
    assert host_file("/etc/docker/daemon.json") == before


def test_invalid_existing_daemon_json_is_left_alone(converged_hosts):
    original = host_file("/etc/docker/daemon.json")
    broken = '{"log-driver": "json-file",, "registry-mirrors": []}\n'
    host_sh(f"cp /etc/docker/daemon.json /root/daemon.json.keep && printf '%s' '{broken}' > /etc/docker/daemon.json")
    try:
        run = run_playbook("playbooks/host.yml", "--limit", HOST)
        assert run.rc != 0
        text = " ".join(run.output.split())
        assert "/etc/docker/daemon.json on labhost-1 is not valid JSON" in text
        assert "never overwrites what it cannot read" in text
        assert run.recap[HOST]["changed"] == 0
        assert host_file("/etc/docker/daemon.json") == broken
    finally:
        host_sh("cp /root/daemon.json.keep /etc/docker/daemon.json && rm /root/daemon.json.keep")
    assert host_file("/etc/docker/daemon.json") == original


def test_key_also_passed_as_a_flag_in_a_drop_in_is_refused(converged_hosts):
    drop_in = "/etc/systemd/system/docker.service.d/10-admin-mirror.conf"
    host_sh(
        "mkdir -p /etc/systemd/system/docker.service.d && printf '%s\\n' '[Service]' 'ExecStart=' "
        "'ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock "
        f"--registry-mirror=https://mirror.admin.example' > {drop_in} && systemctl daemon-reload"
    )
    try:
        run = run_playbook("playbooks/host.yml", "--limit", HOST)
        assert run.rc != 0
        text = " ".join(run.output.split())
        assert "already gets registry-mirrors as command-line flag(s)" in text
        assert drop_in in text
        assert run.recap[HOST]["changed"] == 0
    finally:
        host_sh(f"rm -f {drop_in} && systemctl daemon-reload")
