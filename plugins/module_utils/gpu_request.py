"""Docker's `--gpus` request, parsed once for the lab_container role and the verifier.

The lab_container filters turn a request into community.docker's
`device_requests`; the testinfra checks (tests/infra/nvidia_smi.py) work out
which GPUs a container started with it must see. Both call parse_gpu_request().
Pure Python 3.6+, no Ansible imports.

The grammar is the docker CLI's (cli/opts/gpus.go): the value is one CSV
record; a field without `=` is a count; the keys are `count`, `device`,
`driver`, `capabilities` and `options`; a count is a number or `all`, and
`device=` takes a comma-separated list, so on the command line a list needs
the inner quotes: `--gpus '"device=1,2"'`. On top of the CLI:

- quotes around the whole request are removed, as many pairs as there are
  (`'"device=1,2"'` as written in a shell recipe is `device=1,2`);
- `device=1,2` without the inner quotes is the list 1,2 (the CLI would read a
  device 1 and a count 2, which the daemon refuses);
- None, '', 'none' and an empty list request no GPU (parse_gpu_request
  returns None); an int is a count (-1: all); a list names devices;
- refused where the CLI is lenient: a count of 0, a request with neither a
  count nor devices (the CLI makes that a count of 1), a count together with
  devices (the daemon refuses that), a device listed twice, and a device id
  that is none of the forms below.

A device id is one of the forms the NVIDIA container toolkit accepts in
NVIDIA_VISIBLE_DEVICES, which is where Docker puts the list:

- `0`: a GPU index;
- `0:1`: a MIG device by index, `<GPU index>:<MIG device index>`, as in the
  MIG user guide's `docker run --gpus '"device=0:0,0:1"' ... nvidia-smi -L`;
- `GPU-<uuid>`: a GPU UUID;
- `MIG-<uuid>`, or `MIG-GPU-<uuid>/<gi>/<ci>` from drivers before R470: a MIG
  device UUID.
"""
import csv
import re
from typing import Any, Dict, List, NamedTuple, Optional

__all__ = [
    "ALL",
    "GpuRequest",
    "GpuRequestError",
    "device_id_kind",
    "device_requests",
    "gpu_request_error",
    "parse_gpu_request",
]

# count for every GPU (`all`), as Docker's API writes it.
ALL = -1

_DEVICE_ID_KINDS = (
    ("index", re.compile(r"\d+")),
    ("mig-index", re.compile(r"\d+:\d+")),
    ("gpu-uuid", re.compile(r"GPU-[0-9a-fA-F-]{8,}")),
    ("mig-uuid", re.compile(r"MIG-[0-9a-fA-F-]{8,}|MIG-GPU-[0-9a-fA-F-]+/\d+/\d+")),
)
_NONE = ("", "none")
_KEYS = ("capabilities", "count", "device", "driver", "options")


class GpuRequestError(ValueError):
    """A malformed --gpus request (select_gpus also raises it for GPUs a host lacks)."""


class GpuRequest(NamedTuple):
    """One parsed request: either a count (ALL for every GPU) or device ids."""

    count: Optional[int]
    device_ids: Optional[List[str]]
    driver: str
    capabilities: List[str]
    options: Dict[str, str]


def device_id_kind(device_id: str) -> Optional[str]:
    """'index', 'mig-index', 'gpu-uuid' or 'mig-uuid' for a device id; None for anything else."""
    for kind, pattern in _DEVICE_ID_KINDS:
        if pattern.fullmatch(device_id):
            return kind
    return None


def _fail(spec: Any, why: str) -> GpuRequestError:
    return GpuRequestError("gpus {!r}: {}".format(spec, why))


def _strip_quotes(text: str) -> str:
    """Text without the quote pairs around all of it: '"device=1,2"' -> device=1,2.

    A pair is removed only where it quotes the whole text, not two fields:
    '"capabilities=compute,utility","device=4"' stays as it is."""
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def _devices(values: List[str], spec: Any) -> List[str]:
    ids = [v.strip() for v in values if v.strip()]
    if not ids:
        raise _fail(spec, "empty device list")
    bad = [d for d in ids if device_id_kind(d) is None]
    if bad:
        raise _fail(spec, "{} is neither a GPU index, a MIG index (0:1) nor a GPU-/MIG- UUID".format(
            ", ".join(map(repr, bad))))
    if len(set(ids)) != len(ids):
        raise _fail(spec, "a device is listed twice")
    return ids


