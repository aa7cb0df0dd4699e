"""The repository as the collection effdet_lab.lab: it builds with
ansible-galaxy, installs into an empty collections path, and its roles work
from there alone: a playbook outside the repository (no ansible.cfg, no
roles_path) converges the host layer on a bare simulated host twice (the
second run changes nothing), and lab_image's preflight renders its build
context from the role's own templates and filters.

Collection dependencies are installed with --no-deps: Ansible Galaxy cannot be
reached here, and community.docker, community.general and ansible.utils come
from the "ansible" package in requirements.txt at the versions
collections/requirements.yml pins.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, RECAP, ScratchHost

pytestmark = pytest.mark.scratch_index(8)
BIN = Path(sys.executable).parent

def host_layer_play(namespace: str) -> str:
    """playbooks/host.yml itself, its roles named by their FQCN in the installed collection."""
    plays = yaml.safe_load((REPO / "playbooks" / "host.yml").read_text())
    for play in plays:
        for task in play.get("pre_tasks", []):
            task["ansible.builtin.include_role"]["name"] = f"{namespace}.{task['ansible.builtin.include_role']['name']}"
        for task in play["tasks"]:
            task["ansible.builtin.import_role"]["name"] = f"{namespace}.{task['ansible.builtin.import_role']['name']}"
    return yaml.safe_dump(plays, sort_keys=False, width=10**6)


IMAGE_PREFLIGHT = """\
- name: lab_image's preflight from the installed collection
  hosts: gpu_hosts
  become: true
  gather_facts: false
  tasks:
    - name: Preflight lab_image (renders the build context, computes the tag)
      ansible.builtin.include_role:
        name: effdet_lab.lab.lab_image
        tasks_from: preflight
    - name: Show the image the role would build
      ansible.builtin.debug:
        msg: "lab_image_ref={{ lab_image_ref }}"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The tarball built from the repository and installed into an empty collections path."""
    tmp = tmp_path_factory.mktemp("collection")
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp), str(REPO)],
                           capture_output=True, text=True, cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    tarball = tmp / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    path = tmp / "collections"
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(path),
                              str(tarball)], capture_output=True, text=True, cwd=tmp)
    assert install.returncode == 0, install.stdout + install.stderr
    return {"tmp": tmp, "galaxy": galaxy, "tarball": tarball, "path": path,
            "root": path / "ansible_collections" / galaxy["namespace"] / galaxy["name"]}


def outside_env(installed: dict) -> dict[str, str]:
    """No ansible.cfg of the repository, no roles path: only the installed collection (and the
    collections the ansible package brings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "ANSIBLE_COLLECTIONS_PATH": str(installed["path"]), "ANSIBLE_ROLES_PATH": str(installed["tmp"] / "none"),
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}


def play_outside(installed: dict, host: ScratchHost, text: str, name: str) -> subprocess.CompletedProcess[str]:
    playbook = installed["tmp"] / name
    playbook.write_text(text)
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(host.inventory), str(playbook)],
                          capture_output=True, text=True, cwd=installed["tmp"], env=outside_env(installed), timeout=1200)


def test_the_tarball_holds_the_collection_and_none_of_the_lab(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    galaxy = installed["galaxy"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == (galaxy["namespace"], galaxy["name"],
                                                                             galaxy["version"])
    assert manifest["license"] == ["Apache-2.0"] and manifest["dependencies"] == galaxy["dependencies"]
    for role in ("apt_signed_source", "docker_engine", "nvidia_container_toolkit", "docker_daemon", "lab_image",
                 "lab_container", "effdet_tasks", "lab_teardown"):
        assert f"roles/{role}/meta/argument_specs.yml" in names and f"roles/{role}/README.md" in names, role
    assert {"LICENSE", "CHANGELOG.md", "meta/runtime.yml", "roles/lab_image/templates/Dockerfile.j2",
            "roles/effdet_tasks/files/effdetlab/stages/__init__.py", "plugins/filter/lab_gpus.py",
            "plugins/module_utils/gpu_request.py", "plugins/action/effdet_stage.py"} <= names
    leaked = [n for n in names if re.match(r"(\.venv|\.labbox|results|tests|labbox|collections|bench)(/|$)", n)]
    assert leaked == []


def test_the_installed_roles_are_self_contained(installed):
    root = installed["root"]
    listing = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "-p", str(installed["path"]),
                              "--format", "json"], capture_output=True, text=True, env=outside_env(installed))
    found = json.loads(listing.stdout)
    assert found[str(installed["path"] / "ansible_collections")]["effdet_lab.lab"]["version"] == installed["galaxy"]["version"]
    # What the roles read lives in the roles: lab_image's templates, effdet_tasks' stage runner.
    assert (root / "roles/lab_image/templates/Dockerfile.j2").is_file()
    assert (root / "roles/effdet_tasks/files/effdetlab/convert.py").is_file()
    defaults = (root / "roles/lab_image/defaults/main.yml").read_text()
    assert 'lab_image_templates_dir: "{{ role_path }}/templates"' in defaults
    for role in (root / "roles").iterdir():
        for path in role.rglob("*.yml"):
            assert "playbook_dir }}/.." not in path.read_text(), path


def test_host_layer_from_the_installed_collection(installed, scratch_host):
    host_layer = host_layer_play(f"{installed['galaxy']['namespace']}.{installed['galaxy']['name']}")
    first = play_outside(installed, scratch_host, host_layer, "host.yml")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    assert "effdet_lab.lab.docker_daemon" in first.stdout
    second = play_outside(installed, scratch_host, host_layer, "host.yml")
    assert second.returncode == 0, second.stdout[-4000:]
    recap = {m["host"]: int(m["changed"]) for m in RECAP.finditer(second.stdout)}
    assert recap == {scratch_host.name: 0}, second.stdout[-4000:]
    daemon = json.loads(scratch_host.read("/etc/docker/daemon.json"))
    assert daemon["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert "nvidia" in scratch_host.sh("docker info --format '{{json .Runtimes}}'").stdout

    image = play_outside(installed, scratch_host, IMAGE_PREFLIGHT, "image.yml")
    assert image.returncode == 0, image.stdout[-6000:]
    assert re.search(r"lab_image_ref=effdet-lab/lab:cpu-[0-9a-f]{12,}", image.stdout), image.stdout[-3000:]
