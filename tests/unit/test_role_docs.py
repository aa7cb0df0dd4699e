"""meta/argument_specs.yml is the one source of the role docs: the generated
READMEs and inventory list are current, every default in defaults/main.yml is
its spec's, and the generator's output (tables, the inventory's commented
values) says what the specs say, on a role the tests write."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import role_docs  # noqa: E402

ROLES = role_docs.role_dirs()


def test_the_committed_docs_are_current():
    run = subprocess.run([sys.executable, str(REPO / "tools" / "role_docs.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("role_dir", ROLES, ids=[role_dir.name for role_dir in ROLES])
def test_defaults_are_the_specs_defaults(role_dir):
    options = role_docs.spec_options(role_dir)
    defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text()) or {}
    assert set(defaults) <= set(options), f"not in the spec: {sorted(set(defaults) - set(options))}"
    for name, option in options.items():
        if option.get("required"):
            assert name not in defaults, f"{name} is required, so defaults/main.yml must not set it"
            continue
        assert name in defaults, f"{name} has no default in defaults/main.yml"
        assert defaults[name] == option.get("default"), (
            f"{name}: defaults/main.yml says {defaults[name]!r}, meta/argument_specs.yml says {option.get('default')!r}")


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@pytest.mark.parametrize("role_dir", ROLES, ids=[role_dir.name for role_dir in ROLES])
def test_template_defaults_are_not_rendered_by_the_validation(role_dir):
    """Ansible renders the spec when it validates a role's arguments, before the role's tasks (and,
    under --tags, before any fact gathering): a template default must be tagged !unsafe there."""
    for name, option in role_docs.spec_options(role_dir).items():
        for text in strings(option.get("default")):
            if "{{" in text or "{%" in text:
                assert isinstance(text, role_docs.Unsafe), f"{name}: tag the template default !unsafe"


def uncommented(line: str) -> dict:
    """'# name: value   # about' as the inventory would read it once uncommented."""
    entry = line.strip().removeprefix("# ").split("   # ", 1)[0]
    return yaml.safe_load(entry)


def test_every_listed_value_reads_back_as_its_default():
    example = (REPO / "inventory" / "gpu_hosts.example").read_text().split("\n")
    begin = next(i for i, line in enumerate(example) if line.strip() == role_docs.BEGIN)
    end = next(i for i, line in enumerate(example) if line.strip() == role_docs.END)
    listed = {}
    for line in example[begin + 1:end]:
        if line.strip() and not line.strip().startswith("# ----"):
            listed.update(uncommented(line))
    options = {name: option for role_dir in ROLES if role_dir.name not in role_docs.INTERNAL_ROLES
               for name, option in role_docs.spec_options(role_dir).items()}
    assert set(listed) == set(options)
    for name, value in listed.items():
        if isinstance(value, str) and value.startswith("see ") and value.endswith("README.md"):
            assert len(role_docs.flow(options[name].get("default"))) > role_docs.INLINE_MAX
        else:
            assert value == options[name].get("default"), name


DEMO_SPEC = """\
---
argument_specs:
  main:
    short_description: Demo role for the generator's tests.
    description:
      - A <placeholder> in prose.
    options: &demo_options
      demo_mode:
        type: str
        choices: [fast, safe]
        default: safe
        description: How to run. Second sentence, only in the README.
      demo_template:
        type: str
        default: "{{ other_var | default('x') }}"
        description: A template with a pipe, e.g. a filter.
      demo_big:
        type: dict
        default:
          alpha: [one, two, three, four, five, six, seven, eight]
          beta: [nine, ten, eleven, twelve, thirteen, fourteen, fifteen]
        description: A default too long for one line.
      demo_needed:
        type: list
        elements: str
        required: true
        description: Must be given.
  check:
    short_description: Read-only.
    options: *demo_options
"""
EXAMPLE_TEXT = """\
all:
  vars:
    kept_by_hand: 1
    # stale text
    {begin}
    # anything here is replaced
    {end}
    after: 2
