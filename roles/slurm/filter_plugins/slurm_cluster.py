"""Pure logic of the slurm role: what slurm.conf and gres.conf say about each node.

A node's line is built from what the node reports itself: `slurmd -C` (CPUs,
sockets, cores, threads, memory) and `nvidia-smi -L` (one GRES per GPU, its
type from the GPU's name). The `nvidia-smi -L` parser is the project's one
(plugins/module_utils/nvidia_smi.py), so this role, the lab_image role and the
verifier read GPUs alike; a node's readiness is read by
plugins/module_utils/slurm_state.py, shared with the verifier too. Free of Ansible imports beyond the filter
registration and its error type, so tests/unit/test_slurm_cluster.py runs it
on recorded real outputs (tests/fixtures/nvidia-smi/).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

try:
    from ansible_collections.effdet_lab.lab.plugins.module_utils import nvidia_smi, slurm_state
except ImportError:  # the plain repository (roles_path=roles): the same files, by path
    import os
    import runpy

    _by_path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "../../../plugins/module_utils/by_path.py")
    _load = runpy.run_path(_by_path)["load"]
    nvidia_smi = _load("nvidia_smi")
    slurm_state = _load("slurm_state")

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # outside Ansible (the unit tests load this file by path)
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

# What `slurmd -C` prints that a node line keeps, in slurm.conf's order.
HARDWARE_KEYS = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
# A GRES type: what Slurm's gres parser and its `--gres=gpu:<type>:<n>` grammar take safely.
GRES_TYPE = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")
_VERSION = re.compile(r"(?:^|\s)(?:[0-9]+:)?(?P<upstream>[0-9]+\.[0-9]+(?:\.[0-9]+)?)")


def slurm_node_hardware(slurmd_c: str) -> dict[str, int]:
    """The hardware of `slurmd -C`'s first line as {key: int}, HARDWARE_KEYS only.

    `NodeName=n1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    ThreadsPerCore=1 RealMemory=24105` -> {"CPUs": 2, ..., "RealMemory": 24105}.
    """
    line = next((ln for ln in str(slurmd_c or "").splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    missing = [key for key in HARDWARE_KEYS if not str(fields.get(key, "")).isdigit()]
    if missing:
        raise AnsibleFilterError(f"`slurmd -C` did not report {', '.join(missing)}: {line or slurmd_c!r}")
    return {key: int(fields[key]) for key in HARDWARE_KEYS}


def slurm_gres_type(gpu_name: str) -> str:
    """A GPU's name as a GRES type: 'Tesla V100-SXM2-16GB' -> 'tesla_v100_sxm2_16gb'.

    'NVIDIA ' is dropped ('NVIDIA TITAN V' -> 'titan_v'); every run of other
    characters becomes one '_'."""
    name = re.sub(r"^nvidia\s+", "", str(gpu_name).strip(), flags=re.IGNORECASE)
    gres = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:63]
    if not GRES_TYPE.fullmatch(gres):
        raise AnsibleFilterError(f"GPU name {gpu_name!r} gives no usable GRES type")
    return gres


def slurm_gpus(nvidia_smi_l: str, device_prefix: str, type_override: Any = None) -> list[dict[str, Any]]:
    """One GRES per GPU of `nvidia-smi -L`: [{index, name, type, file}], in index order.

    file is device_prefix + index (/dev/nvidia0). A GPU in MIG mode is refused:
    Slurm 22.05 schedules MIG devices only with AutoDetect=nvml, which Debian's
    slurmd is not built with, and a whole card in MIG mode runs no plain CUDA job.
    """
    try:
        listed = nvidia_smi.parse_list_gpus(str(nvidia_smi_l or ""))
    except ValueError as err:
        raise AnsibleFilterError(f"nvidia-smi -L: {err}") from err
    mig = [f"GPU {gpu.index} ({gpu.name})" for gpu in listed if gpu.mig_devices]
    if mig:
        raise AnsibleFilterError(
            f"{', '.join(mig)} in MIG mode: Slurm 22.05 cannot schedule MIG devices without AutoDetect=nvml; "
            "turn MIG off (nvidia-smi -mig 0) on a queued GPU")
    forced = slurm_gres_type(type_override) if type_override else None
    return [{"index": gpu.index, "name": gpu.name, "type": forced or slurm_gres_type(gpu.name),
             "file": f"{device_prefix}{gpu.index}"} for gpu in sorted(listed, key=lambda g: g.index)]


def slurm_gres_spec(gpus: Sequence[Mapping[str, Any]]) -> str:
    """A node line's Gres= value: 'gpu:tesla_v100_sxm2_16gb:8', types in first-seen order; '' without GPUs."""
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu["type"]] = counts.get(gpu["type"], 0) + 1
    return ",".join(f"gpu:{kind}:{count}" for kind, count in counts.items())


def slurm_upstream_version(text: Any) -> str:
    """'22.05.8' of '22.05.8-4+deb12u3', 'slurm-wlm 22.05.8' or '1:22.05.8-1'; '' when none."""
    match = _VERSION.search(str(text or ""))
    return match.group("upstream") if match else ""


def slurm_dpkg_versions(text: str) -> dict[str, Any]:
    """Read the preflight's lines: `<status> <package> <version>` from dpkg-query and
    `candidate slurm-client <version>` from apt-cache policy.

    Returns {installed: {package: version} (status 'installed' only), candidate,
    release}: release is the upstream version of the installed slurmctld,
    slurmd or slurm-client (the first found), else of the candidate, else ''."""
    installed: dict[str, str] = {}
    candidate = ""
    for line in str(text or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "installed":
            installed[parts[1]] = parts[2]
        elif len(parts) == 3 and parts[0] == "candidate" and parts[2] != "(none)":
            candidate = parts[2]
    found = next((installed[p] for p in ("slurmctld", "slurmd", "slurm-client") if p in installed), candidate)
    return {"installed": installed, "candidate": candidate, "release": slurm_upstream_version(found)}


def slurm_version_conflict(versions: Mapping[str, Any]) -> str:
    """'' when every host that has (or would get) Slurm has the same upstream version,
    else 'host: version' for each, grouped by version, for a refusal."""
    by_version: dict[str, list[str]] = {}
    for host, version in sorted(versions.items()):
        upstream = slurm_upstream_version(version)
        if upstream:
            by_version.setdefault(upstream, []).append(host)
    if len(by_version) <= 1:
        return ""
    return "; ".join(f"{version} on {', '.join(hosts)}" for version, hosts in sorted(by_version.items()))


def slurm_nodes_not_ready(sinfo: str, names: Sequence[str]) -> list[str]:
    """The nodes of `names` that do not take jobs, from `sinfo --Node --format '%N|%t|%E'`,
    each as 'node (state: reason)' (plugins/module_utils/slurm_state.py, which the verifier
    reads nodes with too)."""
    return slurm_state.nodes_not_ready(sinfo, names)


class FilterModule:
    def filters(self) -> dict:
        return {
            "slurm_node_hardware": slurm_node_hardware,
            "slurm_gres_type": slurm_gres_type,
            "slurm_gpus": slurm_gpus,
            "slurm_gres_spec": slurm_gres_spec,
            "slurm_upstream_version": slurm_upstream_version,
            "slurm_nodes_not_ready": slurm_nodes_not_ready,
            "slurm_dpkg_versions": slurm_dpkg_versions,
            "slurm_version_conflict": slurm_version_conflict,
        }
