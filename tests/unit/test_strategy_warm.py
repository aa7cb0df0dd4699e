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
# The probes' tasks (debug, set_fact) never reach the host, so the shim would run them in the main process
# (plugin_utils/in_main.py, tests/unit/test_in_main.py); these tests are about the workers.
WORKERS = {"EFFDET_IN_MAIN": "off"}

PROBE = f'''
import sys


def probe_loaded(_value):
    return {{{OURS!r}: {OURS!r} in sys.modules,
            {BUILTIN!r}: any(name.startswith({BUILTIN!r}) for name in sys.modules)}}


def probe_collections(_value):
    """What mitogen's planner adds to a collection module's search path, and what it should."""
    import ansible_mitogen.planner
    from ansible.collections.list import list_collection_dirs

    class Invocation:
        _extra_sys_paths = set()

    ansible_mitogen.planner._load_collections(Invocation)
    return {{"planner": ansible_mitogen.planner._load_collections.__name__,
            "same": Invocation._extra_sys_paths == {{p.decode() for p in list_collection_dirs()}},
            "count": len(Invocation._extra_sys_paths)}}


def probe_affinity(_value):
    """The CPUs the worker and the top-level process (its parent) may run on."""
    import os
    return {{"worker": sorted(os.sched_getaffinity(0)), "top": sorted(os.sched_getaffinity(os.getppid()))}}


class FilterModule:
    def filters(self):
        return {{"probe_loaded": probe_loaded, "probe_collections": probe_collections,
                "probe_affinity": probe_affinity}}
'''

PLAY = """---
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Probe
      ansible.builtin.debug:
        msg: "PROBE {{ 'x' | probe_loaded | to_json }}"
    - name: Probe the collections
      ansible.builtin.debug:
        msg: "COLLECTIONS {{ 'x' | probe_collections | to_json }}"
      when: (lookup('ansible.builtin.env', 'PROBE_COLLECTIONS') | length > 0) and 1 + 1 == 2
    - name: Probe the CPUs
      ansible.builtin.debug:
        msg: "AFFINITY {{ 'x' | probe_affinity | to_json }}"
      when: lookup('ansible.builtin.env', 'PROBE_AFFINITY') | length > 0
"""


