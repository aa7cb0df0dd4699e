"""Which stages a run's tags select (plugins/filter/stages.py), and what site.yml
does with it: the stage plays of the stages not selected have no hosts, and
playbooks/preflight.yml checks the inputs of the selected stages' roles only.
The playbook runs use inventory/gpu_hosts.example: the preflight and
--list-hosts touch no host."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
stages = load_module(REPO / "plugins" / "filter" / "stages.py", "effdet_stages")
sys.path.insert(0, str(REPO / "tools"))
import role_docs  # noqa: E402

PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
ALL_ROLES = ["docker_engine", "nvidia_container_toolkit", "docker_daemon", "lab_image", "lab_container",
             "effdet_tasks", "slurm"]
EVERY_STAGE = list(stages.STAGES)


@pytest.mark.parametrize(("run", "skip", "expected"), [
    (None, None, EVERY_STAGE),
    (["all"], [], EVERY_STAGE),
    (["host"], [], ["host"]),
    (["train"], [], ["effdet"]),
    (["data", "export"], [], ["effdet"]),
    (["host", "image"], [], ["host", "image"]),
    (["all"], ["image", "slurm"], ["host", "container", "effdet", "verify"]),
    (["host", "train"], ["host"], ["effdet"]),
    (["host"], ["host"], []),
    (["all"], ["train"], EVERY_STAGE),               # a task tag skipped: the stage's other tasks still run
    (["always"], [], EVERY_STAGE),                   # the checks only: every stage's
    (["effdet-lab-checks-only"], [], EVERY_STAGE),   # a tag no stage has: nothing is left out by a guess
    (["host", "no-such-tag"], [], EVERY_STAGE),
    (["tagged"], [], EVERY_STAGE),
    ("host", "", ["host"]),                          # one tag as a string
])
def test_selected_stages(run, skip, expected):
    assert stages.selected_stages(run, skip) == expected


def test_roles_to_check_keeps_the_order_given():
    assert stages.roles_to_check(ALL_ROLES, ["host"], []) == ["docker_engine", "nvidia_container_toolkit",
                                                              "docker_daemon"]
    assert stages.roles_to_check(list(reversed(ALL_ROLES)), ["host"], []) == [
        "docker_daemon", "nvidia_container_toolkit", "docker_engine"]
    for tags in (["all"], ["image"], ["container"], ["slurm"], ["infer"], ["verify"], ["host", "image"]):
        assert stages.roles_to_check(ALL_ROLES, tags, []) == ALL_ROLES, tags
    assert stages.roles_to_check(ALL_ROLES, ["host"], ["host"]) == []


def test_an_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="'hosts' is not a stage"):
        stages.stage_runs("hosts", ["all"], [])


def tags_in(node: object) -> set[str]:
    """Every tag a YAML tree of plays or tasks names."""
    found: set[str] = set()
    if isinstance(node, dict):
        tags = node.get("tags")
        if tags is not None:
            found |= {tags} if isinstance(tags, str) else set(tags)
        for value in node.values():
            found |= tags_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= tags_in(value)
    return found


def site_plays() -> list[tuple[str, dict]]:
    """site.yml's imported playbooks' plays, with the tags site.yml puts on each import."""
    plays = []
    for entry in yaml.safe_load((REPO / "site.yml").read_text()):
        path = REPO / entry["ansible.builtin.import_playbook"]
        for play in yaml.safe_load(path.read_text()):
            plays.append((path.name, play))
    return plays


def test_every_tag_of_site_yml_belongs_to_a_stage():
    """A tag inside a stage that the map does not know would make `--tags <it>` check every role (safe),
    but the stage's play would then have no hosts: every tag must be known, and in its own stage."""
    yml = [*(REPO / "playbooks").rglob("*.yml"), *(REPO / "roles").rglob("tasks/*.yml")]
    used: set[str] = set()
    for path in yml:
        used |= tags_in(yaml.safe_load(path.read_text()))
    assert used - {"always", "status"} <= stages.KNOWN_TAGS
    effdet = tags_in(yaml.safe_load((REPO / "roles" / "effdet_tasks" / "tasks" / "main.yml").read_text()))
    assert effdet - {"always"} <= set(stages.STAGES["effdet"].tags)


def test_every_stage_play_names_its_hosts_by_its_stage():
    """The play's tag is its stage's first tag, and its hosts pattern asks stage_runs about that stage
    (the preflight, tagged always, runs everywhere; verify runs on the controller and has no always task)."""
    seen = set()
    for name, play in site_plays():
        tag = play["tags"][0]
        if tag in ("always", "verify"):
            continue
        assert stages.STAGES[tag].tags[0] == tag, name
        assert re.search(rf"'{tag}' \| effdet_lab\.lab\.stage_runs\(ansible_run_tags, ansible_skip_tags\)",
                         play["hosts"]), name
        seen.add(tag)
    assert seen == set(stages.STAGES) - {"verify"}


