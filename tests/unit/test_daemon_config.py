"""The pure daemon.json logic of the docker_daemon role."""
from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "docker_daemon" / "filter_plugins" / "daemon_config.py"
dc = load_module(PLUGIN, "daemon_config")

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


ADMIN_NESTED = {
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "features": {"buildkit": True},
    "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 64000, "Soft": 64000}},
    "runtimes": {"admin-runc": {"path": "/usr/sbin/runc", "runtimeArgs": ["--debug"]},
                 "nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": ["--log=/x"]}},
    "labels": ["lab=vision"],
}


def test_merge_goes_to_any_depth():
    merged = dc.daemon_config_merge(
        ADMIN_NESTED,
        {"log-opts": {"max-size": "50m"}, "features": {"containerd-snapshotter": False},
         "default-ulimits": {"nproc": {"Name": "nproc", "Hard": 4096, "Soft": 4096}}, "labels": ["lab=ours"]},
        {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}},
    )
    assert merged["log-opts"] == {"max-size": "50m", "max-file": "3"}
    assert merged["features"] == {"buildkit": True, "containerd-snapshotter": False}
    assert set(merged["default-ulimits"]) == {"nofile", "nproc"}
    # A runtime we name keeps its own keys we do not set (the admin's runtimeArgs).
    assert merged["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": ["--log=/x"]}
    assert merged["runtimes"]["admin-runc"] == ADMIN_NESTED["runtimes"]["admin-runc"]
    # Lists we set replace the host's list.
    assert merged["labels"] == ["lab=ours"]
    assert ADMIN_NESTED["log-opts"] == {"max-size": "10m", "max-file": "3"}, "input must not be mutated"


def test_merged_nested_values_are_copies():
    owned = {"log-opts": {"max-size": "50m"}}
    merged = dc.daemon_config_merge({}, owned, {})
    merged["log-opts"]["max-size"] = "1k"
    assert owned["log-opts"]["max-size"] == "50m"


@pytest.mark.parametrize("existing, owned, runtimes, expected", [
    ({"runtimes": None}, {}, {"nvidia": {"path": "/x"}}, "runtimes is null in the host's file"),
    ({"runtimes": []}, {}, {"nvidia": {"path": "/x"}}, "runtimes is a list in the host's file"),
    ({"runtimes": {"nvidia": "/x"}}, {}, {"nvidia": {"path": "/x"}}, 'runtimes.nvidia is a string ("/x")'),
    ({"log-opts": ["max-size=1m"]}, {"log-opts": {"max-size": "2m"}}, {}, "log-opts is a list in the host's file"),
    ({"features": True}, {"features": {"buildkit": True}}, {}, "features is a boolean in the host's file"),
])
def test_type_conflicts_are_named(existing, owned, runtimes, expected):
    conflicts = dc.daemon_config_type_conflicts(existing, owned, runtimes)
    assert len(conflicts) == 1 and conflicts[0].startswith(expected), conflicts


def test_no_type_conflict_where_we_replace_or_the_host_has_nothing():
    assert dc.daemon_config_type_conflicts({"labels": "x", "log-opts": None}, {"labels": ["a"]}, {}) == []
    assert dc.daemon_config_type_conflicts({}, {"log-opts": {"a": "b"}}, {"nvidia": {"path": "/x"}}) == []
    assert dc.daemon_config_type_conflicts(ADMIN_NESTED, {"log-opts": {"max-size": "1m"}}, {"nvidia": {"path": "/x"}}) == []


@pytest.mark.parametrize("config, bad", [
    ({"log-opts": "notadict"}, "log-opts"),
    ({"log-opts": {"max-size": 10}}, "log-opts"),
    ({"features": {"buildkit": "yes"}}, "features"),
    ({"debug": "true"}, "debug"),
    ({"mtu": "1500"}, "mtu"),
    ({"mtu": True}, "mtu"),
    ({"labels": "lab=vision"}, "labels"),
    ({"runtimes": {"x": {"runtimeArgs": []}}}, "runtimes"),
    ({"default-shm-size": 128}, "default-shm-size"),
])
def test_type_errors_name_the_key_and_the_rule(config, bad):
    errors = dc.daemon_config_type_errors(config, "docker_daemon_extra_config")
    assert len(errors) == 1 and errors[0]["var"] == f"docker_daemon_extra_config[{bad!r}]", errors
    assert errors[0]["value"] == config[bad] and errors[0]["rule"].startswith("dockerd expects")


def test_type_errors_pass_good_and_unknown_keys():
    good = {"log-opts": {"max-size": "10m"}, "debug": True, "mtu": 1500, "labels": ["a"], "some-new-key": [1, {}],
            "runtimes": {"x": {"path": "/x", "runtimeArgs": ["--a"]}}, "default-shm-size": "1G"}
    assert dc.daemon_config_type_errors(good, "v") == []


INFO = {
    "RegistryConfig": {"Mirrors": ["http://mirror:5000/"], "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.1.0.0/16"],
                       "IndexConfigs": {"docker.io": {"Secure": True}, "reg.lab:5000": {"Secure": False}}},
    "LiveRestoreEnabled": True, "Debug": False, "Labels": ["lab=vision"], "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "/usr/bin/nvidia-container-runtime"}},
    "LoggingDriver": "json-file", "Driver": "overlay2", "DockerRootDir": "/var/lib/docker",
}


def test_unapplied_is_empty_when_dockerd_shows_every_change():
    desired = {"registry-mirrors": ["http://mirror:5000"], "insecure-registries": ["reg.lab:5000", "10.1.0.0/16"],
               "live-restore": True, "runtimes": {"nvidia": {"path": "/x"}}, "labels": ["lab=vision"],
               "default-shm-size": "128M", "log-opts": {"max-size": "1m"}}
    assert dc.daemon_config_unapplied(INFO, desired, sorted(desired)) == []


def test_unapplied_names_what_dockerd_kept_old():
    desired = {"registry-mirrors": ["http://other:5000"], "insecure-registries": ["new.lab:5000"], "debug": True,
               "live-restore": False, "runtimes": {"sysbox": {"path": "/y"}}, "storage-driver": "vfs"}
    assert dc.daemon_config_unapplied(INFO, desired, sorted(desired)) == sorted(desired)
    # Only changed keys are looked at.
    assert dc.daemon_config_unapplied(INFO, desired, ["debug"]) == ["debug"]
