"""site.yml across the fleet: a bad host fails alone; teardown gives a host its own config back."""
from __future__ import annotations

import json
import subprocess

from conftest import REPO, PlaybookRun, labbox, playbook_command, run_playbook
from conftest import docker_sh as host_sh

HAND_MADE = {"log-level": "warn", "labels": ["rack=7"]}


def test_the_host_layer_re_run_changes_nothing_under_ansibles_own_strategy_too(converged_hosts):
    """ansible.cfg runs every play through mitogen (strategy mitogen_linear; every other test runs
    under it). ANSIBLE_STRATEGY=linear, Ansible's own strategy over plain ssh, stays a working way back:
    the host layer's no-change re-run through it succeeds on every host and changes nothing."""
    cmd, env = playbook_command("playbooks/host.yml")
    proc = subprocess.run(cmd, cwd=REPO, env={**env, "ANSIBLE_STRATEGY": "linear"}, capture_output=True,
                          text=True, timeout=900, check=False)
    run = PlaybookRun(proc.returncode, proc.stdout + proc.stderr)
    assert run.rc == 0, run.tail(4000)
    assert set(converged_hosts) <= set(run.recap) and run.changed() == 0, run.tail(4000)


def test_one_bad_host_is_reported_and_the_others_finish(converged_hosts):
    bad, good = "labhost-2", "labhost-1"
    host_sh("effdet-lab-host-2", "cp /etc/docker/daemon.json /root/keep.json && echo '{broken' > /etc/docker/daemon.json")
    try:
        run = run_playbook("site.yml", "--tags", "host")
        assert run.rc != 0
        assert run.recap[bad]["failed"] == 1
        assert run.recap[good]["failed"] == 0 and run.recap[good]["ok"] > 0
        assert "/etc/docker/daemon.json on labhost-2 is not valid JSON" in " ".join(run.output.split())
    finally:
        host_sh("effdet-lab-host-2", "cp /root/keep.json /etc/docker/daemon.json")


def test_teardown_restores_the_hosts_own_daemon_json(converged_hosts):
    """A third, bare host with a hand-made daemon.json: converge, then tear down with restore."""
    labbox("up", "--hosts", "3")
    try:
        host_sh("effdet-lab-host-3",
                f"mkdir -p /etc/docker && printf '%s' '{json.dumps(HAND_MADE)}' > /etc/docker/daemon.json")
        run = run_playbook("playbooks/host.yml", "--limit", "labhost-3")
        assert run.rc == 0, run.tail(4000)
        merged = json.loads(host_sh("effdet-lab-host-3", "cat /etc/docker/daemon.json").stdout)
        assert merged["labels"] == ["rack=7"] and "registry-mirrors" in merged
        down = run_playbook("playbooks/teardown.yml", "--limit", "labhost-3", "-e", "lab_teardown_restore_daemon_json=true")
        assert down.rc == 0, down.tail(4000)
        restored = host_sh("effdet-lab-host-3", "cat /etc/docker/daemon.json").stdout
        assert json.loads(restored) == HAND_MADE
        assert host_sh("effdet-lab-host-3", "systemctl is-active docker").stdout.strip() == "active"
        again = run_playbook("playbooks/teardown.yml", "--limit", "labhost-3", "-e", "lab_teardown_restore_daemon_json=true")
        assert again.rc == 0 and again.changed() == 0, again.tail(3000)
    finally:
        labbox("up", "--hosts", "2")


def test_bad_value_for_a_later_stage_fails_before_the_host_layer(converged_hosts, tmp_path):
    extra = tmp_path / "bad.json"
    extra.write_text(json.dumps({"effdet_tasks_model_name": "efficientdet-d9"}))
    run = run_playbook("site.yml", "-e", f"@{extra}")
    assert run.rc != 0
    text = " ".join(run.output.split())
    assert "effdet_tasks_model_name must be one of" in text, run.tail(3000)
    assert "docker_engine :" not in run.output, "no stage may start"
    assert all(r["changed"] == 0 for r in run.recap.values())
