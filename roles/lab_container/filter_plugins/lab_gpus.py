"""Pure logic of the lab_container role: Docker `--gpus` requests as device_requests.

Every form the seed recipe shows (`--gpus all`, `--gpus 2`,
`--gpus '"device=1,2"'`, UUIDs) becomes the `device_requests` list of
community.docker.docker_container, parsed the way the docker CLI parses
`--gpus` (opts/gpus.go: CSV fields, `all`, a count, key=value). Free of
Ansible imports so that tests/unit/test_lab_gpus.py exercises it directly.
"""
from __future__ import annotations

import csv
import re
from typing import Any

_DEVICE_ID = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]{8,}|MIG-[0-9a-fA-F-]{8,}|MIG-GPU-[0-9a-fA-F-]+/\d+/\d+)$")
_NONE = {"", "none"}
_KEYS = {"driver", "count", "device", "capabilities", "options"}


class GpusSpecError(ValueError):
    pass


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def _devices(values: list[str], spec: Any) -> list[str]:
    ids = [v.strip() for v in values if v.strip()]
    if not ids:
        raise GpusSpecError(f"gpus {spec!r}: empty device list")
    bad = [d for d in ids if not _DEVICE_ID.match(d)]
    if bad:
        raise GpusSpecError(f"gpus {spec!r}: {', '.join(map(repr, bad))} is neither a GPU index nor a GPU-/MIG- UUID")
    if len(set(ids)) != len(ids):
        raise GpusSpecError(f"gpus {spec!r}: a device is listed twice")
    return ids


def _count(value: str, spec: Any) -> int:
    if value == "all":
        return -1
    if not value.isdigit():
        raise GpusSpecError(f"gpus {spec!r}: count {value!r} is neither a number nor 'all'")
    if int(value) == 0:
        raise GpusSpecError(f"gpus {spec!r}: a count of 0 requests no GPU; use 'none' (or leave it unset) for that")
    return int(value)


def lab_container_device_requests(spec: Any) -> list[dict[str, Any]]:
    """device_requests for a --gpus spec; [] for none. Raises GpusSpecError when malformed.

    Accepted: None/''/'none'; 'all'; an int or digits ('2'); 'count=2';
    'device=1,2' (with or without the shell's inner double quotes); a list of
    indices or UUIDs; and the CLI's CSV form with driver=, capabilities=,
    options= ('"capabilities=compute,utility",count=2').
    """
    if spec is None or spec is False:
        return []
    if isinstance(spec, bool):
        raise GpusSpecError(f"gpus {spec!r}: true is ambiguous; use 'all' or a count")
    if isinstance(spec, int):
        return _request(count=-1 if spec == -1 else _count(str(spec), spec))
    if isinstance(spec, (list, tuple)):
        return _request(device_ids=_devices([str(s) for s in spec], spec)) if spec else []
    if not isinstance(spec, str):
        raise GpusSpecError(f"gpus {spec!r}: expected a string, a number or a list")
    text = _strip_quotes(spec)
    if text.lower() in _NONE:
        return []
    # "device=1,2" without the CLI's inner quotes: the whole rest is the list.
    if text.startswith("device=") and text.count("=") == 1:
        return _request(device_ids=_devices(text[len("device="):].split(","), spec))
    try:
        fields = next(csv.reader([text], skipinitialspace=True))
    except (csv.Error, StopIteration) as exc:
        raise GpusSpecError(f"gpus {spec!r}: cannot parse ({exc})") from None
    count = None
    device_ids = None
    driver = "nvidia"
    capabilities = ["gpu"]
    options: dict[str, str] = {}
    for field in fields:
        field = field.strip()
        if not field:
            raise GpusSpecError(f"gpus {spec!r}: empty field")
        if "=" not in field:
            if count is not None:
                raise GpusSpecError(f"gpus {spec!r}: the count is given twice")
            count = _count(field, spec)
            continue
        key, _, value = field.partition("=")
        key = key.strip()
        if key not in _KEYS:
            raise GpusSpecError(f"gpus {spec!r}: unknown option {key!r} (known: {', '.join(sorted(_KEYS))})")
        if key == "count":
            if count is not None:
                raise GpusSpecError(f"gpus {spec!r}: the count is given twice")
            count = _count(value.strip(), spec)
        elif key == "device":
            device_ids = _devices(_strip_quotes(value).split(","), spec)
        elif key == "driver":
            driver = value.strip()
            if not driver:
                raise GpusSpecError(f"gpus {spec!r}: empty driver")
        elif key == "capabilities":
            capabilities = [c.strip() for c in value.split(",") if c.strip()]
            if not capabilities:
                raise GpusSpecError(f"gpus {spec!r}: empty capabilities")
            if "gpu" not in capabilities:
                capabilities.insert(0, "gpu")
        else:
            k, sep, v = value.partition("=")
            if not sep or not k:
                raise GpusSpecError(f"gpus {spec!r}: options must be options=key=value")
            options[k] = v
    if count is not None and device_ids is not None:
        raise GpusSpecError(f"gpus {spec!r}: give either a count or a device list, not both")
    if count is None and device_ids is None:
        raise GpusSpecError(f"gpus {spec!r}: names neither 'all', a count, nor devices")
    return _request(count=count, device_ids=device_ids, driver=driver, capabilities=capabilities, options=options)


def _request(count=None, device_ids=None, driver="nvidia", capabilities=("gpu",), options=None) -> list[dict[str, Any]]:
    req: dict[str, Any] = {"driver": driver, "capabilities": [list(capabilities)]}
    if device_ids is not None:
        req["device_ids"] = list(device_ids)
    else:
        req["count"] = count
    if options:
        req["options"] = dict(options)
    return [req]


def lab_container_gpus_error(spec: Any) -> str:
    """'' when spec is a valid --gpus request, else why not (for an assert)."""
    try:
        lab_container_device_requests(spec)
    except GpusSpecError as exc:
        return str(exc)
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "lab_container_device_requests": lab_container_device_requests,
            "lab_container_gpus_error": lab_container_gpus_error,
        }
