"""Filters of the lab_container role: Docker `--gpus` requests as device_requests.

Every form the seed recipe shows (`--gpus all`, `--gpus 2`,
`--gpus '"device=1,2"'`, UUIDs, MIG devices as `device=0:1`) becomes the
`device_requests` list of community.docker.docker_container. The grammar lives
once, in plugins/module_utils/gpu_request.py, which the verifier
(tests/infra/nvidia_smi.py) uses too; see its docstring for what is accepted.
"""
from __future__ import annotations

from typing import Any

try:
    from ansible_collections.effdet_lab.lab.plugins.module_utils import gpu_request
except ImportError:  # the plain repository (roles_path=roles): the same file, by path
    import os
    import runpy

    _by_path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "../../../plugins/module_utils/by_path.py")
    gpu_request = runpy.run_path(_by_path)["load"]("gpu_request")

GpusSpecError = gpu_request.GpuRequestError


def lab_container_device_requests(spec: Any) -> list[dict[str, Any]]:
    """device_requests for a --gpus spec; [] for none. Raises GpusSpecError when malformed.

    Accepted: None/''/'none'; 'all'; an int or digits ('2'); 'count=2';
    'device=1,2' (with or without the shell's inner double quotes); a list of
    GPU indices, MIG indices (0:1) or UUIDs; and the CLI's CSV form with
    driver=, capabilities=, options= ('"capabilities=compute,utility",count=2').
    """
    return gpu_request.device_requests(spec)


def lab_container_gpus_error(spec: Any) -> str:
    """'' when spec is a valid --gpus request, else why not (for an assert)."""
    return gpu_request.gpu_request_error(spec)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "lab_container_device_requests": lab_container_device_requests,
            "lab_container_gpus_error": lab_container_gpus_error,
        }
