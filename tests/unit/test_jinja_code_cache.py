"""plugins/plugin_utils/jinja_code_cache.py: Jinja's compiled code kept on disk.

Each case runs in its own Python (install() changes Ansible's Jinja environment
for the whole process) and renders real templates and conditionals through
Ansible's Templar: with the cache off, cold and warm, the results must be the
same, and a warm cache must answer every compile.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason="needs the project's venv (make venv)")

# Templates and conditionals whose compiled code differs in what the key must hold: a header
# that overrides the delimiters, backslashes in a string constant (escape_backslashes), a filter
# and a test, a loop, text without a template (Ansible compiles nothing for it), and text
# used both as a template and as a conditional (which Ansible renders as a template first).
BOTH = "'{{ a }}' == '{{ a }}'"
TEMPLATES = [
    "{{ a + 1 }}-{{ b | upper }}",
    "#jinja2:variable_start_string:'[%', variable_end_string:'%]'\n[% a * 10 %] {{ a }}",
    '{{ "c:\\\\new" ~ b }}',
    "{{ items | map('string') | join(',') }}",
    "a == 2",
    "{% for i in items %}{{ i }}{% if not loop.last %}+{% endif %}{% endfor %}",
    BOTH,
]
CONDITIONALS = ["a == 2", "b is string and items | length == 3", "a > 5", BOTH]

SCRIPT = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from ansible.template import Templar, trust_as_template
from ansible_collections.effdet_lab.lab.plugins.plugin_utils import jinja_code_cache as cache
warnings = []
folder = cache.install(warn=warnings.append)
templar = Templar(loader=None, variables={"a": 2, "b": "x", "items": [1, 2, 3]})
spec = json.loads(sys.argv[2])
rendered = [templar.template(trust_as_template(text)) for text in spec["templates"]]
decided = [templar.evaluate_conditional(trust_as_template(text)) for text in spec["conditionals"]]
# the same text compiled without Ansible's backslash escaping: another compile, another entry
unescaped = [templar.template(trust_as_template(text), escape_backslashes=False) for text in spec["unescaped"]]
print(json.dumps({"folder": folder, "warnings": warnings, "rendered": rendered, "decided": decided,
                  "unescaped": unescaped,
                  "hits": cache._STATE["hits"], "misses": cache._STATE["misses"]}))
'''


def run(env_value: str | None, templates=TEMPLATES, conditionals=CONDITIONALS, unescaped=TEMPLATES[2:3],
        cwd: Path | None = None, ansible_home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EFFDET_JINJA_CODE_CACHE"}
    if env_value is not None:
        env["EFFDET_JINJA_CODE_CACHE"] = env_value
    if ansible_home is not None:
        env["ANSIBLE_HOME"] = str(ansible_home)
    done = subprocess.run([str(PYTHON), "-c", SCRIPT, str(REPO / "collections"),
                           json.dumps({"templates": templates, "conditionals": conditionals, "unescaped": unescaped})],
                          env=env, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def entries(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_warm_cache_answers_every_compile_and_renders_the_same(tmp_path):
    folder = tmp_path / "cache"
    off = run("off")
    cold = run(str(folder))
    assert cold["folder"] == str(folder) and cold["warnings"] == []
    assert (folder.stat().st_mode & 0o777) == 0o700
    written = entries(folder)
    # every template with a delimiter, every conditional, the unescaped one, and the templates
    # in BOTH's string constants (the second of the two is already cached)
    assert cold["misses"] == len(written) >= len(TEMPLATES) - 1 + len(CONDITIONALS) + 1
    warm = run(str(folder))
    assert warm["hits"] == cold["misses"] + cold["hits"] and warm["misses"] == 0
    assert entries(folder) == written            # nothing compiled or rewritten
    assert off["rendered"] == cold["rendered"] == warm["rendered"]
    assert off["decided"] == cold["decided"] == warm["decided"] == [True, True, False, True]
    assert off["unescaped"] == cold["unescaped"] == warm["unescaped"] == [r"c:\newx"]
    assert warm["rendered"][:2] == ["3-X", "20 {{ a }}"]
    assert warm["rendered"][2:] == [r"c:\\newx", "1,2,3", "a == 2", "1+2+3", "'2' == '2'"]


def test_on_is_the_default_folder(tmp_path):
    result = run("on", ansible_home=tmp_path / "home")
    assert result["folder"] == str(tmp_path / "home" / "effdet_lab" / "jinja_code") and result["warnings"] == []
    assert result["misses"] > 0


def test_a_relative_folder_is_refused_by_name_value_and_rule(tmp_path):
    """A typo (`of` for `off`) would make a cache folder wherever the run starts."""
    result = run("of", cwd=tmp_path)
    assert result["folder"] is None and result["misses"] == result["hits"] == 0
    assert len(result["warnings"]) == 1
    assert "EFFDET_JINJA_CODE_CACHE = 'of' breaks the rule: an absolute folder" in result["warnings"][0]
    assert list(tmp_path.iterdir()) == []
    assert result["rendered"] == run("off")["rendered"]


def test_off_compiles_as_ansible_does(tmp_path):
    result = run("off")
    assert result["folder"] is None and result["hits"] == result["misses"] == 0 and result["warnings"] == []


@pytest.mark.parametrize("how", ["group-writable", "link", "other-user", "a-file"])
def test_a_folder_others_could_write_is_not_used(tmp_path, how):
    folder = tmp_path / "cache"
    if how == "group-writable":
        folder.mkdir(mode=0o700)
        folder.chmod(0o770)
        reason = "mode 0770"
    elif how == "link":
        (tmp_path / "real").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "real")
        reason = "not a folder"
    elif how == "other-user":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the folder away")
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
        reason = "belongs to uid 65534"
    else:
        folder.write_text("")
        reason = "not a folder"
    result = run(str(folder))
    assert result["folder"] is None and result["misses"] == result["hits"] == 0
    assert len(result["warnings"]) == 1 and reason in result["warnings"][0]
    assert str(folder) in result["warnings"][0] and "EFFDET_JINJA_CODE_CACHE" in result["warnings"][0]
    assert result["rendered"] == run("off")["rendered"]
    if folder.is_dir() and not folder.is_symlink():
        assert list(folder.iterdir()) == []
    assert list((tmp_path / "real").iterdir() if (tmp_path / "real").exists() else []) == []


def test_a_damaged_or_foreign_entry_is_compiled_again(tmp_path):
    folder = tmp_path / "cache"
    run(str(folder), templates=TEMPLATES[:2], conditionals=[], unescaped=[])
    first, second = sorted(folder.iterdir())
    first.write_bytes(b"not marshal data")
    target = tmp_path / "elsewhere"
    target.write_bytes(second.read_bytes())
    second.unlink()
    second.symlink_to(target)                   # a link is not followed, and is replaced
    again = run(str(folder), templates=TEMPLATES[:2], conditionals=[], unescaped=[])
    assert again["misses"] == 2 and again["hits"] == 0
    assert again["rendered"] == ["3-X", "20 {{ a }}"]
    assert not second.is_symlink() and first.read_bytes() != b"not marshal data"
    assert run(str(folder), templates=TEMPLATES[:2], conditionals=[], unescaped=[])["hits"] == 2


def test_a_full_folder_is_emptied(tmp_path):
    cache = load_module(REPO / "plugins" / "plugin_utils" / "jinja_code_cache.py", "jinja_code_cache_under_test")
    for n in range(5):
        (tmp_path / f"e{n}").write_bytes(b"")
    cache.prune(str(tmp_path), limit=5)
    assert len(list(tmp_path.iterdir())) == 5
    (tmp_path / "e5").write_bytes(b"")
    cache.prune(str(tmp_path), limit=5)
    assert list(tmp_path.iterdir()) == []
