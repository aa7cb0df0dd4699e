"""The queue, on hosts of a Slurm cluster: where the inventory has a
slurm_controller group (playbooks/slurm.yml). On other inventories these
checks skip.

- munge runs everywhere, its key owned by munge and closed to group and others;
- slurmctld runs on the controller, slurmd on every gpu_hosts host, enabled;
- from every host, `scontrol ping` reaches slurmctld: the host's munge key is
  the controller's (a wrong key fails authentication);
- every node takes jobs (sinfo's state, no "not responding" flag), and it
  offers Slurm as many GPUs (Gres) as nvidia-smi lists on it, read with the
  role's own slurm_nvidia_smi.
"""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import pytest

import nvidia_smi
from conftest import _hostvars, _plain

# A node's readiness, read as the slurm role reads it.
slurm_state = runpy.run_path(str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "by_path.py"))[
    "load"]("slurm_state")


@pytest.fixture(scope="module")
def slurm(host) -> dict[str, Any]:
    hv = _hostvars(host)
    groups = hv.get("groups") or {}
    if not groups.get("slurm_controller"):
        pytest.skip("no slurm_controller group in the inventory: this lab has no queue")
    names = hv.get("group_names") or []
    return {"controller": "slurm_controller" in names, "node": "gpu_hosts" in names,
            "nvidia_smi": _plain(hv.get("slurm_nvidia_smi")) or "/usr/bin/nvidia-smi",
            "partition": _plain(hv.get("slurm_partition_name")) or "gpu"}


def test_munge_runs_with_a_private_key(host, slurm) -> None:
    munge = host.service("munge")
    assert munge.is_running and munge.is_enabled, "munge is not running and enabled"
    key = host.file("/etc/munge/munge.key")
    assert key.user == "munge" and key.mode & 0o077 == 0, f"munge.key is {key.user} {oct(key.mode)}"
    assert host.run("munge -n | unmunge").rc == 0, "munge cannot decode its own credential"


def test_daemons_run(host, slurm) -> None:
    wanted = (["slurmctld"] if slurm["controller"] else []) + (["slurmd"] if slurm["node"] else [])
    for name in wanted:
        service = host.service(name)
        assert service.is_running and service.is_enabled, f"{name} is not running and enabled"


def test_the_controller_answers_with_this_hosts_munge_key(host, slurm) -> None:
    ping = host.run("scontrol ping")
    assert ping.rc == 0 and "is UP" in ping.stdout, f"scontrol ping: {ping.stdout}{ping.stderr}"


def _gpus_listed(host, smi: str) -> int:
    if host.run(f"test -x {shlex.quote(smi)}").rc != 0:
        return 0
    out = host.run(f"{shlex.quote(smi)} -L")
    assert out.rc in (0, 6), f"{smi} -L failed (rc {out.rc}): {out.stderr}"
    return len(nvidia_smi.parse_list_gpus(out.stdout))


def test_node_takes_jobs_with_every_gpu(host, slurm) -> None:
    if not slurm["node"]:
        pytest.skip("the controller alone is no node")
    name = host.check_output("hostname -s").strip()
    sinfo = host.check_output(f"sinfo --noheader --Node --nodes={name} --partition={slurm['partition']} "
                              "--format='%N|%t|%E'")
    state = slurm_state.parse_sinfo(sinfo).get(name, ("", ""))[0]
    assert slurm_state.is_ready(state), f"node {name} is {state or 'not in the partition'}"
    node = host.check_output(f"scontrol show node {name} -o")
    gres = re.search(r"\bGres=(\S+)", node)
    # gpu:<type>:<count>, or gpu:<count>, each perhaps with its sockets: gpu:t:2(S:0-1).
    specs = [] if not gres or gres.group(1) == "(null)" else gres.group(1).split(",")
    offered = sum(int(spec.split("(")[0].rsplit(":", 1)[-1]) for spec in specs if spec.startswith("gpu"))
    assert offered == _gpus_listed(host, slurm["nvidia_smi"]), f"node {name}: Gres={gres.group(1) if gres else None}"
