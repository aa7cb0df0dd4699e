"""plugins/strategy/mitogen_linear.py loads the Jinja plugins in the controller's main
process before it forks a worker per task: a worker finds this collection's filters
and Ansible's own already imported. A probe filter, run in the worker, reports what was
imported before it; Ansible's own linear strategy is the control (nothing preloaded)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
OURS = "ansible_collections.effdet_lab.lab.plugins.filter.slurm_cluster"
# Ansible's own test plugins (the template below calls none): loaded in the worker only if the
# parent did. (Its filters cannot tell: resolving the probe filter loads every filter file.)
BUILTIN = "ansible.plugins.test."

PROBE = f'''
import sys


def probe_loaded(_value):
    return {{{OURS!r}: {OURS!r} in sys.modules,
            {BUILTIN!r}: any(name.startswith({BUILTIN!r}) for name in sys.modules)}}


class FilterModule:
    def filters(self):
        return {{"probe_loaded": probe_loaded}}
'''

PLAY = """---
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Probe
      ansible.builtin.debug:
        msg: "PROBE {{ 'x' | probe_loaded | to_json }}"
"""


def loaded_in_worker(tmp_path: Path, strategy: str) -> dict[str, bool]:
    (tmp_path / "filters").mkdir(exist_ok=True)
    (tmp_path / "filters" / "probe.py").write_text(PROBE)
    (tmp_path / "play.yml").write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STRATEGY": strategy,
           "ANSIBLE_FILTER_PLUGINS": str(tmp_path / "filters"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), str(tmp_path / "play.yml")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    said = run.stdout.split("PROBE ", 1)[1]
    return json.loads(said[:said.index("}") + 1].replace('\\"', '"'))


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_the_worker_finds_the_filters_loaded(tmp_path):
    assert loaded_in_worker(tmp_path, "mitogen_linear") == {OURS: True, BUILTIN: True}
    # the control: Ansible's own strategy imports neither before the worker needs it
    assert loaded_in_worker(tmp_path, "linear") == {OURS: False, BUILTIN: False}
