"""daemon.json on a real lab server: the admin's nested settings merged at any depth,
every change asked of dockerd first and checked after, one writer, bounded backups,
a toolkit version moved through its hold, and check mode on a bare host.

One bare scratch host (scratch-4) serves the whole module, in order: it starts
bare with a hand-written daemon.json, which is what the check-mode test needs,
and the later tests build on its first converge.
"""
from __future__ import annotations

import json
import re
import time
from typing import Iterator

import pytest

from conftest import PlaybookRun, ScratchHost, remove_scratch_host, start_scratch_host


CONFIG = "/etc/docker/daemon.json"
HAND_MADE = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "features": {"buildkit": True},
    "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 8192, "Soft": 4096}},
    "runtimes": {"admin-runc": {"path": "/usr/sbin/runc", "runtimeArgs": ["--debug"]}},
    "labels": ["lab=vision"],
}
NESTED = {"docker_daemon_extra_config": {
    "log-opts": {"max-size": "50m"},
    "default-ulimits": {"nproc": {"Name": "nproc", "Hard": 4096, "Soft": 4096}},
}}


@pytest.fixture(scope="module")
def host(lab_hosts) -> Iterator[ScratchHost]:
    scratch = start_scratch_host(4)
    scratch.sh(f"mkdir -p /etc/docker && printf '%s' '{json.dumps(HAND_MADE)}' > {CONFIG}")
    try:
        yield scratch
    finally:
        remove_scratch_host(scratch)


def extra(tmp_path, values: dict) -> str:
    path = tmp_path / f"extra-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(values))
    return f"@{path}"


def converge(host: ScratchHost, tmp_path, values: dict | None = None) -> PlaybookRun:
    return host.play("playbooks/host.yml", "-e", extra(tmp_path, {**NESTED, **(values or {})}))


def changed_tasks(run: PlaybookRun) -> set[tuple[str, str]]:
    """(role, task name) of the tasks that reported a change."""
    names, current = set(), ("", "")
    for line in run.output.splitlines():
        task = re.match(r"^(?:TASK|RUNNING HANDLER) \[(?:([\w.]+) : )?(.*)\] \*+$", line)
        if task:
            current = (task.group(1) or "", task.group(2))
        elif line.startswith("changed:"):
            names.add(current)
    return names


def dockerd_pid(host: ScratchHost) -> str:
    return host.sh("systemctl show docker -p MainPID --value").stdout.strip()


def docker0(host: ScratchHost) -> str:
    """The host's docker0 bridge (index and name), which the throw-away dockerd must never touch."""
    return host.sh("ip -o link show docker0 | cut -d' ' -f1-2").stdout.strip()


def test_check_mode_on_a_bare_host_changes_nothing_and_names_the_changes(host, tmp_path):
    started = time.monotonic()
    run = host.play("site.yml", "--check", "--diff", "-e", extra(tmp_path, NESTED))
    check_s = time.monotonic() - started
    assert run.rc == 0, run.tail(4000)
    assert run.recap[host.name]["failed"] == 0
    assert run.recap[host.name]["changed"] > 0
    would = changed_tasks(run)
    assert ("docker_engine", "Install the packages wanted (the engine unless one was adopted, and the Python client)"
            ) in would, sorted(would)
    assert ("nvidia_container_toolkit", "Report the packages a real run installs from the new source (check mode)"
            ) in would, sorted(would)
    assert ("docker_daemon", "Write daemon.json (validated, previous file backed up)") in would, sorted(would)
    assert '+  "registry-mirrors": [' in run.output, "--diff shows the merged daemon.json"
    assert host.sh("command -v dockerd", check=False).returncode != 0, "check mode installed Docker"
    assert json.loads(host.read(CONFIG)) == HAND_MADE
    assert "would be" in run.output  # later stages say what waits for the host layer
    # The real run then makes the host-layer changes check mode named.
    started = time.monotonic()
    real = converge(host, tmp_path)
    real_s = time.monotonic() - started
    assert real.rc == 0, real.tail(4000)
    made = changed_tasks(real)
    print(f"\nsite.yml --check --diff on a bare host: {check_s:.1f} s, changed={run.recap[host.name]['changed']}, "
          f"failed=0 ({len(would)} tasks would change); then the real host layer: {real_s:.1f} s, "
          f"changed={real.recap[host.name]['changed']} ({len(made)} tasks)")
    # Every role that changes the host for real said so in check mode. (Some tasks
    # differ by name: check mode cannot install from a source it did not add, and
    # says what it would install instead.)
    assert {role for role, _ in made} <= {role for role, _ in would}, (sorted(made), sorted(would))


def test_nested_settings_survive_a_converge_that_sets_nested_keys(host, tmp_path):
    config = json.loads(host.read(CONFIG))
    assert config["log-opts"] == {"max-size": "50m", "max-file": "3"}
    wanted_ulimits = NESTED["docker_daemon_extra_config"]["default-ulimits"]
    assert config["default-ulimits"] == {**HAND_MADE["default-ulimits"], **wanted_ulimits}
    assert config["runtimes"]["admin-runc"] == HAND_MADE["runtimes"]["admin-runc"]
    assert config["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime"}
    for key in ("log-driver", "features", "labels"):
        assert config[key] == HAND_MADE[key], key
    info = json.loads(host.sh("docker info --format '{{json .}}'").stdout)
    assert {"admin-runc", "nvidia"} <= set(info["Runtimes"])
    assert info["LiveRestoreEnabled"] is True
    again = converge(host, tmp_path)
    assert again.rc == 0 and again.changed() == 0, again.tail(3000)


