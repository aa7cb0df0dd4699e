"""plugins/plugin_utils/in_main.py, through the strategy shim: a task that never reaches the host (a host skips
it, or its action runs on the controller only) runs in the controller's main process, and every task reports
what it reports with that off (EFFDET_IN_MAIN=off, a worker per host and task as in Ansible).

A callback records every result and loop item, and a filter records the process a template is rendered in."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")

RECORDER = '''
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Every result, one JSON line each, and the main process's pid."""
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, status, result):
        with open(os.environ["RECORD_RESULTS"], "a") as out:
            out.write(json.dumps({"task": result._task.get_name(), "host": result._host.get_name(),
                                  "status": status, "result": result._result}, default=str, sort_keys=True) + "\\n")

    def v2_playbook_on_start(self, playbook):
        with open(os.environ["RECORD_RESULTS"] + ".main", "w") as out:
            out.write(str(os.getpid()))

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)

    def v2_runner_item_on_ok(self, result):
        self._write("item ok", result)

    def v2_runner_item_on_failed(self, result):
        self._write("item failed", result)

    def v2_runner_item_on_skipped(self, result):
        self._write("item skipped", result)
'''

WHERE = '''
import os


def worked_out_in(value, label):
    """The `when` itself (value), after noting the process that evaluates it."""
    with open(os.environ["RECORD_RESULTS"] + ".where", "a") as out:
        out.write("%s %d\\n" % (label, os.getpid()))
    return value


class FilterModule:
    def filters(self):
        return {"worked_out_in": worked_out_in}
