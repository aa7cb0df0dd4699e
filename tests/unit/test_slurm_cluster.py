"""The slurm role's pure logic on recorded real outputs, and the files it writes.

Node lines come from `slurmd -C` (its form as Debian's slurmd 22.05.8 prints
it on a simulated host) and from recorded real `nvidia-smi -L` outputs
(tests/fixtures/nvidia-smi/, SOURCES.md). The templates are rendered here with
those filters for a cluster of mixed GPUs, and read back line by line.
"""
from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "slurm"
FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
s = load_module(ROLE / "filter_plugins" / "slurm_cluster.py", "effdet_slurm_cluster")

SLURMD_C = ("NodeName=scratch-9 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
            "RealMemory=24105\nUpTime=0-03:07:36\n")


def recorded(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_hardware_of_slurmd_c() -> None:
    assert s.slurm_node_hardware(SLURMD_C) == {
        "CPUs": 2, "Boards": 1, "SocketsPerBoard": 1, "CoresPerSocket": 2, "ThreadsPerCore": 1, "RealMemory": 24105}


def test_hardware_refuses_a_short_report() -> None:
    with pytest.raises(s.AnsibleFilterError, match="RealMemory"):
        s.slurm_node_hardware("NodeName=x CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1")
    with pytest.raises(s.AnsibleFilterError, match="CPUs"):
        s.slurm_node_hardware("slurmd: error: something else")


@pytest.mark.parametrize("name,gres", [
    ("Tesla V100-SXM2-16GB", "tesla_v100_sxm2_16gb"),
    ("NVIDIA TITAN V", "titan_v"),
    ("NVIDIA RTX 5880 Ada Generation", "rtx_5880_ada_generation"),
    ("NVIDIA GeForce RTX 3090", "geforce_rtx_3090"),
    ("NVIDIA A100-SXM4-80GB", "a100_sxm4_80gb"),
])
def test_gres_type_of_gpu_names(name: str, gres: str) -> None:
    assert s.slurm_gres_type(name) == gres


def test_gres_type_refuses_a_name_with_nothing_usable() -> None:
    with pytest.raises(s.AnsibleFilterError, match="no usable GRES type"):
        s.slurm_gres_type("NVIDIA ---")


def test_gpus_of_a_recorded_8_gpu_host() -> None:
    gpus = s.slurm_gpus(recorded("L_v100-sxm2-16gb_8gpu.txt"), "/dev/nvidia")
    assert [g["file"] for g in gpus] == [f"/dev/nvidia{i}" for i in range(8)]
    assert {g["type"] for g in gpus} == {"tesla_v100_sxm2_16gb"}
    assert s.slurm_gres_spec(gpus) == "gpu:tesla_v100_sxm2_16gb:8"


def test_gpus_of_a_mixed_host_keep_one_type_each() -> None:
    gpus = s.slurm_gpus(recorded("L_titanv-rtx5880_2gpu.txt"), "/dev/nvidia")
    assert [(g["index"], g["type"]) for g in gpus] == [(0, "titan_v"), (1, "rtx_5880_ada_generation")]
    assert s.slurm_gres_spec(gpus) == "gpu:titan_v:1,gpu:rtx_5880_ada_generation:1"
    forced = s.slurm_gpus(recorded("L_titanv-rtx5880_2gpu.txt"), "/dev/nvidia", "lab_gpu")
    assert s.slurm_gres_spec(forced) == "gpu:lab_gpu:2"


@pytest.mark.parametrize("recording", [
    "L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt", "L_a100-80gb-pcie_1gpu_mig-2x3g40gb.txt"])
def test_gpus_in_mig_mode_are_refused(recording: str) -> None:
    with pytest.raises(s.AnsibleFilterError, match="MIG mode.*AutoDetect=nvml"):
        s.slurm_gpus(recorded(recording), "/dev/nvidia")


def test_no_gpu_and_unknown_output() -> None:
    assert s.slurm_gpus("", "/dev/nvidia") == []
    assert s.slurm_gpus("No devices were found\n", "/dev/nvidia") == []
    assert s.slurm_gres_spec([]) == ""
    with pytest.raises(s.AnsibleFilterError, match="not an `nvidia-smi -L` line"):
        s.slurm_gpus("NVIDIA-SMI has failed because it couldn't communicate with the driver\n", "/dev/nvidia")


@pytest.mark.parametrize("text,version", [
    ("22.05.8-4+deb12u3", "22.05.8"),
    ("slurm-wlm 22.05.8", "22.05.8"),
    ("1:23.11.4-1.2ubuntu5", "23.11.4"),
    ("17.11.2-1build1", "17.11.2"),
    ("", ""),
    ("(none)", ""),
])
def test_upstream_version(text: str, version: str) -> None:
    assert s.slurm_upstream_version(text) == version


def test_dpkg_versions_reads_installed_and_candidate() -> None:
    out = ("installed munge 0.5.15-2+deb12u1\ninstalled slurm-client 22.05.8-4+deb12u3\n"
           "config-files slurmd 22.05.8-4+deb12u3\ncandidate slurm-client 22.05.8-4+deb12u3\n")
    found = s.slurm_dpkg_versions(out)
    assert found["installed"] == {"munge": "0.5.15-2+deb12u1", "slurm-client": "22.05.8-4+deb12u3"}
    assert found["release"] == "22.05.8"
    bare = s.slurm_dpkg_versions("candidate slurm-client 23.02.6-1\n")
    assert bare == {"installed": {}, "candidate": "23.02.6-1", "release": "23.02.6"}
    assert s.slurm_dpkg_versions("candidate slurm-client (none)\n")["release"] == ""
    # What is installed wins over what apt would install.
    assert s.slurm_dpkg_versions("installed slurmd 22.05.8-4\ncandidate slurm-client 23.02.6-1\n")["release"] == "22.05.8"


def test_version_conflict() -> None:
    assert s.slurm_version_conflict({"a": "22.05.8", "b": "22.05.8", "c": ""}) == ""
    assert s.slurm_version_conflict({"b": "23.02.7", "a": "22.05.8", "c": "22.05.8"}) == (
        "22.05.8 on a, c; 23.02.7 on b")


def test_nodes_not_ready() -> None:
    sinfo = "n1|idle|none\nn2|unk*|none\nn3|down|test: taken down\nn4|mix|none\nn5|idle~|none\n"
    assert s.slurm_nodes_not_ready(sinfo, ["n1", "n4"]) == []
    assert s.slurm_nodes_not_ready(sinfo, ["n1", "n2", "n3", "n5", "n6"]) == [
        "n2 (unk*: no reason given)", "n3 (down: test: taken down)", "n5 (idle~: no reason given)",
        "n6 (not in the partition)"]


def render(template: str, **context: object) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True)
    env.filters["effdet_lab.lab.slurm_gres_spec"] = s.slurm_gres_spec
    return env.get_template(template).render(ansible_managed="Ansible managed", **context)


