"""effdet_lab.lab.dpkg_installed: what dpkg says of a few named packages.

parse() reads what the real dpkg-query prints for a dpkg database this test writes
(held, two architectures, config files only, half-configured, triggers pending);
the module itself runs as Ansible runs it, on this machine's own dpkg database,
and agrees with dpkg-query's plain listing."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pathload import dpkg_installed_versions, load_collection_module, run_collection_module

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules" / "dpkg_installed.py"
# The module imports the collection's module_utils (effdet_lab.lab, collections/ links back to this checkout).
dpkg = load_collection_module(MODULE, "dpkg_installed", REPO / "collections")

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="no dpkg-query on this machine")

STATUS = {
    ("held-tool", "amd64"): ("hold ok installed", "1.2-1"),
    ("plain-tool", "amd64"): ("install ok installed", "3.0"),
    ("libtwo", "amd64"): ("install ok installed", "2.1-3"),
    ("libtwo", "i386"): ("install ok installed", "2.1-3"),
    ("gone-tool", "amd64"): ("deinstall ok config-files", "0.9"),
    ("half-tool", "amd64"): ("install ok half-configured", "4.4"),
    ("trig-tool", "all"): ("install ok triggers-pending", "5.0"),
}


def status_file(admindir: Path) -> None:
    stanzas = []
    for (name, arch), (status, version) in STATUS.items():
        multi = "Multi-Arch: same\n" if name == "libtwo" else ""
        multi += "Triggers-Pending: /usr/share/effdet-lab-test\n" if status.endswith("triggers-pending") else ""
        stanzas.append(f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: misc\n"
                       f"Maintainer: test <t@example.org>\nArchitecture: {arch}\n{multi}Version: {version}\n"
                       f"Description: a package of the test\n")
    admindir.mkdir(parents=True, exist_ok=True)
    (admindir / "status").write_text("\n".join(stanzas))
    for sub in ("info", "updates", "triggers"):
        (admindir / sub).mkdir(exist_ok=True)


def query(admindir: Path, names: list[str]) -> str:
    proc = subprocess.run(["dpkg-query", f"--admindir={admindir}", "--show", "--showformat", dpkg.FORMAT, "--", *names],
                          capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def test_parse_reads_dpkg_queries_own_lines(tmp_path: Path) -> None:
    admindir = tmp_path / "dpkg"
    status_file(admindir)
    names = ["held-tool", "plain-tool", "libtwo", "gone-tool", "half-tool", "trig-tool", "never-heard-of"]
    got = dpkg.parse(query(admindir, names), names)
    assert set(got["packages"]) == {"held-tool", "plain-tool", "libtwo", "trig-tool"}
    assert got["missing"] == ["gone-tool", "half-tool", "never-heard-of"]
    assert got["packages"]["held-tool"] == [{"name": "held-tool", "version": "1.2-1", "arch": "amd64",
                                             "selection": "hold", "source": "apt"}]
    assert sorted(p["arch"] for p in got["packages"]["libtwo"]) == ["amd64", "i386"]
    assert got["selections"] == {"held-tool": "hold", "plain-tool": "install", "libtwo": "install",
                                 "gone-tool": "deinstall", "half-tool": "install", "trig-tool": "install",
                                 "never-heard-of": "unknown"}


def test_parse_keeps_only_the_names_asked_about(tmp_path: Path) -> None:
    admindir = tmp_path / "dpkg"
    status_file(admindir)
    everything = query(admindir, [name for name, _ in STATUS])
    got = dpkg.parse(everything, ["plain-tool"])
    assert list(got["packages"]) == ["plain-tool"] and got["missing"] == []
    assert got["selections"] == {"plain-tool": "install"}


@pytest.mark.parametrize("name", ["Docker-CE", "a", "docker-ce=5:24.0", "docker-ce:amd64", "x;rm -rf /", "-x", ""])
def test_names_outside_debian_policy_are_refused(name: str) -> None:
    assert dpkg.bad_names(["docker.io", name]) == [name]
    assert dpkg.bad_names(["docker.io", "containerd.io", "python3-docker", "g++", "libstdc++6"]) == []


def run_module(args: dict, tmp_path: Path) -> dict:
    return run_collection_module(MODULE, args, tmp_path, REPO / "collections")


def test_the_module_agrees_with_dpkg_on_this_machine(tmp_path: Path) -> None:
    installed = dpkg_installed_versions()
    some = sorted(installed)[:5]
    result = run_module({"names": [*some, "effdet-lab-no-such-package"], "_ansible_check_mode": True}, tmp_path)
    assert result["changed"] is False and not result.get("failed"), result
    assert {name: [p["version"] for p in pkgs] for name, pkgs in result["packages"].items()} == \
        {name: [installed[name]] for name in some}
    assert result["missing"] == ["effdet-lab-no-such-package"]


def test_the_module_refuses_a_bad_name_before_running_dpkg(tmp_path: Path) -> None:
    result = run_module({"names": ["gpg", "gpg;touch /tmp/x"]}, tmp_path)
    assert result["failed"] is True
    assert "'gpg;touch /tmp/x'" in result["msg"] and dpkg.NAME_RULE.pattern in result["msg"]
