"""What `nvidia-smi` prints, parsed once for the lab_image role and the verifier.

The lab_image filters read the compute capability and the driver version from
the host's `nvidia-smi --query-gpu=...` output; the testinfra checks
(tests/infra/nvidia_smi.py) read `nvidia-smi -L` and the same CSV. Both use
these functions, which take text and return plain values, so they are
unit-tested on recorded real outputs (tests/fixtures/nvidia-smi/, SOURCES.md).
Pure Python 3.6+, no Ansible imports.

Forms handled:
- `nvidia-smi -L`: one `GPU <i>: <name> (UUID: GPU-...)` line per GPU, each
  optionally followed by indented MIG device lines
  `  MIG 3g.40gb     Device  0: (UUID: MIG-...)`.
- `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`: with or
  without the header line, with or without units (`81920 MiB`,
  `memory.total [MiB]`). A first line is the header when it names the queried
  fields or when every cell is shaped like a field name (`memory.total`);
  values never are (they hold digits, capitals, `N/A`).
- driver versions (`535.104.05`, `515.57`), compared numerically per part.
"""
import csv
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

__all__ = [
    "NO_DEVICES_MESSAGE",
    "NO_DEVICES_RC",
    "ListedGpu",
    "MigDevice",
    "QueriedGpu",
    "canonical_field",
    "compute_cap_tuple",
    "driver_at_least",
    "driver_tuple",
    "parse_compute_caps",
    "parse_driver_versions",
    "parse_list_gpus",
    "parse_query_column",
    "parse_query_gpu_csv",
    "parse_version",
]

# What nvidia-smi prints, with exit status 6, when the driver is loaded but no
# GPU is visible, e.g. inside a container started without --gpus.
NO_DEVICES_MESSAGE = "No devices were found"
NO_DEVICES_RC = 6

# Query field aliases documented by `nvidia-smi --help-query-gpu`.
_FIELD_ALIASES = {
    "gpu_name": "name",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "gpu_serial": "serial",
}
_NOT_AVAILABLE = {"N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", ""}
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_]+)*")
_HEADER_UNIT = re.compile(r"^(?P<name>.+?) \[(?P<unit>[^\]]+)\]$")
_CC = re.compile(r"^\s*(\d+)\.(\d+)\s*$")
# An NVIDIA driver version as nvidia-smi prints it: 470.82.01, 535.104.05, 515.57.
_DRIVER = re.compile(r"^\s*(\d+(?:\.\d+){0,3})\s*$")


class MigDevice(NamedTuple):
    """One MIG device line of `nvidia-smi -L`."""

    profile: str  # e.g. "3g.40gb"
    index: int  # the MIG device index within its parent GPU
    uuid: str  # "MIG-..." (or "MIG-GPU-<uuid>/<gi>/<ci>" on old drivers)


class ListedGpu(NamedTuple):
    """One GPU of `nvidia-smi -L`, with its MIG devices (empty without MIG)."""

    index: int
    name: str
    uuid: str
    mig_devices: Tuple[MigDevice, ...]


class QueriedGpu(NamedTuple):
    """One row of `nvidia-smi --query-gpu=... --format=csv`.

    `values` keeps every queried field by its canonical name (aliases
    resolved), units stripped, N/A as None; the common fields are typed.
    """

    values: Mapping[str, Optional[str]]

    @property
    def index(self) -> Optional[int]:  # type: ignore[override]
        v = self.values.get("index")
        return None if v is None else int(v)

    @property
    def name(self) -> Optional[str]:
        return self.values.get("name")

    @property
    def uuid(self) -> Optional[str]:
        return self.values.get("uuid")

    @property
    def driver_version(self) -> Optional[str]:
        return self.values.get("driver_version")

    @property
    def memory_total_mib(self) -> Optional[int]:
        v = self.values.get("memory.total")
        return None if v is None else int(float(v))

    @property
    def compute_cap(self) -> Optional[str]:
        return self.values.get("compute_cap")


# ---------------------------------------------------------------------------
# nvidia-smi -L

