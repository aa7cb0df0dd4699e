"""GPUs for Slurm on a simulated host: a test double.

Stands in for: the NVIDIA GPUs of a lab server as Slurm's GRES sees them,
that is the device file of each GPU (gres.conf's File=/dev/nvidia<i>) and
what `nvidia-smi -L` lists, from which the slurm role writes the node's Gres=
and gres.conf.

What it is: character devices with NVIDIA's major number (195) under
/dev/effdet-lab-standin/, and an executable under
/usr/local/lib/effdet-lab-standin/ that prints a recorded real `nvidia-smi -L`
(tests/fixtures/nvidia-smi/, SOURCES.md), cut to the wanted number of GPUs.
The inventory points the slurm role at both (slurm_nvidia_smi,
slurm_gpu_device_prefix).

What differs from the real thing: there is no GPU, driver or CUDA behind
them. Slurm allocates them, counts them and serialises the jobs that ask for
them, but only stat()s the device files (no cgroup confinement in a
container), and jobs run on CPU. The standard paths (/dev/nvidia*,
/usr/bin/nvidia-smi) stay absent, so every other role and the verifier still
see a host with no GPU, as they must.
"""
from __future__ import annotations

from .shell import REPO_ROOT, docker

STANDIN_DIR = "/usr/local/lib/effdet-lab-standin"
NVIDIA_SMI = f"{STANDIN_DIR}/nvidia-smi"
DEVICE_DIR = "/dev/effdet-lab-standin"
DEVICE_PREFIX = f"{DEVICE_DIR}/nvidia"
NVIDIA_MAJOR = 195
RECORDINGS = REPO_ROOT / "tests" / "fixtures" / "nvidia-smi"
DEFAULT_RECORDING = "L_v100-sxm2-16gb_8gpu.txt"


def recorded_list(count: int, recording: str = DEFAULT_RECORDING) -> str:
    """The first `count` GPU lines of a recorded `nvidia-smi -L` (MIG lines kept with their GPU)."""
    lines = (RECORDINGS / recording).read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    gpus = 0
    for line in lines:
        if line.startswith("GPU "):
            gpus += 1
        if gpus > count:
            break
        if gpus:
            kept.append(line)
    if gpus < count:
        raise ValueError(f"{recording} lists {gpus} GPUs, fewer than {count}")
    return "\n".join(kept) + "\n"


def install(container: str, count: int, recording: str = DEFAULT_RECORDING) -> dict[str, str]:
    """Put `count` stand-in GPUs on a running simulated host; return the slurm role's inventory vars."""
    listing = recorded_list(count, recording)
    script = "\n".join([
        "set -eu",
        f"mkdir -p {STANDIN_DIR} {DEVICE_DIR}",
        f"rm -f {DEVICE_PREFIX}*",
        *(f"mknod -m 0666 {DEVICE_PREFIX}{i} c {NVIDIA_MAJOR} {i}" for i in range(count)),
        f"cat > {NVIDIA_SMI}.txt <<'RECORDED'\n{listing}RECORDED",
        f"cat > {NVIDIA_SMI} <<'STUB'\n#!/bin/sh\n"
        f"# effdet-lab test double: a recorded real nvidia-smi -L ({recording}), nothing else.\n"
        f'[ "$*" = -L ] || {{ echo "nvidia-smi stand-in: only -L is recorded" >&2; exit 2; }}\n'
        f"exec cat {NVIDIA_SMI}.txt\nSTUB",
        f"chmod 0755 {NVIDIA_SMI}",
    ])
    docker("exec", container, "sh", "-c", script)
    return {"slurm_nvidia_smi": NVIDIA_SMI, "slurm_gpu_device_prefix": DEVICE_PREFIX}