"""


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    role = tmp_path / "roles" / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "meta" / "argument_specs.yml").write_text(DEMO_SPEC)
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "gpu_hosts.example").write_text(
        EXAMPLE_TEXT.format(begin=role_docs.BEGIN, end=role_docs.END))
    return tmp_path


def test_generator_writes_then_finds_nothing_stale(demo_repo, capsys):
    assert role_docs.main(["--repo", str(demo_repo), "--check"]) == 1
    assert "roles/demo/README.md" in capsys.readouterr().err
    assert role_docs.main(["--repo", str(demo_repo)]) == 0
    assert role_docs.main(["--repo", str(demo_repo), "--check"]) == 0

    spec = demo_repo / "roles" / "demo" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("default: safe", "default: fast"))
    assert role_docs.main(["--repo", str(demo_repo), "--check"]) == 1
    stale = capsys.readouterr().err
    assert "roles/demo/README.md" in stale and "inventory/gpu_hosts.example" in stale


def test_readme_table(demo_repo):
    role_docs.main(["--repo", str(demo_repo)])
    readme = (demo_repo / "roles" / "demo" / "README.md").read_text()
    assert readme.startswith("# demo\n\nDemo role for the generator's tests.\n\nA &lt;placeholder> in prose.\n")
    assert "- `check` (`tasks/check.yml`): Read-only." in readme
    assert "`check` takes the same variables as `main`." in readme
    rows = {line.split(" | ")[0].strip("| `"): line for line in readme.split("\n") if line.startswith("| `demo_")}
    assert rows["demo_mode"] == ("| `demo_mode` | str | `safe` | How to run. Second sentence, only in the README. "
                                 "One of: `fast`, `safe`. |")
    assert rows["demo_template"] == ("| `demo_template` | str | `\"{{ other_var \\| default('x') }}\"` "
                                     "| A template with a pipe, e.g. a filter. |")
    assert "| `demo_needed` | list of str, required | `null` |" in rows["demo_needed"]
    assert "| dict | see below |" in rows["demo_big"]
    full = readme.split("### Default of `demo_big`\n\n```yaml\n", 1)[1].split("```", 1)[0]
    spec_default = yaml.safe_load(DEMO_SPEC)["argument_specs"]["main"]["options"]["demo_big"]["default"]
    assert yaml.safe_load(full) == {"demo_big": spec_default}


def test_inventory_list(demo_repo):
    role_docs.main(["--repo", str(demo_repo)])
    example = (demo_repo / "inventory" / "gpu_hosts.example").read_text()
    assert example.startswith("all:\n  vars:\n    kept_by_hand: 1\n    # stale text\n")
    assert example.endswith(f"    {role_docs.END}\n    after: 2\n") and "anything here" not in example
    lines = example.split("\n")
    assert "        # demo_mode: safe   # fast | safe. How to run." in lines
    assert "        # demo_big: see roles/demo/README.md   # A default too long for one line." in lines
    assert "        # demo_needed: null   # required. Must be given." in lines
    template = next(line for line in lines if "demo_template:" in line)
    assert uncommented(template) == {"demo_template": "{{ other_var | default('x') }}"}
    assert yaml.safe_load(example)["all"]["vars"] == {"kept_by_hand": 1, "after": 2}


def test_an_example_without_its_markers_is_refused(demo_repo):
    (demo_repo / "inventory" / "gpu_hosts.example").write_text("all: {}\n")
    with pytest.raises(ValueError, match="needs exactly one line"):
        role_docs.main(["--repo", str(demo_repo)])


@pytest.mark.parametrize("text, expected", [
    ("One. Two.", "One."),
    ("Deep-merged, e.g. {cpu: x}. More.", "Deep-merged, e.g. {cpu: x}."),
    ("Seconds (i.e. wall time). More.", "Seconds (i.e. wall time)."),
    ("auto: keep it. distro: lowercase goes on.", "auto: keep it. distro: lowercase goes on."),
    ("word " * 40, ("word " * 22).strip() + " ..."),
])
def test_summary(text, expected):
    assert role_docs.summary(text.strip()) == expected