def test_host_value_of_the_wrong_type_is_refused_before_any_write(host, tmp_path):
    good = host.read(CONFIG)
    broken = {**json.loads(good), "runtimes": None}
    host.sh(f"cp {CONFIG} /root/keep.json && printf '%s' '{json.dumps(broken)}' > {CONFIG}")
    try:
        run = converge(host, tmp_path)
        assert run.rc != 0
        text = " ".join(run.output.split())
        assert "runtimes is null in the host's file, where a JSON object belongs" in text, run.tail(3000)
        assert run.recap[host.name]["changed"] == 0
        assert json.loads(host.read(CONFIG)) == broken
    finally:
        host.sh(f"cp /root/keep.json {CONFIG}")


def test_a_value_dockerd_rejects_leaves_it_on_the_last_accepted_file(host, tmp_path):
    """The reload path (insecure-registries is reloadable): Debian 12's dockerd 20.10 has
    no --validate, so a throw-away dockerd is asked. It refuses; nothing is written."""
    accepted = host.read(CONFIG)
    pid = dockerd_pid(host)
    bridge = docker0(host)
    assert bridge.endswith("docker0:"), bridge
    run = converge(host, tmp_path, {"docker_daemon_insecure_registries": ["10.0.0.0/33"]})
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "rejects the new /etc/docker/daemon.json (changed keys: insecure-registries" in text, run.tail(3000)
    assert "insecure registry 10.0.0.0/33 is not valid" in text, "dockerd's own words"
    assert run.recap[host.name]["changed"] == 0
    assert host.read(CONFIG) == accepted
    assert dockerd_pid(host) == pid
    assert docker0(host) == bridge, "the throw-away dockerd touched the host's docker0"
    assert host.sh("ls -a /var/lib/docker /run | grep -c effdet-lab-check || true").stdout.strip() == "0"
    # A pattern catches the plainly malformed value before dockerd is asked.
    typo = converge(host, tmp_path, {"docker_daemon_insecure_registries": ["foo bar"]})
    assert typo.rc != 0
    assert ('docker_daemon_insecure_registries = ["foo bar"] breaks the rule: every insecure registry is'
            in " ".join(typo.output.split())), typo.tail(3000)
    good = converge(host, tmp_path)
    assert good.rc == 0 and good.changed() == 0, good.tail(3000)


def test_reload_is_checked_and_backups_do_not_pile_up(host, tmp_path):
    bridge = docker0(host)
    for debug in (True, False, True):
        run = converge(host, tmp_path, {"docker_daemon_extra_config": {
            **NESTED["docker_daemon_extra_config"], "debug": debug}})
        assert run.rc == 0, run.tail(3000)
        assert "Reload dockerd (debug)" in run.output
        info = json.loads(host.sh("docker info --format '{{json .}}'").stdout)
        assert info["Debug"] is debug
        assert docker0(host) == bridge, "a reload keeps the host's docker0"
    backups = host.sh(f"ls {CONFIG}.*~").stdout.split()
    assert len(backups) == 3, backups


def test_toolkit_version_moves_through_its_hold(host, tmp_path):
    def versions() -> set[str]:
        out = host.sh("dpkg-query -W -f '${Version} ${Status}\\n' nvidia-container-toolkit "
                      "nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1").stdout
        return set(out.splitlines())

    assert versions() == {"1.17.8-1 hold ok installed"}
    older = {"nvidia_container_toolkit_version": "1.17.7-1"}
    down = converge(host, tmp_path, older)
    assert down.rc == 0, down.tail(3000)
    assert versions() == {"1.17.7-1 hold ok installed"}
    again = converge(host, tmp_path, older)
    assert again.rc == 0 and again.changed() == 0, again.tail(3000)
    up = converge(host, tmp_path)
    assert up.rc == 0, up.tail(3000)
    assert versions() == {"1.17.8-1 hold ok installed"}
    # An admin lifts the hold of one package: the next run (which asks dpkg once and skips the hold task
    # when every package is held) sees it and holds it again, and the run after changes nothing.
    host.sh("echo 'libnvidia-container1 install' | dpkg --set-selections")
    assert "1.17.8-1 install ok installed" in versions()
    rehold = converge(host, tmp_path)
    assert rehold.rc == 0, rehold.tail(3000)
    assert changed_tasks(rehold) == {("nvidia_container_toolkit", "Hold the toolkit packages at the pinned version")}
    assert versions() == {"1.17.8-1 hold ok installed"}
    settled = converge(host, tmp_path)
    assert settled.rc == 0 and settled.changed() == 0, settled.tail(3000)


def test_teardown_restores_the_hand_made_file_through_docker_daemon(host, tmp_path):
    down = host.play("playbooks/teardown.yml", "-e", "lab_teardown_restore_daemon_json=true")
    assert down.rc == 0, down.tail(3000)
    assert "docker_daemon : Ask dockerd whether it accepts the new configuration" in down.output
    assert json.loads(host.read(CONFIG)) == HAND_MADE
    info = json.loads(host.sh("docker info --format '{{json .}}'").stdout)
    assert "nvidia" not in info["Runtimes"] and info["LiveRestoreEnabled"] is False
    again = host.play("playbooks/teardown.yml", "-e", "lab_teardown_restore_daemon_json=true")
    assert again.rc == 0 and again.changed() == 0, again.tail(3000)