'''

PLAY = """---
- hosts: fleet
  connection: local
  gather_facts: false
  tasks:
    - name: A false when
      ansible.builtin.debug:
        msg: never
      when: false | worked_out_in('false')
    - name: A when that holds on some hosts (a module, run on the host)
      ansible.builtin.ping:
      when: (probe_runs | bool) | worked_out_in('some')
    - name: A when on an undefined variable
      ansible.builtin.debug:
        msg: never
      when: probe_not_defined_anywhere | bool
      ignore_errors: true
    - name: A loop with no items
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: "{{ [] }}"
    - name: A loop whose items each skip
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: [1, 2]
      when: item > 5
    - name: A loop on an undefined variable, skipped by its when
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: "{{ probe_no_such_list }}"
      when: false
    - name: A secret, skipped
      ansible.builtin.debug:
        msg: secret
      no_log: true
      when: not (probe_runs | bool)
      register: probe_secret
    - name: What the skipped secret registered
      ansible.builtin.debug:
        var: probe_secret
    - name: An include, skipped
      ansible.builtin.include_tasks: never.yml
      when: false
    - name: Delegated, skipped (always a worker)
      ansible.builtin.debug:
        msg: never
      delegate_to: h1
      when: false
    - name: A when with a lookup (always a worker)
      ansible.builtin.debug:
        msg: never
      when: lookup('ansible.builtin.env', 'PROBE_UNSET_VARIABLE') | length > 0
    - name: A fact for the next when
      ansible.builtin.set_fact:
        probe_fact: "{{ inventory_hostname == 'h2' }}"
    - name: A when on a fact set in this run
      ansible.builtin.debug:
        msg: "fact on {{ inventory_hostname }}"
      when: probe_fact | bool
    - name: A fact per item
      ansible.builtin.set_fact:
        probe_items: "{{ (probe_items | default([])) + [item * 2] }}"
      loop: [1, 2, 3]
    - name: An assert that holds
      ansible.builtin.assert:
        that: probe_items == [2, 4, 6]
        quiet: true
    - name: An assert that fails on h3
      ansible.builtin.assert:
        that: inventory_hostname != 'h3'
        fail_msg: "h3 breaks it"
      ignore_errors: true
    - name: A fail on h1
      ansible.builtin.fail:
        msg: "failed on {{ inventory_hostname }}"
      when: inventory_hostname == 'h1'
      ignore_errors: true
    - name: An argument spec
      ansible.builtin.validate_argument_spec:
        argument_spec:
          probe_runs: {type: bool, required: true}
        provided_arguments:
          probe_runs: "{{ probe_runs }}"
    - name: A secret fact
      ansible.builtin.set_fact:
        probe_hidden: "s3cret"
      no_log: true
    - name: Rendered where
      ansible.builtin.debug:
        msg: "{{ inventory_hostname | worked_out_in('debug') }}"
    - name: Rendered where, with until (always a worker)
      ansible.builtin.debug:
        msg: "{{ inventory_hostname | worked_out_in('until') }}"
      until: true
    - name: An include that runs
      ansible.builtin.include_tasks: included.yml
      when: inventory_hostname != 'h2'
    - name: A role included
      ansible.builtin.include_role:
        name: probe_role
"""

HOSTS = "[fleet]\nh1 probe_runs=true\nh2 probe_runs=false\nh3 probe_runs=false\n\n[fleet:vars]\n" \
        "ansible_python_interpreter=" + str(REPO / ".venv" / "bin" / "python") + "\n"


def run_play(tmp_path: Path, switch: str, play: str = PLAY, hosts: str = HOSTS
             ) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / switch
    (run_dir / "callbacks").mkdir(parents=True, exist_ok=True)
    (run_dir / "filters").mkdir(exist_ok=True)
    (run_dir / "callbacks" / "record_results.py").write_text(RECORDER)
    (run_dir / "filters" / "where.py").write_text(WHERE)
    (run_dir / "play.yml").write_text(play)
    (run_dir / "never.yml").write_text("---\n- name: Never\n  ansible.builtin.fail:\n")
    (run_dir / "included.yml").write_text("---\n- name: Included\n  ansible.builtin.debug:\n"
                                          "    msg: \"included on {{ inventory_hostname }}\"\n")
    (run_dir / "roles" / "probe_role" / "tasks").mkdir(parents=True, exist_ok=True)
    (run_dir / "roles" / "probe_role" / "tasks" / "main.yml").write_text(
        "---\n- name: In the role\n  ansible.builtin.set_fact:\n    probe_role_ran: true\n")
    (run_dir / "hosts.ini").write_text(hosts)
    record = run_dir / "results.jsonl"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACK_PLUGINS": str(run_dir / "callbacks"), "ANSIBLE_CALLBACKS_ENABLED": "record_results",
           "ANSIBLE_FILTER_PLUGINS": str(run_dir / "filters"), "RECORD_RESULTS": str(record),
           "ANSIBLE_ROLES_PATH": str(run_dir / "roles"), "EFFDET_IN_MAIN": switch}
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(run_dir / "hosts.ini"), str(run_dir / "play.yml")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    return run, record


def results(record: Path) -> list[dict]:
    return sorted((json.loads(line) for line in record.read_text().splitlines()),
                  key=lambda r: (r["task"], r["host"], r["status"], json.dumps(r["result"], sort_keys=True)))


def where(record: Path) -> tuple[int, dict[str, list[int]]]:
    """The main process's pid, and each labelled `when`'s pids, one per evaluation."""
    main = int(Path(str(record) + ".main").read_text())
    pids: dict[str, list[int]] = {}
    for line in Path(str(record) + ".where").read_text().splitlines():
        label, pid = line.split()
        pids.setdefault(label, []).append(int(pid))
    return main, pids


def test_every_task_reports_what_it_reports_with_a_worker_per_task(tmp_path):
    on, on_record = run_play(tmp_path, "on")
    off, off_record = run_play(tmp_path, "off")
    assert on.returncode == 0, on.stdout[-3000:] + on.stderr[-3000:]
    assert off.returncode == 0, off.stdout[-3000:] + off.stderr[-3000:]
    assert results(on_record) == results(off_record)
    by_task = {(r["task"], r["host"]): r for r in results(on_record) if not r["status"].startswith("item")}
    assert by_task[("A false when", "h1")]["status"] == "skipped"
    assert by_task[("A loop with no items", "h2")]["result"]["skipped_reason"] == "No items in the list"
    assert by_task[("A when on an undefined variable", "h3")]["status"] == "failed"
    assert by_task[("A secret, skipped", "h1")]["status"] == "skipped"
    assert by_task[("A secret, skipped", "h1")]["result"]["censored"].startswith("the output has been hidden")
    assert by_task[("What the skipped secret registered", "h1")]["result"]["probe_secret"]["skipped"] is True
    assert [h for (t, h), r in by_task.items() if t == "A when on a fact set in this run" and r["status"] == "ok"] \
        == ["h2"]
    assert [r["result"]["item"] for r in results(on_record)
            if r["status"] == "item ok" and r["task"] == "A fact per item" and r["host"] == "h1"] == [1, 2, 3]
    assert by_task[("An assert that fails on h3", "h3")]["status"] == "failed"
    assert by_task[("A fail on h1", "h1")]["result"]["msg"] == "failed on h1"
    assert by_task[("A secret fact", "h2")]["result"]["censored"].startswith("the output has been hidden")
    assert by_task[("Included", "h3")]["result"]["msg"] == "included on h3" and ("Included", "h2") not in by_task
    assert by_task[("probe_role : In the role", "h2")]["result"]["ansible_facts"] == {"probe_role_ran": True}
    assert on.stdout.split("PLAY RECAP", 1)[1] == off.stdout.split("PLAY RECAP", 1)[1]


def test_what_never_reaches_the_host_is_done_in_the_main_process(tmp_path):
    """A false when, and a controller-only action, in the main process; a true when there and again in the
    worker that runs the task; a task with until in a worker."""
    on, on_record = run_play(tmp_path, "on")
    assert on.returncode == 0, on.stdout[-3000:] + on.stderr[-3000:]
    main, pids = where(on_record)
    assert pids["false"] == [main] * 3                  # three hosts, no worker
    # h1's is worked out here and again in its worker; the `when` held, so h2's and h3's go straight to theirs
    assert sorted(pid == main for pid in pids["some"]) == [False, False, False, True]
    assert pids["debug"] == [main] * 3
    assert len(pids["until"]) == 3 and main not in pids["until"]

    off, off_record = run_play(tmp_path, "off")
    assert off.returncode == 0, off.stdout[-3000:] + off.stderr[-3000:]
    main, pids = where(off_record)
    assert main not in pids["false"] and len(set(pids["false"])) == 3
    assert main not in pids["some"] and len(pids["some"]) == 3
    assert main not in pids["debug"] and len(set(pids["debug"])) == 3


def test_a_switch_off_its_list_is_refused_by_name_value_and_rule(tmp_path):
    run, _ = run_play(tmp_path, "maybe")
    assert run.returncode != 0
    assert "EFFDET_IN_MAIN = 'maybe' breaks the rule: one of on, off" in run.stdout + run.stderr


FLEET_PLAY = """---
- hosts: fleet
  connection: local
  gather_facts: false
  tasks:
    - name: Rendered where, on a fleet
      ansible.builtin.debug:
        msg: "{{ inventory_hostname | worked_out_in('fleet') }}"
    - name: A fact per host
      ansible.builtin.set_fact:
        probe_number: "{{ inventory_hostname[1:] | int * 10 }}"
    - name: A fact per item, on a fleet
      ansible.builtin.set_fact:
        probe_items: "{{ (probe_items | default([])) + [item + probe_number | int] }}"
      loop: [1, 2]
    - name: An assert that fails on h5
      ansible.builtin.assert:
        that: probe_items[0] != 51
        fail_msg: "{{ inventory_hostname }} breaks it"
      ignore_errors: true
    - name: What each host has
      ansible.builtin.debug:
        var: probe_items
"""

FLEET = "[fleet]\n" + "".join(f"h{n}\n" for n in range(1, 7)) + "\n[fleet:vars]\nansible_python_interpreter=" \
    + str(REPO / ".venv" / "bin" / "python") + "\n"


def test_a_fleet_shares_the_controller_only_runs_out_with_a_batch_worker(tmp_path):
    """Six hosts: the main process runs three hosts' share of each controller-only task, and one batch
    worker the other three (in_main.batches on this machine's CPUs); the results are those of a worker
    per host and task."""
    on, on_record = run_play(tmp_path, "on", FLEET_PLAY, FLEET)
    off, off_record = run_play(tmp_path, "off", FLEET_PLAY, FLEET)
    assert on.returncode == 0, on.stdout[-3000:] + on.stderr[-3000:]
    assert off.returncode == 0, off.stdout[-3000:] + off.stderr[-3000:]
    assert results(on_record) == results(off_record)
    by_task = {(r["task"], r["host"]): r for r in results(on_record) if not r["status"].startswith("item")}
    assert by_task[("What each host has", "h6")]["result"]["probe_items"] == [61, 62]
    assert [h for (t, h), r in by_task.items() if t == "An assert that fails on h5" and r["status"] == "failed"] \
        == ["h5"]
    main, pids = where(on_record)
    if (os.cpu_count() or 1) >= 2 and len(os.sched_getaffinity(0)) >= 2:
        assert pids["fleet"].count(main) == 3
        others = [pid for pid in pids["fleet"] if pid != main]
        assert len(others) == 3 and len(set(others)) == 1     # one batch worker for the other three hosts
    else:
        assert pids["fleet"] == [main] * 6
    main, pids = where(off_record)
    assert main not in pids["fleet"] and len(set(pids["fleet"])) == 6


def test_batches_share_out_in_order():
    from pathload import load_module
    in_main = load_module(REPO / "plugins" / "plugin_utils" / "in_main.py", "effdet_in_main")
    assert in_main.batches([], 2) == []
    assert in_main.batches([1, 2, 3], 2) == [[1, 2, 3]]                         # below MIN_SPLIT: the main process
    assert in_main.batches(list(range(8)), 1) == [list(range(8))]                # one CPU
    assert in_main.batches(list(range(8)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert in_main.batches(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert in_main.batches(list(range(8)), 16) == [[0, 1], [2, 3], [4, 5], [6, 7]]   # at least MIN_SHARE each