def node(name: str, address: str, recording: str | None) -> dict[str, object]:
    gpus = s.slurm_gpus(recorded(recording), "/dev/nvidia") if recording else []
    return {"name": name, "address": address, "hardware": s.slurm_node_hardware(SLURMD_C), "gpus": gpus}


@pytest.mark.parametrize("confine", [True, False])
def test_slurm_conf_of_a_mixed_cluster(confine: bool) -> None:
    nodes = [node("gpu-a", "10.0.0.11", "L_v100-sxm2-16gb_8gpu.txt"),
             node("gpu-b", "10.0.0.12", "L_titanv-rtx5880_2gpu.txt"),
             node("cpu-c", "10.0.0.13", None)]
    text = render("slurm.conf.j2", slurm_cluster_name="lab", slurm_controller=nodes[0], slurm_confine=confine,
                  slurm_cgroup_confinement="auto", slurm_state_dir="/var/lib/slurm/slurmctld",
                  slurm_spool_dir="/var/lib/slurm/slurmd", slurm_log_dir="/var/log/slurm",
                  slurm_cluster_nodes=nodes, slurm_partition_name="gpu", slurm_partition_max_time="2-00:00:00")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    keys = [ln.split("=", 1)[0] for ln in lines if not ln.startswith(("NodeName=", "PartitionName="))]
    assert len(keys) == len(set(keys)), keys
    assert "SlurmctldHost=gpu-a(10.0.0.11)" in lines
    assert ("NodeName=gpu-a NodeAddr=10.0.0.11 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
            "RealMemory=24105 Gres=gpu:tesla_v100_sxm2_16gb:8 State=UNKNOWN") in lines
    assert any(ln.startswith("NodeName=gpu-b ") and " Gres=gpu:titan_v:1,gpu:rtx_5880_ada_generation:1 " in ln
               for ln in lines)
    assert any(ln.startswith("NodeName=cpu-c ") and "Gres=" not in ln for ln in lines)
    assert "PartitionName=gpu Nodes=gpu-a,gpu-b,cpu-c Default=YES MaxTime=2-00:00:00 State=UP" in lines
    assert ("ProctrackType=proctrack/cgroup" in lines) is confine
    assert ("TaskPlugin=task/cgroup,task/affinity" if confine else "TaskPlugin=task/none") in lines


def test_gres_conf_one_line_per_gpu() -> None:
    text = render("gres.conf.j2", slurm_node=node("gpu-b", "10.0.0.12", "L_titanv-rtx5880_2gpu.txt"))
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == [
        "Name=gpu Type=titan_v File=/dev/nvidia0", "Name=gpu Type=rtx_5880_ada_generation File=/dev/nvidia1"]
    empty = render("gres.conf.j2", slurm_node=node("cpu-c", "10.0.0.13", None))
    assert [ln for ln in empty.splitlines() if not ln.startswith("#")] == []
