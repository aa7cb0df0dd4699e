"""The pure parts of the docker_daemon_check module: what the throw-away dockerd runs
on, and which of its log lines say why it stopped."""
from __future__ import annotations

from pathlib import Path
from pathload import load_module

MODULE = Path(__file__).resolve().parents[2] / "roles" / "docker_daemon" / "library" / "docker_daemon_check.py"
check = load_module(MODULE, "docker_daemon_check")

CANDIDATE = {
    "data-root": "/srv/docker", "hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"],
    "bip": "172.30.0.1/16", "icc": False, "metrics-addr": "0.0.0.0:9323", "live-restore": True,
    "registry-mirrors": ["http://mirror:5000"], "insecure-registries": ["reg.lab:5000"],
    "storage-driver": "overlay2", "log-opts": {"max-size": "10m"},
}


def test_check_copy_keeps_every_setting_that_does_not_clash(monkeypatch):
    monkeypatch.setattr(check, "_knows_ip6tables", lambda: True)
    copy = check.check_copy(CANDIDATE, "/srv/docker/.effdet-lab-check-x/data", "/run/effdet-lab-check-x/exec",
                            "/run/effdet-lab-check-x/d.sock")
    for key in ("registry-mirrors", "insecure-registries", "storage-driver", "log-opts"):
        assert copy[key] == CANDIDATE[key], key
    assert copy["hosts"] == ["unix:///run/effdet-lab-check-x/d.sock"]
    assert copy["data-root"] == "/srv/docker/.effdet-lab-check-x/data"
    assert copy["exec-root"] == "/run/effdet-lab-check-x/exec"
    assert copy["containerd-namespace"] == check.CHECK_NAMESPACE != "moby"
    assert copy["bridge"] == "none" and copy["iptables"] is False and copy["ip-masq"] is False
    for gone in ("bip", "icc", "metrics-addr", "live-restore"):
        assert gone not in copy, gone
    assert CANDIDATE["hosts"][0] == "unix:///var/run/docker.sock", "input must not be mutated"


def test_check_copy_leaves_out_ip6tables_where_dockerd_does_not_know_it(monkeypatch):
    monkeypatch.setattr(check, "_knows_ip6tables", lambda: False)
    assert "ip6tables" not in check.check_copy({}, "/d", "/e", "/s")


def test_dockerd_words_prefers_errors():
    log = "\n".join([
        'time="t" level=info msg="Starting up"',
        'time="t" level=warning msg="Running in rootless mode"',
        'time="t" level=info msg="[graphdriver] trying configured driver"',
        "failed to start daemon: insecure registry foo bar is not valid: invalid host \"foo bar\"",
    ])
    assert check.dockerd_words(log) == 'failed to start daemon: insecure registry foo bar is not valid: invalid host "foo bar"'


def test_dockerd_words_falls_back_to_the_last_lines():
    assert check.dockerd_words("a\nb\n\nc", limit=2) == "b | c"


STUB_DOCKERD = """#!/bin/sh
# Stand-in for a Docker 23+ dockerd: --help lists --validate; --validate reads the file.
case "$1" in
  --help) echo "      --validate    Validate daemon configuration and exit"; exit 0 ;;
  --validate) grep -q '"bad-key"' "$3" && {
                echo 'unable to configure the Docker daemon with file '"$3"': '\
'the following directives don'"'"'t match any configuration option: bad-key' >&2; exit 1; }
              echo "configuration OK"; exit 0 ;;
esac
exit 2
"""


def test_validate_flag_is_used_where_dockerd_has_it(tmp_path, monkeypatch):
    stub = tmp_path / "dockerd"
    stub.write_text(STUB_DOCKERD)
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(check, "_HELP", [])
    assert "--validate" in check._dockerd_help()
    good = check.validate_flag({"debug": True})
    assert good == {"accepted": True, "method": "dockerd --validate", "dockerd_said": "configuration OK"}
    bad = check.validate_flag({"bad-key": 1})
    assert bad["accepted"] is False
    assert "don't match any configuration option: bad-key" in bad["dockerd_said"]
