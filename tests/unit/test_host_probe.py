"""effdet_lab.lab.host_probe: a role's read-only looks at a host in one module call.

The module runs as Ansible runs it (a subprocess with its arguments file), on
this machine: dpkg's answers are compared with dpkg-query's own listing, files,
folders and links are made by the test. This machine runs no systemd, so for
`unit` a stand-in systemctl (a test double, first on PATH) prints what
`systemctl show` prints for a docker.service with a drop-in (a multi-line
ExecStart included) and records the arguments it was called with.
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from pathload import dpkg_installed_versions, load_collection_module, run_collection_module

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules" / "host_probe.py"
probe = load_collection_module(MODULE, "host_probe", REPO / "collections")

SHOW = """Type=notify
ExecStart={ path=%(dockerd)s ; argv[]=%(dockerd)s -H fd:// --containerd=/run/containerd/containerd.sock ;
 ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
ExecReload={ path=/bin/kill ; argv[]=/bin/kill -s HUP $MAINPID ; ignore_errors=no ; start_time=[n/a] ; status=0/0 }
Description={weird description without a closing brace
DropInPaths=/etc/systemd/system/docker.service.d/override.conf
LoadState=loaded
ActiveState=active
UnitFileState=enabled
"""


def run_module(args: dict, tmp_path: Path, path_dirs: list[Path] | None = None) -> dict:
    return run_collection_module(MODULE, args, tmp_path, REPO / "collections", path_dirs)


def fake_systemctl(tmp_path: Path, dockerd: Path) -> Path:
    """A systemctl that answers `show` as a real one does for docker.service, and logs its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (tmp_path / "show.txt").write_text(SHOW % {"dockerd": dockerd})
    script = folder / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls.txt'}\ncat {tmp_path / 'show.txt'}\n")
    script.chmod(0o755)
    return folder


def test_systemctl_show_is_read_as_systemd_service_reads_it(tmp_path: Path) -> None:
    parsed = probe.parse_systemctl_show((SHOW % {"dockerd": "/usr/bin/dockerd"}).splitlines())
    assert parsed["ExecStart"].startswith("{ path=/usr/bin/dockerd ;") and parsed["ExecStart"].endswith("status=0/0 }")
    assert "\n" in parsed["ExecStart"]
    # A one-line value that opens with { but is not an Exec* value does not swallow the lines after it.
    assert parsed["Description"] == "{weird description without a closing brace"
    assert parsed["LoadState"] == "loaded" and parsed["UnitFileState"] == "enabled"
    assert probe.exec_path(parsed["ExecStart"]) == "/usr/bin/dockerd"
    assert probe.exec_path("") == ""


def test_the_unit_its_program_and_the_properties_asked_for(tmp_path: Path) -> None:
    dockerd = tmp_path / "dockerd"
    dockerd.write_text("")
    bin_dir = fake_systemctl(tmp_path, dockerd)
    result = run_module({"unit": "docker", "unit_properties": ["LoadState", "ExecStart"]}, tmp_path, [bin_dir])
    assert result["changed"] is False and not result.get("failed"), result
    assert result["unit"]["ActiveState"] == "active"
    assert result["unit_exec"] == {"path": str(dockerd), "exists": True}
    assert (tmp_path / "calls.txt").read_text().split() == [
        "show", "--no-pager", "--property=LoadState", "--property=ExecStart", "--", "docker"]
    assert result["packages"] == {} and result["missing"] == [] and "file" not in result and result["present"] == []

    dockerd.unlink()
    result = run_module({"unit": "docker"}, tmp_path, [bin_dir])
    assert result["unit_exec"] == {"path": str(dockerd), "exists": False}


def test_a_regular_file_is_read_and_a_link_or_folder_is_not(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_bytes(b'{"live-restore": true}\n')
    config.chmod(0o640)
    got = run_module({"file": str(config)}, tmp_path)["file"]
    assert base64.b64decode(got["content"]) == b'{"live-restore": true}\n'
    assert got["exists"] and got["isreg"] and not got["islnk"] and got["mode"] == "0640"
    assert got["uid"] == os.getuid() and got["size"] == 23

    assert "content" not in run_module({"file": str(config), "read": False}, tmp_path)["file"]

    link = tmp_path / "link.json"
    link.symlink_to(config)
    got = run_module({"file": str(link)}, tmp_path)["file"]
    assert got["exists"] and got["islnk"] and not got["isreg"] and "content" not in got

    got = run_module({"file": str(tmp_path)}, tmp_path)["file"]
    assert got["isdir"] and not got["isreg"] and "content" not in got

    got = run_module({"file": str(tmp_path / "absent.json")}, tmp_path)["file"]
    assert got == {"path": str(tmp_path / "absent.json"), "exists": False, "isreg": False, "islnk": False,
                   "isdir": False, "size": 0}


def test_a_file_over_max_bytes_fails_and_is_not_returned(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 100)
    result = run_module({"file": str(big), "max_bytes": 99}, tmp_path)
    assert result["failed"] is True and "over max_bytes (99)" in result["msg"] and "file" not in result
    assert base64.b64decode(run_module({"file": str(big), "max_bytes": 100}, tmp_path)["file"]["content"]) == b"x" * 100


def test_present_lists_the_paths_that_exist_dangling_links_included(tmp_path: Path) -> None:
    there = tmp_path / "a.list"
    there.write_text("deb x y\n")
    dangling = tmp_path / "b.list"
    dangling.symlink_to(tmp_path / "nowhere")
    absent = tmp_path / "c.list"
    result = run_module({"present": [str(absent), str(dangling), str(there)]}, tmp_path)
    assert result["present"] == [str(dangling), str(there)]


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="no dpkg-query on this machine")
def test_packages_answer_as_dpkg_installed_does(tmp_path: Path) -> None:
    installed = dpkg_installed_versions()
    some = sorted(installed)[:3]
    result = run_module({"packages": [*some, "effdet-lab-no-such-package"], "_ansible_check_mode": True}, tmp_path)
    assert {name: [p["version"] for p in pkgs] for name, pkgs in result["packages"].items()} == \
        {name: [installed[name]] for name in some}
    assert result["missing"] == ["effdet-lab-no-such-package"]
    assert result["selections"]["effdet-lab-no-such-package"] == "unknown"


@pytest.mark.parametrize(("args", "named"), [
    ({"packages": ["gpg", "gpg;touch /tmp/x"]}, "packages: 'gpg;touch /tmp/x' break the rule"),
    ({"unit": "docker; reboot"}, "unit: 'docker; reboot' breaks the rule"),
    ({"unit": "docker", "unit_properties": ["ExecStart", "--all"]}, "unit_properties: '--all' breaks the rule"),
    ({"file": "etc/docker/daemon.json"}, "file: 'etc/docker/daemon.json' breaks the rule: an absolute path"),
    ({"present": ["/ok", "relative.list"]}, "present: 'relative.list' breaks the rule: an absolute path"),
    ({"max_bytes": 0}, "max_bytes: 0 breaks the rule"),
])
def test_a_bad_input_is_refused_by_name_before_anything_runs(args: dict, named: str, tmp_path: Path) -> None:
    bin_dir = fake_systemctl(tmp_path, tmp_path / "dockerd")
    result = run_module(args, tmp_path, [bin_dir])
    assert result["failed"] is True and named in result["msg"], result
    assert not (tmp_path / "calls.txt").exists()
