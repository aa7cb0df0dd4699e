"""Which of site.yml's stages a run's --tags and --skip-tags select, and whose
inputs its preflight then checks.

- effdet_lab.lab.stage_runs(stage, ansible_run_tags, ansible_skip_tags): whether
  the stage's play may run any task. The stage plays (host, image, container,
  slurm, effdet) name their hosts with it, so that a run for another stage
  (`--tags host`) does not run their `always` tasks: the argument-spec check
  Ansible adds to every role of a play and the check-mode guard, for every host.
- effdet_lab.lab.roles_to_check(roles, ansible_run_tags, ansible_skip_tags): the
  roles, of those given and in their order, whose inputs playbooks/preflight.yml
  checks: the roles of every stage selected.

A stage is selected where one of its tags is asked for and its play's tag
(the first) is not skipped. Where the run asks for a tag that no stage has
(`all`, the default; `always`, `tagged`, `untagged`, or any other), every stage
counts as selected: nothing is left out by a guess.

The host layer (docker_engine, nvidia_container_toolkit, docker_daemon) reads
no other stage's inputs (tests/unit/test_stages.py holds the roles to it), so a
run of the host layer alone checks those three roles only. Every later stage
reads the inputs of several others (the image those of the container and of
effdet_tasks, effdet those of the image, the container and slurm), so any of
them checks every role, as a whole site.yml does.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple

HOST_ROLES = ("docker_engine", "nvidia_container_toolkit", "docker_daemon")
EVERY_ROLE = "*"


class Stage(NamedTuple):
    tags: tuple[str, ...]           # the play's tag first, then the tags of tasks inside it
    roles: tuple[str, ...]          # whose inputs it reads; EVERY_ROLE for all


STAGES: dict[str, Stage] = {
    "host": Stage(("host",), HOST_ROLES),
    "image": Stage(("image",), (EVERY_ROLE,)),
    "container": Stage(("container",), (EVERY_ROLE,)),
    "slurm": Stage(("slurm",), (EVERY_ROLE,)),
    "effdet": Stage(("effdet", "data", "train", "export", "benchmark", "infer"), (EVERY_ROLE,)),
    "verify": Stage(("verify",), (EVERY_ROLE,)),
}
KNOWN_TAGS = frozenset(tag for stage in STAGES.values() for tag in stage.tags)


def _tags(value: Any, empty: Iterable[str]) -> set[str]:
    if value is None or value == "":
        return set(empty)
    if isinstance(value, str):
        return {value}
    return {str(tag) for tag in value}


def selected_stages(run_tags: Any = None, skip_tags: Any = None) -> list[str]:
    """The stages, in site.yml's order, that these tags select."""
    run = _tags(run_tags, ["all"])
    skip = _tags(skip_tags, [])
    every = bool(run - KNOWN_TAGS)
    return [name for name, stage in STAGES.items()
            if stage.tags[0] not in skip and (every or run & set(stage.tags))]


def stage_runs(stage: str, run_tags: Any = None, skip_tags: Any = None) -> bool:
    if stage not in STAGES:
        raise ValueError(f"stage_runs: {stage!r} is not a stage of site.yml ({', '.join(STAGES)})")
    return stage in selected_stages(run_tags, skip_tags)


def roles_to_check(roles: Iterable[str], run_tags: Any = None, skip_tags: Any = None) -> list[str]:
    wanted: set[str] = set()
    for name in selected_stages(run_tags, skip_tags):
        wanted.update(STAGES[name].roles)
    return [role for role in roles if EVERY_ROLE in wanted or role in wanted]


class FilterModule:
    def filters(self) -> dict:
        return {"stage_runs": stage_runs, "roles_to_check": roles_to_check}