_GPU_LINE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>GPU-[0-9A-Fa-f-]+)\)\s*$")
_MIG_LINE = re.compile(
    r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<index>\d+): \(UUID: (?P<uuid>MIG-[0-9A-Za-z/-]+)\)\s*$"
)


def parse_list_gpus(text: str) -> List[ListedGpu]:
    """Parse `nvidia-smi -L`. Empty output or "No devices were found" is [].

    Raises ValueError on any line that is neither a GPU nor a MIG line, and on
    a MIG line before any GPU line, so unexpected output never passes silently.
    """
    gpus: List[ListedGpu] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or (line.strip() == NO_DEVICES_MESSAGE and not gpus):
            continue
        m = _GPU_LINE.match(line)
        if m:
            gpus.append(ListedGpu(int(m.group("index")), m.group("name"), m.group("uuid"), ()))
            continue
        m = _MIG_LINE.match(line)
        if not m:
            raise ValueError("line {}: not an `nvidia-smi -L` line: {!r}".format(lineno, line))
        if not gpus:
            raise ValueError("line {}: MIG device before any GPU: {!r}".format(lineno, line))
        mig = MigDevice(m.group("profile"), int(m.group("index")), m.group("uuid"))
        gpus[-1] = gpus[-1]._replace(mig_devices=gpus[-1].mig_devices + (mig,))
    return gpus


# ---------------------------------------------------------------------------
# nvidia-smi --query-gpu=... --format=csv


class _Table(NamedTuple):
    """The CSV split into cells; the header (if any) apart."""

    header: Optional[str]  # the header line as printed; None without one
    names: List[str]  # canonical field names of the header; [] without one
    units: List[Optional[str]]  # the header's `[unit]` per column; [] without one
    rows: List[Tuple[str, List[str]]]  # (line, cells) per GPU


def canonical_field(name: str) -> str:
    """A --query-gpu field's canonical name: 'gpu_name' -> 'name', units dropped."""
    f = name.strip()
    m = _HEADER_UNIT.match(f)
    f = m.group("name").strip() if m else f
    return _FIELD_ALIASES.get(f, f)


def _unit(cell: str) -> Optional[str]:
    m = _HEADER_UNIT.match(cell.strip())
    return m.group("unit") if m else None


def _read_table(text: str, wanted: Optional[Sequence[str]] = None) -> _Table:
    """Split --query-gpu CSV output; wanted: the canonical queried fields, if known."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if lines and lines[0] == NO_DEVICES_MESSAGE:
        lines = lines[1:]
    rows = [(line, [c.strip() for c in cells]) for line, cells in zip(lines, csv.reader(lines, skipinitialspace=True))]
    if rows:
        names = [canonical_field(c) for c in rows[0][1]]
        if (wanted and names == list(wanted)) or all(_FIELD_NAME.fullmatch(n) for n in names):
            return _Table(rows[0][0], names, [_unit(c) for c in rows[0][1]], rows[1:])
    return _Table(None, [], [], rows)


def _clean_value(cell: str, unit: Optional[str]) -> str:
    """The cell without its unit suffix (`81920 MiB` -> `81920` under `[MiB]`)."""
    if unit and cell.endswith(" " + unit):
        return cell[: -len(unit) - 1].strip()
    return cell


def parse_query_gpu_csv(text: str, fields: Sequence[str]) -> List[QueriedGpu]:
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`.

    `fields` is the list given to --query-gpu, in order (aliases allowed). A
    header line, if present, must name exactly these fields (with or without
    `[unit]` suffixes); units are stripped from values (`81920 MiB` -> `81920`).
    N/A-like values become None. Raises ValueError on a header mismatch or a row
    with the wrong number of columns.
    """
    wanted = [canonical_field(f) for f in fields]
    if not wanted:
        raise ValueError("no fields given")
    table = _read_table(text, wanted)
    if table.header is not None and table.names != wanted:
        raise ValueError("csv header {} does not match the queried fields {}".format(table.names, wanted))
    units = table.units or [None] * len(wanted)
    result: List[QueriedGpu] = []
    for n, (_, row) in enumerate(table.rows, 1):
        if len(row) != len(wanted):
            raise ValueError("row {}: {} columns for {} fields {}: {!r}".format(n, len(row), len(wanted), wanted, row))
        values: Dict[str, Optional[str]] = {}
        for name, unit, cell in zip(wanted, units, row):
            values[name] = None if cell in _NOT_AVAILABLE else _clean_value(cell, unit)
        result.append(QueriedGpu(values))
    return result


