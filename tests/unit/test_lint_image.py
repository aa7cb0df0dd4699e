"""tools/lint_image.py: every profile's rendered build context is linted, and a
planted mistake in a Dockerfile's RUN or in a context shell script is found."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import lint_image  # noqa: E402

pytestmark = pytest.mark.skipif(not (Path(sys.executable).parent / "hadolint").exists(),
                                reason="hadolint comes from requirements.txt")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    return lint_image.render(tmp_path_factory.mktemp("context"))


def test_every_profile_renders_and_lints_clean(rendered):
    assert set(rendered) == set(lint_image.profiles()) >= {"cpu", "tf2.1-gpu", "tf2.15-gpu"}
    for folder in rendered.values():
        dockerfile = (folder / "Dockerfile").read_text()
        assert dockerfile.startswith("# effdet-lab lab image") and "\nFROM " in dockerfile
        assert (folder / "sshd-setup").read_text().startswith("#!/bin/sh")
    assert lint_image.lint(rendered) == []


def test_a_planted_mistake_is_found(rendered, tmp_path):
    bad = tmp_path / "cpu"
    shutil.copytree(rendered["cpu"], bad)
    with (bad / "Dockerfile").open("a") as f:
        f.write("RUN cd /tmp && rm -rf $LAB_DIR/*\n")
    with (bad / "entrypoint").open("a") as f:
        f.write("for f in $(ls /etc); do echo $f; done\n")
    findings = "\n".join(lint_image.lint({"cpu": bad}))
    assert "DL3003" in findings  # cd in a RUN instead of WORKDIR
    assert "SC2086" in findings  # unquoted expansion, in the Dockerfile's RUN and in the script
    assert "shellcheck, profile cpu, entrypoint" in findings
