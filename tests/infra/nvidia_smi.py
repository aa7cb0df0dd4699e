"""Pure parsers and helpers for `nvidia-smi` output and Docker `--gpus` requests.

Nothing here touches a host: every function takes text (what `nvidia-smi`
printed) or plain values and returns dataclasses, so the same code is used by
the testinfra checks in this folder and unit-tested against recorded real
outputs in tests/fixtures/nvidia-smi/ (see SOURCES.md there).

Forms handled:
- `nvidia-smi -L`: one `GPU <i>: <name> (UUID: GPU-...)` line per GPU, each
  optionally followed by indented MIG device lines
  `  MIG 3g.40gb     Device  0: (UUID: MIG-...)`.
- `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`: with or
  without the header line, with or without units (`81920 MiB`,
  `memory.total [MiB]`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

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

# What nvidia-smi prints (exit status 6) when the driver is loaded but no GPU is
# visible, e.g. inside a container started without --gpus.
NO_DEVICES_MESSAGE = "No devices were found"

# Query field aliases documented by `nvidia-smi --help-query-gpu`.
_FIELD_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "gpu_serial": "serial",
}

_NOT_AVAILABLE = {"N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", ""}


@dataclass(frozen=True)
class MigDevice:
    """One MIG device line of `nvidia-smi -L`."""

    profile: str  # e.g. "3g.40gb"
    index: int  # the MIG device index within its parent GPU
    uuid: str  # "MIG-..." (or "MIG-GPU-<uuid>/<gi>/<ci>" on old drivers)


@dataclass(frozen=True)
class ListedGpu:
    """One GPU of `nvidia-smi -L`, with its MIG devices (empty without MIG)."""

    index: int
    name: str
    uuid: str
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class QueriedGpu:
    """One row of `nvidia-smi --query-gpu=... --format=csv`.

    The common fields are typed; `values` keeps every queried field by its
    canonical name (aliases resolved), units stripped, N/A as None.
    """

    values: Mapping[str, Optional[str]] = field(default_factory=dict)

    def _get(self, name: str) -> Optional[str]:
        return self.values.get(name)

    @property
    def index(self) -> Optional[int]:
        v = self._get("index")
        return None if v is None else int(v)

    @property
    def name(self) -> Optional[str]:
        return self._get("name")

    @property
    def uuid(self) -> Optional[str]:
        return self._get("uuid")

    @property
    def driver_version(self) -> Optional[str]:
        return self._get("driver_version")

    @property
    def memory_total_mib(self) -> Optional[int]:
        v = self._get("memory.total")
        return None if v is None else int(float(v))

    @property
    def compute_cap(self) -> Optional[str]:
        return self._get("compute_cap")


# ---------------------------------------------------------------------------
# nvidia-smi -L

_GPU_LINE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>GPU-[0-9A-Fa-f-]+)\)\s*$")
_MIG_LINE = re.compile(
    r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<index>\d+): \(UUID: (?P<uuid>MIG-[0-9A-Za-z/-]+)\)\s*$"
)


def parse_list_gpus(text: str) -> list[ListedGpu]:
    """Parse `nvidia-smi -L`. Empty output or "No devices were found" is [].

    Raises ValueError on any line that is neither a GPU nor a MIG line, and on
    a MIG line before any GPU line, so unexpected output never passes silently.
    """
    gpus: list[ListedGpu] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.strip() == NO_DEVICES_MESSAGE and not gpus:
            continue
        m = _GPU_LINE.match(line)
        if m:
            gpus.append(ListedGpu(int(m["index"]), m["name"], m["uuid"]))
            continue
        m = _MIG_LINE.match(line)
        if m:
            if not gpus:
                raise ValueError(f"line {lineno}: MIG device before any GPU: {line!r}")
            parent = gpus[-1]
            mig = MigDevice(m["profile"], int(m["index"]), m["uuid"])
            gpus[-1] = replace(parent, mig_devices=parent.mig_devices + (mig,))
            continue
        raise ValueError(f"line {lineno}: not an `nvidia-smi -L` line: {line!r}")
    return gpus


# ---------------------------------------------------------------------------
# nvidia-smi --query-gpu=... --format=csv

_HEADER_UNIT = re.compile(r"^(?P<name>.+?) \[(?P<unit>[^\]]+)\]$")


def _canonical(field_name: str) -> str:
    f = field_name.strip()
    return _FIELD_ALIASES.get(f, f)


def parse_query_gpu_csv(text: str, fields: Sequence[str]) -> list[QueriedGpu]:
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`.

    `fields` is the list given to --query-gpu, in order (aliases allowed). A
    header line, if present, must name exactly these fields (with or without
    `[unit]` suffixes); units are stripped from values (`81920 MiB` -> `81920`).
    N/A-like values become None. Raises ValueError on a header mismatch or a row
    with the wrong number of columns.
    """
    wanted = [_canonical(f) for f in fields]
    if not wanted:
        raise ValueError("no fields given")
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].strip() == NO_DEVICES_MESSAGE:
        lines = lines[1:]
    rows = list(csv.reader(lines, skipinitialspace=True))
    units: list[Optional[str]] = [None] * len(wanted)
    if rows and _is_header(rows[0], wanted):
        header = rows.pop(0)
        for i, col in enumerate(header):
            m = _HEADER_UNIT.match(col.strip())
            if m:
                units[i] = m["unit"]
    result: list[QueriedGpu] = []
    for n, row in enumerate(rows, 1):
        if len(row) != len(wanted):
            raise ValueError(f"row {n}: {len(row)} columns for {len(wanted)} fields {wanted}: {row!r}")
        values: dict[str, Optional[str]] = {}
        for name, unit, cell in zip(wanted, units, row):
            values[name] = _clean_value(cell, unit)
        result.append(QueriedGpu(values))
    return result