def parse_query_column(stdout: str, field: str, valid: Callable[[str], Any], what: str,
                       fields: Optional[Sequence[str]] = None) -> List[str]:
    """One field's values from `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`.

    One value per GPU, in index order. With a header line the field's column
    is found by name; without one, `fields` names the queried fields in order;
    without either, the output must have one column (`--query-gpu=<field>`).
    Raises ValueError where the field is not among `fields` or the header,
    where header-less output has several columns and no `fields`, or where a
    value is not valid (valid(value) falsy): on the first line, that the
    output has no such column; on a later one, that the value is not `what`.
    """
    wanted = [canonical_field(f) for f in fields] if fields else None
    if wanted and field not in wanted:
        raise ValueError("no {} column in the queried fields {}".format(field, wanted))
    table = _read_table(stdout, wanted)
    if table.header is not None:
        if field not in table.names:
            raise ValueError("no {} column in {!r}".format(field, table.header))
        column = table.names.index(field)
    else:
        column = wanted.index(field) if wanted else 0
    unit = table.units[column] if table.units else None
    values = []
    for line, cells in table.rows:
        if table.header is None and not wanted and len(cells) > 1:
            raise ValueError("no {} column in {!r}: {} columns, neither a header nor the queried fields to tell "
                             "which".format(field, line, len(cells)))
        value = _clean_value(cells[column], unit) if column < len(cells) else ""
        if not valid(value):
            if table.header is None and not values:
                raise ValueError("no {} column in {!r}".format(field, line))
            raise ValueError("not {}: {!r} (line {!r})".format(what, value, line))
        values.append(value)
    return values


# ---------------------------------------------------------------------------
# Compute capability and driver version


def compute_cap_tuple(text: Any) -> Optional[Tuple[int, int]]:
    """'8.6' -> (8, 6); None if not a compute capability."""
    if text is None:
        return None
    m = _CC.match(str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_compute_caps(stdout: str, fields: Optional[Sequence[str]] = None) -> List[str]:
    """Compute capabilities from `nvidia-smi --query-gpu=compute_cap --format=csv[,noheader]`.

    One value per GPU, in index order. A header line (`compute_cap`) is
    skipped; when other fields were queried too, the compute_cap column is
    found by the header or by `fields` (the queried fields, in order).
    Raises ValueError on anything else.
    """
    return parse_query_column(stdout, "compute_cap", compute_cap_tuple, "a compute capability", fields)


def driver_tuple(text: Any) -> Optional[Tuple[int, ...]]:
    """'535.54.03' -> (535, 54, 3): numbers per dot-separated part (1 to 4); None if not a version.

    Compared part by part as numbers (470.82.01 < 535.54.03, 535.104.05 >
    535.54.03); use driver_at_least, which pads missing parts with 0."""
    if text is None or isinstance(text, (bool, float)):
        return None  # a float has lost its parts: YAML reads 450.80 as 450.8
    m = _DRIVER.match(str(text))
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def parse_version(version: Any) -> Tuple[int, ...]:
    """'535.129.03' -> (535, 129, 3). Raises ValueError on anything else."""
    parts = driver_tuple(version)
    if parts is None:
        raise ValueError("not a driver version: {!r}".format(version))
    return parts


def driver_at_least(version: Any, minimum: Any) -> bool:
    """True when driver `version` >= `minimum`, numerically per part ('535' == '535.0.0').

    Raises ValueError on anything that is not a driver version."""
    a, b = parse_version(version), parse_version(minimum)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def parse_driver_versions(stdout: str, fields: Optional[Sequence[str]] = None) -> List[str]:
    """Driver versions from `nvidia-smi --query-gpu=driver_version --format=csv[,noheader]`.

    One value per GPU (one driver serves them all, so they are equal);
    header and column handling as parse_query_column. Raises ValueError."""
    return parse_query_column(stdout, "driver_version", driver_tuple, "a driver version", fields)
