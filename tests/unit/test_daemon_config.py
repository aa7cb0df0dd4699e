"""The pure daemon.json logic of the docker_daemon role."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "docker_daemon" / "filter_plugins" / "daemon_config.py"
spec = importlib.util.spec_from_file_location("daemon_config", PLUGIN)
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)

HAND_MADE = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m"},
    "runtimes": {"admin-runc": {"path": "/usr/sbin/runc"}},
    "registry-mirrors": ["https://old.example"],
}


@pytest.mark.parametrize("text, ok, error", [
    (None, True, ""),
    ("", True, ""),
    ("  \n", True, ""),
    ('{"debug": true}', True, ""),
    ('{"debug": true,}', False, "not valid JSON"),
    ("[1, 2]", False, "top level is a list"),
    ('"just a string"', False, "top level is a str"),
    ("{'single': 'quotes'}", False, "line 1 column 2"),
])
def test_parse(text, ok, error):
    parsed = dc.daemon_config_parse(text)
    assert parsed["ok"] is ok
    assert error in parsed["error"]


def test_merge_keeps_foreign_keys_and_runtimes():
    merged = dc.daemon_config_merge(
        HAND_MADE,
        {"registry-mirrors": ["http://mirror:5000"], "live-restore": True},
        {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}},
    )
    assert merged["log-driver"] == "json-file"
    assert merged["log-opts"] == {"max-size": "10m"}
    assert merged["registry-mirrors"] == ["http://mirror:5000"]
    assert merged["runtimes"] == {"admin-runc": {"path": "/usr/sbin/runc"},
                                  "nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}
    assert HAND_MADE["registry-mirrors"] == ["https://old.example"], "input must not be mutated"


def test_merge_without_runtimes_leaves_runtimes_alone():
    assert dc.daemon_config_merge(HAND_MADE, {}, {})["runtimes"] == HAND_MADE["runtimes"]
    assert "runtimes" not in dc.daemon_config_merge({}, {"debug": True}, {})


def test_merge_is_idempotent():
    once = dc.daemon_config_merge(HAND_MADE, {"live-restore": True}, {"nvidia": {"path": "/x"}})
    twice = dc.daemon_config_merge(once, {"live-restore": True}, {"nvidia": {"path": "/x"}})
    assert once == twice
    assert dc.daemon_config_changed_keys(once, twice) == []


@pytest.mark.parametrize("old, new, keys, restart", [
    ({}, {"live-restore": True}, ["live-restore"], False),
    ({"a": 1}, {}, ["a"], True),
    ({"registry-mirrors": []}, {"registry-mirrors": ["http://m"]}, ["registry-mirrors"], False),
    ({"runtimes": {}}, {"runtimes": {"nvidia": {"path": "/x"}}, "debug": True}, ["debug", "runtimes"], False),
    ({}, {"default-shm-size": "128M", "live-restore": True}, ["default-shm-size", "live-restore"], True),
    ({"storage-driver": "overlay2"}, {"storage-driver": "vfs"}, ["storage-driver"], True),
    ({"debug": None}, {}, ["debug"], False),
])
def test_changed_keys_and_restart(old, new, keys, restart):
    changed = dc.daemon_config_changed_keys(old, new)
    assert changed == keys
    assert dc.daemon_config_needs_restart(changed) is restart


SYSTEMCTL_SHOW = (
    "ExecStart={ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -H fd:// --registry-mirror=https://m.example "
    "--live-restore ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
)


@pytest.mark.parametrize("exec_start, keys, conflicts", [
    (SYSTEMCTL_SHOW, ["registry-mirrors", "live-restore", "runtimes"], ["registry-mirrors", "live-restore"]),
    (SYSTEMCTL_SHOW, ["runtimes", "debug"], []),
    ("/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock", ["registry-mirrors", "live-restore"], []),
    ("/usr/sbin/dockerd --add-runtime nvidia=/usr/bin/nvidia-container-runtime", ["runtimes"], ["runtimes"]),
    ("/usr/sbin/dockerd -D", ["debug"], ["debug"]),
    ("/usr/sbin/dockerd --insecure-registry r:5000", ["insecure-registries"], ["insecure-registries"]),
    ("/usr/sbin/dockerd --default-shm-size=64M", ["default-shm-size"], ["default-shm-size"]),
    ("/usr/sbin/dockerd --live-restore-extra", ["live-restore"], []),
    ("", ["registry-mirrors"], []),
])
def test_flag_conflicts(exec_start, keys, conflicts):
    assert dc.daemon_config_flag_conflicts(exec_start, keys) == conflicts
