"""The verifier's view of `nvidia-smi` output and Docker `--gpus` requests.

The parsing is not here: `nvidia-smi -L`, the `--query-gpu` CSV and driver
versions are read by plugins/module_utils/nvidia_smi.py, and the `--gpus`
grammar by plugins/module_utils/gpu_request.py, the same code the lab_image
and lab_container filters use (loaded by path, as this folder is no package
of the collection). This module re-exports those parsers under the names the
checks in this folder and tests/unit have always used, and adds what only the
verifier needs: which of a host's GPUs a `--gpus` request selects, and the
request a running container was started with (`docker inspect`).
"""

from __future__ import annotations

import runpy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

_load = runpy.run_path(str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "by_path.py"))["load"]
_nvsmi = _load("nvidia_smi")
_gpus = _load("gpu_request")

__all__ = [
    "NO_DEVICES_MESSAGE",
    "GpuRequestError",
    "ListedGpu",
    "MigDevice",
    "QueriedGpu",
    "driver_at_least",
    "gpus_request_from_container",
    "parse_list_gpus",
    "parse_query_gpu_csv",
    "parse_version",
    "select_gpus",
]

NO_DEVICES_MESSAGE = _nvsmi.NO_DEVICES_MESSAGE
ListedGpu = _nvsmi.ListedGpu
MigDevice = _nvsmi.MigDevice
QueriedGpu = _nvsmi.QueriedGpu
parse_list_gpus = _nvsmi.parse_list_gpus
parse_query_gpu_csv = _nvsmi.parse_query_gpu_csv
parse_version = _nvsmi.parse_version
driver_at_least = _nvsmi.driver_at_least
GpuRequestError = _gpus.GpuRequestError


# ---------------------------------------------------------------------------
# docker run --gpus <request>


def select_gpus(request: Any, gpus: Sequence[Any]) -> list:
    """Which of the host's GPUs (ListedGpu, from `nvidia-smi -L` on the host) a
    container started with `docker run --gpus <request>` must see.

    The request is read by gpu_request.parse_gpu_request (Docker CLI syntax,
    outer shell quotes allowed): `all`, `N` (count: the first N GPUs, as Docker
    passes devices 0..N-1), `count=N|all`, `device=<id>[,<id>...]` where an id
    is a GPU index, a GPU UUID (`GPU-...`), a MIG UUID (`MIG-...`) or
    `<gpu>:<mig>` indices, with `capabilities=...`/`driver=nvidia` options.

    A MIG id selects its parent GPU restricted to that MIG device, which is
    what `nvidia-smi -L` prints inside such a container. Returns GPUs in host
    order, without duplicates. Raises GpuRequestError for a malformed request,
    one that names no GPU, unknown ids, or a count larger than the host has.
    """
    parsed = _gpus.parse_gpu_request(request)
    if parsed is None:
        raise GpuRequestError(f"--gpus {request!r} requests no GPU")
    if parsed.device_ids is None:
        if parsed.count == _gpus.ALL:
            return list(gpus)
        if parsed.count > len(gpus):
            raise GpuRequestError(f"--gpus {request!r}: {parsed.count} GPUs requested, host has {len(gpus)}")
        return list(gpus[: parsed.count])
    whole: set[int] = set()
    migs: dict[int, list] = {}
    for device_id in parsed.device_ids:
        gpu, mig = _find_device(device_id, gpus, request)
        if mig is None:
            whole.add(gpu.index)
        else:
            migs.setdefault(gpu.index, []).append(mig)
    out: list = []
    for g in gpus:
        if g.index in whole:
            out.append(g)
        elif g.index in migs:
            out.append(g._replace(mig_devices=tuple(m for m in g.mig_devices if m in migs[g.index])))
    return out


def _find_device(device_id: str, gpus: Sequence[Any], request: Any) -> tuple[Any, Optional[Any]]:
    """(GPU, None) for a whole GPU, (parent GPU, MIG device) for a MIG device; raises GpuRequestError."""
    kind = _gpus.device_id_kind(device_id)
    key = device_id.lower()
    for g in gpus:
        if kind == "index" and g.index == int(device_id):
            return g, None
        if kind == "gpu-uuid" and g.uuid.lower() == key:
            return g, None
        for m in g.mig_devices:
            if kind == "mig-uuid" and m.uuid.lower() == key:
                return g, m
            if kind == "mig-index" and device_id == f"{g.index}:{m.index}":
                return g, m
    raise GpuRequestError(f"--gpus {request!r}: this host has no device {device_id}")


def gpus_request_from_container(inspect: Mapping[str, Any]) -> Optional[str]:
    """The --gpus request a container was started with, from `docker inspect`.

    Reads HostConfig.DeviceRequests (what `--gpus` creates: Count -1 is all)
    and, for containers run with `--runtime=nvidia`, the NVIDIA_VISIBLE_DEVICES
    environment variable (ignored under any other runtime). Returns a request for select_gpus(), or None when the
    container was given no GPU.
    """
    host_config = inspect.get("HostConfig") or {}
    for req in host_config.get("DeviceRequests") or []:
        caps = [c for group in (req.get("Capabilities") or []) for c in group]
        if "gpu" not in caps and (req.get("Driver") or "") != "nvidia":
            continue
        ids = req.get("DeviceIDs") or []
        if ids:
            return "device=" + ",".join(ids)
        n = int(req.get("Count") or 0)
        if n == -1:
            return "all"
        if n > 0:
            return str(n)
    # CUDA and TensorFlow GPU images set NVIDIA_VISIBLE_DEVICES=all in their
    # image config; it only selects GPUs when the nvidia runtime runs the
    # container (its hook reads it). Under runc it means nothing.
    if host_config.get("Runtime") != "nvidia":
        return None
    env = (inspect.get("Config") or {}).get("Env") or []
    for item in env:
        if item.startswith("NVIDIA_VISIBLE_DEVICES="):
            v = item.split("=", 1)[1].strip()
            if v in ("", "void", "none"):
                return None
            return "all" if v == "all" else "device=" + v
    return None