def _count(value: str, spec: Any) -> int:
    if value == "all":
        return ALL
    if not value.isdigit():
        raise _fail(spec, "count {!r} is neither a number nor 'all'".format(value))
    if int(value) == 0:
        raise _fail(spec, "a count of 0 requests no GPU; use 'none' (or leave it unset) for that")
    return int(value)


def _request(count: Optional[int] = None, device_ids: Optional[List[str]] = None, driver: str = "nvidia",
             capabilities: Optional[List[str]] = None, options: Optional[Dict[str, str]] = None) -> GpuRequest:
    return GpuRequest(count, device_ids, driver, list(capabilities or ["gpu"]), dict(options or {}))


def _capabilities(value: str, spec: Any) -> List[str]:
    caps = [c.strip() for c in value.split(",") if c.strip()]
    if not caps:
        raise _fail(spec, "empty capabilities")
    return caps if "gpu" in caps else ["gpu"] + caps


def _option(value: str, spec: Any) -> Dict[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise _fail(spec, "options must be options=key=value")
    return {key: val}


def _parse_fields(text: str, spec: Any) -> GpuRequest:
    """The CLI's CSV form: 'count=2', '"device=1,2",capabilities=compute', 'all'."""
    try:
        fields = next(csv.reader([text], skipinitialspace=True))
    except (csv.Error, StopIteration) as exc:
        raise _fail(spec, "cannot parse ({})".format(exc)) from None
    count: Optional[int] = None
    device_ids: Optional[List[str]] = None
    driver = "nvidia"
    capabilities = ["gpu"]
    options: Dict[str, str] = {}
    for field in (f.strip() for f in fields):
        if not field:
            raise _fail(spec, "empty field")
        key, sep, value = field.partition("=")
        key = key.strip() if sep else "count"
        if key not in _KEYS:
            raise _fail(spec, "unknown option {!r} (known: {})".format(key, ", ".join(_KEYS)))
        if key == "count":
            if count is not None:
                raise _fail(spec, "the count is given twice")
            count = _count((value if sep else field).strip(), spec)
        elif key == "device":
            device_ids = _devices(_strip_quotes(value).split(","), spec)
        elif key == "driver":
            driver = value.strip()
            if not driver:
                raise _fail(spec, "empty driver")
        elif key == "capabilities":
            capabilities = _capabilities(value, spec)
        else:
            options.update(_option(value, spec))
    if count is not None and device_ids is not None:
        raise _fail(spec, "give either a count or a device list, not both")
    if count is None and device_ids is None:
        raise _fail(spec, "names neither 'all', a count, nor devices")
    return _request(count, device_ids, driver, capabilities, options)


def parse_gpu_request(spec: Any) -> Optional[GpuRequest]:
    """The request `spec` stands for; None when it requests no GPU. Raises GpuRequestError.

    spec: None/False/''/'none'/[] (no GPU); 'all'; an int or digits ('2');
    'count=2'; 'device=1,2' (with or without the shell's quotes); a list of
    device ids; or the CLI's CSV form with driver=, capabilities=, options=
    ('"capabilities=compute,utility",count=2'). See the module's docstring.
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, bool):
        raise _fail(spec, "true is ambiguous; use 'all' or a count")
    if isinstance(spec, int):
        return _request(count=ALL if spec == ALL else _count(str(spec), spec))
    if isinstance(spec, (list, tuple)):
        return _request(device_ids=_devices([str(s) for s in spec], spec)) if spec else None
    if not isinstance(spec, str):
        raise _fail(spec, "expected a string, a number or a list")
    text = _strip_quotes(spec)
    if text.lower() in _NONE:
        return None
    if text.startswith("device=") and text.count("=") == 1:
        # "device=1,2" without the CLI's inner quotes: the whole rest is the list.
        return _request(device_ids=_devices(text[len("device="):].split(","), spec))
    return _parse_fields(text, spec)


def device_requests(spec: Any) -> List[Dict[str, Any]]:
    """community.docker.docker_container's `device_requests` for spec; [] for no GPU.

    Raises GpuRequestError when spec is malformed."""
    request = parse_gpu_request(spec)
    if request is None:
        return []
    out: Dict[str, Any] = {"driver": request.driver, "capabilities": [list(request.capabilities)]}
    if request.device_ids is not None:
        out["device_ids"] = list(request.device_ids)
    else:
        out["count"] = request.count
    if request.options:
        out["options"] = dict(request.options)
    return [out]


def gpu_request_error(spec: Any) -> str:
    """'' when spec is a valid request (or none), else why not."""
    try:
        parse_gpu_request(spec)
    except GpuRequestError as exc:
        return str(exc)
    return ""
