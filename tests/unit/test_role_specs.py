"""effdet_lab.lab.spec_options_without_defaults: the specs playbooks/preflight.yml
validates the inventory with. Every default goes at every depth and nothing
else does; the !unsafe tag is read as the string it marks; every role's real
spec keeps its options, types and choices."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
specs = load_module(REPO / "plugins" / "filter" / "role_specs.py", "effdet_role_specs")
sys.path.insert(0, str(REPO / "tools"))
import role_docs  # noqa: E402

PREFLIGHT = yaml.safe_load((REPO / "playbooks" / "preflight.yml").read_text())[0]

SPEC = """\
argument_specs:
  main:
    short_description: demo
    options:
      demo_uid:
        type: int
        default: !unsafe '{{ lab_image_uid | default(1001) }}'
      demo_mode:
        type: str
        choices: [a, b]
        default: a
      default:
        type: str
        description: an option named default stays
      demo_mounts:
        type: list
        elements: dict
        default: []
        options:
          source: {type: str, required: true, default: /data}
          options:
            type: dict
            default: {}
            options:
              ro: {type: bool, default: false}
  other:
    options:
      demo_other: {type: str, default: x}
"""


def defaults_in(options: dict) -> list[str]:
    """The options, at any depth, that still have a default."""
    found = []
    for name, option in options.items():
        found += [name] if "default" in option else []
        found += defaults_in(option.get("options") or {})
    return found


def test_every_default_goes_and_nothing_else():
    assert specs.spec_options_without_defaults(SPEC) == {
        "demo_uid": {"type": "int"},
        "demo_mode": {"type": "str", "choices": ["a", "b"]},
        "default": {"type": "str", "description": "an option named default stays"},
        "demo_mounts": {"type": "list", "elements": "dict", "options": {
            "source": {"type": "str", "required": True},
            "options": {"type": "dict", "options": {"ro": {"type": "bool"}}}}},
    }


def test_other_entry_point_and_no_options():
    assert specs.spec_options_without_defaults(SPEC, "other") == {"demo_other": {"type": "str"}}
    assert specs.spec_options_without_defaults("argument_specs: {main: {short_description: x}}") == {}


def test_a_missing_entry_point_is_an_error():
    with pytest.raises(KeyError):
        specs.spec_options_without_defaults(SPEC, "preflight")


@pytest.mark.parametrize("role", PREFLIGHT["vars"]["preflight_roles"])
def test_real_specs_keep_everything_but_defaults(role):
    role_dir = REPO / "roles" / role
    text = (role_dir / "meta" / "argument_specs.yml").read_text()
    stripped = specs.spec_options_without_defaults(text)
    original = role_docs.load_specs(role_dir)["main"]["options"]
    assert set(stripped) == set(original)
    for name, option in original.items():
        expected = {k: v for k, v in option.items() if k != "default"}
        if "options" in option:
            assert set(stripped[name]["options"]) == set(option["options"])
            expected.pop("options")
        got = {k: v for k, v in stripped[name].items() if k != "options"}
        assert got == expected, name
    assert not defaults_in(stripped)


def test_the_preflight_reads_every_role_with_a_main_spec_it_runs():
    """site.yml's stages: every role with inventory inputs is validated before any change."""
    assert set(PREFLIGHT["vars"]["preflight_roles"]) == {
        "docker_engine", "nvidia_container_toolkit", "docker_daemon", "lab_image", "lab_container",
        "effdet_tasks", "slurm"}