def run_probe_play(tmp_path: Path, strategy: str, **env_extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "filters").mkdir(exist_ok=True)
    (tmp_path / "filters" / "probe.py").write_text(PROBE)
    (tmp_path / "play.yml").write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STRATEGY": strategy,
           "ANSIBLE_FILTER_PLUGINS": str(tmp_path / "filters"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           **WORKERS, **env_extra}
    return subprocess.run([str(ANSIBLE_PLAYBOOK), str(tmp_path / "play.yml")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def probe_play(tmp_path: Path, strategy: str, **env_extra: str) -> str:
    run = run_probe_play(tmp_path, strategy, **env_extra)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def said(stdout: str, marker: str) -> dict:
    text = stdout.split(f"{marker} ", 1)[1]
    return json.loads(text[:text.index("}") + 1].replace('\\"', '"'))


def loaded_in_worker(tmp_path: Path, strategy: str) -> dict[str, bool]:
    return said(probe_play(tmp_path, strategy), "PROBE")


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_the_worker_finds_the_filters_loaded(tmp_path):
    assert loaded_in_worker(tmp_path, "mitogen_linear") == {OURS: True, BUILTIN: True}
    # the control: Ansible's own strategy imports neither before the worker needs it
    assert loaded_in_worker(tmp_path, "linear") == {OURS: False, BUILTIN: False}


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_the_worker_reuses_the_main_process_list_of_collections(tmp_path):
    """mitogen's planner lists every installed collection before a collection's module runs; under
    mitogen_linear it takes the list the main process made once, which is the same list."""
    ours = said(probe_play(tmp_path, "mitogen_linear", PROBE_COLLECTIONS="1"), "COLLECTIONS")
    assert ours["planner"] == "load_collections_once" and ours["same"] and ours["count"] > 1


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_a_second_run_compiles_no_template(tmp_path):
    """The workers keep Jinja's compiled code in EFFDET_JINJA_CODE_CACHE; a second run finds every
    template and conditional there: no entry is added or rewritten, and the run says the same."""
    cache = tmp_path / "jinja"
    first = probe_play(tmp_path, "mitogen_linear", EFFDET_JINJA_CODE_CACHE=str(cache), PROBE_COLLECTIONS="1")
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(entries) >= 3     # the two messages and the conditional, at least
    second = probe_play(tmp_path, "mitogen_linear", EFFDET_JINJA_CODE_CACHE=str(cache), PROBE_COLLECTIONS="1")
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries
    assert said(first, "PROBE") == said(second, "PROBE") and said(first, "COLLECTIONS") == said(second, "COLLECTIONS")
    # Ansible's own strategy: no cache
    probe_play(tmp_path, "linear", EFFDET_JINJA_CODE_CACHE=str(tmp_path / "unused"))
    assert not (tmp_path / "unused").exists()


USABLE_CPUS = sorted(os.sched_getaffinity(0))


def affinity(tmp_path: Path, **env_extra: str) -> dict[str, list[int]]:
    return said(probe_play(tmp_path, "mitogen_linear", PROBE_AFFINITY="1", **env_extra), "AFFINITY")


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
@pytest.mark.skipif(len(USABLE_CPUS) < 2, reason="pinning is only visible with 2 CPUs or more")
def test_below_four_cpus_the_controller_is_not_pinned_to_one_cpu(tmp_path):
    """mitogen's policy pins the top-level process and every worker to one CPU below 4 CPUs (and to
    one each from 4 up); the shim leaves them to the scheduler below 4, or always with "off"."""
    pinned = affinity(tmp_path, EFFDET_MITOGEN_CPU_PINNING="mitogen")
    assert len(pinned["worker"]) == 1 and len(pinned["top"]) == 1
    assert affinity(tmp_path, EFFDET_MITOGEN_CPU_PINNING="off") == {"worker": USABLE_CPUS, "top": USABLE_CPUS}
    auto = affinity(tmp_path)      # the default, "auto"
    assert auto == (pinned if len(USABLE_CPUS) >= 4 else {"worker": USABLE_CPUS, "top": USABLE_CPUS})


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_a_pinning_choice_off_its_list_is_refused_by_name_value_and_rule(tmp_path):
    run = run_probe_play(tmp_path, "mitogen_linear", EFFDET_MITOGEN_CPU_PINNING="sometimes")
    assert run.returncode != 0
    assert "EFFDET_MITOGEN_CPU_PINNING = 'sometimes' breaks the rule: one of auto, mitogen, off" in run.stdout + run.stderr


COUNTER = '''
import ansible_mitogen.loaders
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Counts, in the main process, mitogen's module lookups before a fork (find_plugin with mod_type='')."""
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "count_warmups"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        loader = ansible_mitogen.loaders.module_loader
        original = loader.find_plugin
        self.count = 0

        def counted(*args, **kwargs):
            if kwargs.get("mod_type") == "":
                self.count += 1
            return original(*args, **kwargs)
        loader.find_plugin = counted

    def v2_playbook_on_stats(self, stats):
        print("WARMUPS %d" % self.count)
'''

FLEET_PLAY = """---
- hosts: fleet
  connection: local
  gather_facts: false
  tasks:
    - name: One
      ansible.builtin.debug:
        msg: "one {{ inventory_hostname }}"
    - name: Two
      ansible.builtin.set_fact:
        probe_two: "{{ inventory_hostname }}"
    - name: Three
      ansible.builtin.debug:
        msg: "three {{ probe_two }}"
"""


def warmups(tmp_path: Path, strategy_plugins: str) -> tuple[int, list[str]]:
    (tmp_path / "callbacks").mkdir(exist_ok=True)
    (tmp_path / "callbacks" / "count_warmups.py").write_text(COUNTER)
    (tmp_path / "fleet.yml").write_text(FLEET_PLAY)
    (tmp_path / "hosts.ini").write_text("[fleet]\nh1\nh2\nh3\nh4\n\n[fleet:vars]\nansible_python_interpreter=" +
                                        str(REPO / ".venv" / "bin" / "python") + "\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STRATEGY": "mitogen_linear",
           "ANSIBLE_STRATEGY_PLUGINS": strategy_plugins, "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACK_PLUGINS": str(tmp_path / "callbacks"), "ANSIBLE_CALLBACKS_ENABLED": "count_warmups",
           **WORKERS}
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "fleet.yml")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    said_lines = sorted(line.strip() for line in run.stdout.splitlines() if '"msg":' in line or "msg:" in line)
    return int(run.stdout.split("WARMUPS ", 1)[1].split()[0]), said_lines


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs the project's venv (make venv)")
def test_the_plugins_are_looked_up_once_per_action_not_per_host(tmp_path):
    """mitogen looks up the task's plugins before each of the 12 forks (4 hosts, 3 tasks); the shim once
    per action (debug, set_fact) while the loaders' caches stay; the tasks say the same either way."""
    import ansible_mitogen
    upstream = str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")
    ours, ours_said = warmups(tmp_path, str(REPO / "plugins" / "strategy"))
    theirs, theirs_said = warmups(tmp_path, upstream)
    assert theirs == 12
    assert ours == 2
    assert ours_said == theirs_said and len(ours_said) == 8


def test_a_loader_cache_emptied_since_counts_as_cold(tmp_path):
    """The shim skips mitogen's lookups only while the caches they filled are still the loaders' own:
    a role adding its plugin folder replaces the action loader's cache (this ansible-core)."""
    import importlib.util

    import ansible_mitogen.loaders
    spec = importlib.util.spec_from_file_location("shim_for_test", REPO / "plugins" / "strategy" / "mitogen_linear.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    warmed = shim.plugin_caches()
    assert shim.same_caches(warmed, shim.plugin_caches())
    (tmp_path / "action_plugins").mkdir()
    ansible_mitogen.loaders.action_loader.add_directory(str(tmp_path / "action_plugins"))
    assert not shim.same_caches(warmed, shim.plugin_caches())
