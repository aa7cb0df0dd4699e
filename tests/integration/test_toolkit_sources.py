"""The NVIDIA toolkit's offline source: a folder of .debs on the controller.

The repository source is proven by every converge (the signed local repo);
this converges a host from the .deb folder instead, after purging the toolkit.
"""
from __future__ import annotations

import json
import subprocess

from conftest import REPO, docker_sh, run_playbook

HOST = "labhost-1"
CONTAINER = "effdet-lab-host-1"
LISTS = "/etc/apt/sources.list.d"
PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]


def dpkg_versions() -> dict[str, str]:
    out = subprocess.run(["docker", "exec", CONTAINER, "dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n",
                          *PACKAGES], capture_output=True, text=True).stdout
    return {line.split()[0]: line for line in out.splitlines() if "installed" in line and "not-installed" not in line}


def test_offline_deb_folder_installs_the_pinned_toolkit(converged_hosts, tmp_path):
    debs = REPO / ".labbox" / "apt" / "nvidia" / "stable" / "deb" / "amd64"
    subprocess.run(["docker", "exec", CONTAINER, "sh", "-ec",
                    f"apt-mark unhold {' '.join(PACKAGES)} >/dev/null; apt-get purge -y -qq {' '.join(PACKAGES)} >/dev/null"],
                   check=True)
    assert dpkg_versions() == {}
    # The legacy lists an old install left (one of them a link), beside an admin's own list.
    docker_sh(CONTAINER, f"cd {LISTS} && echo '# deb http://old/ /' > nvidia-docker.list && "
                         "echo '# deb http://old/ /' > libnvidia-container.list && "
                         "echo keep > /root/runtime-target && ln -s /root/runtime-target nvidia-container-runtime.list && "
                         "echo '# an admin list' > admin.list")
    extra = tmp_path / "offline.json"
    extra.write_text(json.dumps({"nvidia_container_toolkit_source": "debs",
                                 "nvidia_container_toolkit_debs_dir": str(debs)}))
    first = run_playbook("playbooks/host.yml", "--limit", HOST, "-e", f"@{extra}")
    assert first.rc == 0, first.tail(3000)
    assert first.recap[HOST]["changed"] > 0
    installed = dpkg_versions()
    assert sorted(installed) == sorted(PACKAGES)
    assert all(" 1.17.8-1 hold ok installed" in line for line in installed.values()), installed
    lists = docker_sh(CONTAINER, f"ls -A {LISTS}").stdout.split()
    assert not {"nvidia-docker.list", "libnvidia-container.list", "nvidia-container-runtime.list"} & set(lists), lists
    assert "admin.list" in lists, lists
    assert docker_sh(CONTAINER, "cat /root/runtime-target").stdout == "keep\n", "a link's target is never removed"
    docker_sh(CONTAINER, f"rm {LISTS}/admin.list /root/runtime-target")
    again = run_playbook("playbooks/host.yml", "--limit", HOST, "-e", f"@{extra}")
    assert again.rc == 0 and again.recap[HOST]["changed"] == 0, again.tail(3000)
    # Back on the repository source, nothing changes: same pinned version.
    back = run_playbook("playbooks/host.yml", "--limit", HOST)
    assert back.rc == 0 and back.recap[HOST]["changed"] == 0, back.tail(3000)