def _is_header(row: Sequence[str], wanted: Sequence[str]) -> bool:
    names = []
    for col in row:
        col = col.strip()
        m = _HEADER_UNIT.match(col)
        names.append(_canonical(m["name"] if m else col))
    if names == list(wanted):
        return True
    # Every column shaped like a query field name: a header, but for other
    # fields than the caller asked for. Data rows hold digits, capitals or N/A.
    if all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", n) for n in names):
        raise ValueError(f"csv header {names} does not match the queried fields {list(wanted)}")
    return False


def _clean_value(cell: str, unit: Optional[str]) -> Optional[str]:
    v = cell.strip()
    if v in _NOT_AVAILABLE:
        return None
    if unit:
        suffix = " " + unit
        if v.endswith(suffix):
            v = v[: -len(suffix)].strip()
    return v


# ---------------------------------------------------------------------------
# Driver version


def parse_version(version: str) -> tuple[int, ...]:
    """'535.129.03' -> (535, 129, 3). Raises ValueError on anything else."""
    v = version.strip()
    if not re.fullmatch(r"\d+(\.\d+)*", v):
        raise ValueError(f"not a driver version: {version!r}")
    return tuple(int(p) for p in v.split("."))


def driver_at_least(version: str, minimum: str) -> bool:
    """True when driver `version` >= `minimum`, compared numerically per part.

    Missing trailing parts count as 0: '535' == '535.0.0'.
    """
    a, b = parse_version(version), parse_version(minimum)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


# ---------------------------------------------------------------------------
# docker run --gpus <request>


class GpuRequestError(ValueError):
    """The --gpus request is malformed or names GPUs the host does not have."""