def option_names(role: str) -> set[str]:
    return set(role_docs.spec_options(REPO / "roles" / role))


def test_the_host_layer_reads_no_later_stages_inputs():
    """What makes checking the host layer's roles alone enough for a run of the host layer alone."""
    later = set().union(*(option_names(role) for role in ALL_ROLES if role not in stages.HOST_ROLES))
    for role in [*stages.HOST_ROLES, "apt_signed_source"]:
        for path in sorted((REPO / "roles" / role).rglob("*")):
            if path.is_file() and path.suffix in (".yml", ".j2", ".py"):
                words = set(re.findall(r"[a-z][a-z0-9_]+", path.read_text()))
                assert not words & later, (path, words & later)
    host = [(name, play) for name, play in site_plays() if name == "host.yml"]
    assert len(host) == 1


def test_the_host_play_skips_only_checks_its_preflights_made():
    """host.yml imports its roles without their argument-spec check: its pre_tasks ran each role's
    "preflight" entry point, which must take exactly the options of "main"."""
    play = yaml.safe_load((REPO / "playbooks" / "host.yml").read_text())[0]
    preflights = [task["ansible.builtin.include_role"] for task in play["pre_tasks"]]
    imports = [task["ansible.builtin.import_role"] for task in play["tasks"]]
    assert [item["name"] for item in imports] == [item["name"] for item in preflights] == list(stages.HOST_ROLES)
    assert all(item["tasks_from"] == "preflight" for item in preflights)
    for item in imports:
        assert item["rolespec_validate"] is False
        specs = role_docs.load_specs(REPO / "roles" / item["name"])
        assert specs["preflight"]["options"] == specs["main"]["options"], item["name"]


def test_every_role_with_rules_is_checked_by_the_preflight():
    play = yaml.safe_load((REPO / "playbooks" / "preflight.yml").read_text())[0]
    with_rules = {path.parent.parent.name for path in (REPO / "roles").glob("*/tasks/validate.yml")}
    assert set(play["vars"]["preflight_rule_roles"]) == with_rules
    assert play["vars"]["preflight_roles"] == ALL_ROLES


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    inventory = tmp_path_factory.mktemp("stages") / "gpu_hosts.yml"
    inventory.write_text((REPO / "inventory" / "gpu_hosts.example").read_text())
    return inventory


def play(example: Path, playbook: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PLAYBOOK), "-i", str(example), playbook, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_list_hosts_per_stage(example):
    """ansible-playbook --list-hosts: the stage plays a run does not select have no hosts."""
    def hosts(*args: str) -> dict[str, int]:
        run = play(example, "site.yml", "--list-hosts", *args)
        assert run.returncode == 0, run.stdout + run.stderr
        found = re.findall(r"play #\d+ \([^)]*\): (.+?)\tTAGS: \[([^]]*)\]\n(?:\s+pattern: .*\n)?\s+hosts \((\d+)\)",
                           run.stdout)
        return {tags: int(count) for _name, tags, count in found}

    assert hosts() == {"always": 4, "host": 4, "image": 4, "container": 4, "slurm": 0, "effdet": 4, "verify": 1}
    assert hosts("--tags", "host") == {"always": 4, "host": 4, "image": 0, "container": 0, "slurm": 0,
                                       "effdet": 0, "verify": 1}
    assert hosts("--tags", "export", "--skip-tags", "host") == {
        "always": 4, "host": 0, "image": 0, "container": 0, "slurm": 0, "effdet": 4, "verify": 1}


@pytest.mark.parametrize(("tags", "refused"), [
    ((), True), (("--tags", "image"), True), (("--tags", "train"), True),
    (("--tags", "effdet-lab-checks-only"), True), (("--tags", "host"), False)])
def test_the_preflight_checks_the_selected_stages_inputs(example, tags, refused):
    """A bad lab_image value: refused by every run that may build or use the image, not by a run of the
    host layer alone."""
    run = play(example, "playbooks/preflight.yml", *tags, "-e", "lab_image_profile=no-such-profile")
    out = run.stdout + run.stderr
    if refused:
        assert run.returncode != 0
        assert 'lab_image_profile = "no-such-profile" breaks the rule: unset, or one of the profiles' in out
    else:
        assert run.returncode == 0, out
        assert "lab_image :" not in out and "item=lab_image" not in out


def test_a_run_of_the_host_layer_still_refuses_its_own_bad_inputs(example):
    run = play(example, "playbooks/preflight.yml", "--tags", "host", "-e",
               '{"docker_daemon_registry_mirrors": ["ftp://mirror.example"]}')
    assert run.returncode != 0
    assert "docker_daemon_registry_mirrors" in run.stdout + run.stderr