def select_gpus(request: str, gpus: Sequence[ListedGpu]) -> list[ListedGpu]:
    """Which of the host's GPUs (from `nvidia-smi -L` on the host) a container
    started with `docker run --gpus <request>` must see.

    Accepted requests (Docker CLI syntax, outer shell quotes already removed):
    `all`, `N` (count: the first N GPUs, as Docker passes devices 0..N-1),
    `count=N|all`, `device=<id>[,<id>...]` where an id is a GPU index, a GPU
    UUID (`GPU-...`), a MIG UUID (`MIG-...`) or `<gpu>:<mig>` indices. The
    request may carry `capabilities=...`/`driver=nvidia` options and may be
    wrapped in double quotes (`"device=1,2"`), as the CLI requires for lists.

    A MIG id selects its parent GPU restricted to that MIG device, which is
    what `nvidia-smi -L` prints inside such a container. Returns GPUs in host
    order, without duplicates. Raises GpuRequestError for unknown ids or a
    count larger than the number of GPUs.
    """
    count, devices = _parse_request(request)
    if count is not None:
        if count == -1:
            return list(gpus)
        if count > len(gpus):
            raise GpuRequestError(f"--gpus {request!r}: {count} GPUs requested, host has {len(gpus)}")
        return list(gpus[:count])
    assert devices is not None
    by_index = {g.index: g for g in gpus}
    by_uuid = {g.uuid.lower(): g for g in gpus}
    mig_by_uuid = {m.uuid.lower(): (g, m) for g in gpus for m in g.mig_devices}
    whole: set[int] = set()
    migs: dict[int, list[MigDevice]] = {}
    for dev in devices:
        d = dev.strip()
        key = d.lower()
        if re.fullmatch(r"\d+", d):
            if int(d) not in by_index:
                raise GpuRequestError(f"--gpus {request!r}: no GPU with index {d}")
            whole.add(int(d))
        elif key in by_uuid:
            whole.add(by_uuid[key].index)
        elif key in mig_by_uuid:
            g, m = mig_by_uuid[key]
            migs.setdefault(g.index, []).append(m)
        elif re.fullmatch(r"\d+:\d+", d):
            gi, mi = (int(x) for x in d.split(":"))
            g = by_index.get(gi)
            m = next((x for x in g.mig_devices if x.index == mi), None) if g else None
            if g is None or m is None:
                raise GpuRequestError(f"--gpus {request!r}: no MIG device {d}")
            migs.setdefault(gi, []).append(m)
        else:
            raise GpuRequestError(f"--gpus {request!r}: unknown device {d!r}")
    out: list[ListedGpu] = []
    for g in gpus:
        if g.index in whole:
            out.append(g)
        elif g.index in migs:
            chosen = tuple(m for m in g.mig_devices if m in migs[g.index])
            out.append(replace(g, mig_devices=chosen))
    return out


def _parse_request(request: str) -> tuple[Optional[int], Optional[list[str]]]:
    r = request.strip()
    if len(r) >= 2 and r[0] == r[-1] and r[0] in "\"'":
        r = r[1:-1]
    if not r:
        raise GpuRequestError("empty --gpus request")
    if r == "all":
        return -1, None
    if re.fullmatch(r"\d+", r):
        n = int(r)
        if n == 0:
            raise GpuRequestError("--gpus 0 requests no GPU")
        return n, None
    # key=value options, comma-separated; a device list continues over commas.
    count: Optional[int] = None
    devices: Optional[list[str]] = None
    current: Optional[str] = None
    for part in next(csv.reader([r])):
        part = part.strip()
        if "=" in part:
            k, v = part.split("=", 1)
            k = k.strip()
            current = k
            if k == "count":
                count = -1 if v == "all" else int(v)
                if count == 0:
                    raise GpuRequestError("--gpus count=0 requests no GPU")
            elif k in ("device", "devices"):
                devices = [v] if v else []
            elif k in ("capabilities", "driver", "options"):
                pass
            else:
                raise GpuRequestError(f"unknown --gpus option {k!r} in {request!r}")
        elif current in ("device", "devices") and devices is not None:
            devices.append(part)
        elif current == "capabilities":
            pass
        else:
            raise GpuRequestError(f"cannot parse --gpus {request!r}")
    if devices is not None and count is not None:
        raise GpuRequestError(f"--gpus {request!r}: both count and device")
    if devices is not None:
        if not devices:
            raise GpuRequestError(f"--gpus {request!r}: empty device list")
        return None, devices
    if count is not None:
        return count, None
    raise GpuRequestError(f"--gpus {request!r} names neither a count nor devices")


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
