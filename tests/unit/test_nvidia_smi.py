"""Table-driven tests of tests/infra/nvidia_smi.py on recorded real nvidia-smi
output (tests/fixtures/nvidia-smi/, provenance in SOURCES.md).

The parsers it exports are plugins/module_utils/nvidia_smi.py and
gpu_request.py, which the lab_image and lab_container filters use too
(tests/unit/test_one_parser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures" / "nvidia-smi"

# tests/infra is not a package; load the module by path under a private name.
nvidia_smi = load_module(TESTS / "infra" / "nvidia_smi.py", "effdet_nvidia_smi")

GpuRequestError = nvidia_smi.GpuRequestError
driver_at_least = nvidia_smi.driver_at_least
gpus_request_from_container = nvidia_smi.gpus_request_from_container
parse_list_gpus = nvidia_smi.parse_list_gpus
parse_query_gpu_csv = nvidia_smi.parse_query_gpu_csv
select_gpus = nvidia_smi.select_gpus


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_every_fixture_is_listed_in_sources() -> None:
    sources = fixture("SOURCES.md")
    files = sorted(p.name for p in FIXTURES.iterdir() if p.name != "SOURCES.md")
    assert files, "no recordings"
    missing = [f for f in files if f"`{f}`" not in sources]
    assert not missing, f"recordings without a source in SOURCES.md: {missing}"


# ---------------------------------------------------------------------------
# nvidia-smi -L

# file, GPU count, names (one per GPU), MIG devices per GPU, first uuid, last uuid
LIST_CASES = [
    ("L_gtx-1080ti_1gpu.txt", 1, ["NVIDIA GeForce GTX 1080 Ti"], [0],
     "GPU-b4ffae3c-ec4e-5aa8-8804-e83359cbc19f", "GPU-b4ffae3c-ec4e-5aa8-8804-e83359cbc19f"),
    ("L_titanv-rtx5880_2gpu.txt", 2, ["NVIDIA TITAN V", "NVIDIA RTX 5880 Ada Generation"], [0, 0],
     "GPU-b5169cef-2205-c30e-f2b3-220cfa14bafd", "GPU-7518f6b0-991f-ce2b-3d37-c779130d3137"),
    ("L_rtx-3090_4gpu.txt", 4, ["NVIDIA GeForce RTX 3090"] * 4, [0] * 4,
     "GPU-e1924eea-b9bb-d537-39f2-b345087fa145", "GPU-2639988f-1756-0583-db8f-faee38effce2"),
    ("L_v100-sxm2-16gb_8gpu.txt", 8, ["Tesla V100-SXM2-16GB"] * 8, [0] * 8,
     "GPU-1a046bb9-e456-45d3-5a35-52da392d09a5", "GPU-cba5a243-219c-df12-013e-1dbc98a8b0de"),
    ("L_a100-sxm4-80gb_8gpu.txt", 8, ["NVIDIA A100-SXM4-80GB"] * 8, [0] * 8,
     "GPU-55748b5b-32df-bbd9-d0f6-f50980c12af8", "GPU-5c084fc6-2373-fab1-7e48-aa2ae120117c"),
    ("L_a100-80gb-pcie_1gpu_mig-2x3g40gb.txt", 1, ["NVIDIA A100 80GB PCIe"], [2],
     "GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39", "GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39"),
    ("L_a100-sxm4-80gb_1gpu_mig-7x1g10gb.txt", 1, ["NVIDIA A100-SXM4-80GB"], [7],
     "GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16", "GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16"),
    ("L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt", 4, ["NVIDIA A100-SXM4-80GB"] * 4, [4, 0, 0, 0],
     "GPU-513536b6-7d19-9063-b049-1e69664bb298", "GPU-69ec2344-ebac-b028-f88f-452abb3d7f11"),
]


@pytest.mark.parametrize("name,count,names,migs,first,last", LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_parse_list_gpus_recordings(name, count, names, migs, first, last) -> None:
    gpus = parse_list_gpus(fixture(name))
    assert len(gpus) == count
    assert [g.index for g in gpus] == list(range(count))
    assert [g.name for g in gpus] == names
    assert [len(g.mig_devices) for g in gpus] == migs
    assert gpus[0].uuid == first and gpus[-1].uuid == last
    assert len({g.uuid for g in gpus}) == count
    for g in gpus:
        assert [m.index for m in g.mig_devices] == list(range(len(g.mig_devices)))
        assert all(m.uuid.startswith("MIG-") for m in g.mig_devices)


@pytest.mark.parametrize(
    "name,gpu,mig,profile,uuid",
    [
        ("L_a100-80gb-pcie_1gpu_mig-2x3g40gb.txt", 0, 1, "3g.40gb", "MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23"),
        ("L_a100-sxm4-80gb_1gpu_mig-7x1g10gb.txt", 0, 6, "1g.10gb", "MIG-1aae4990-b962-574e-8375-119d6d9b9687"),
        ("L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt", 0, 0, "1g.20gb", "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"),
    ],
)
def test_parse_list_gpus_mig_lines(name, gpu, mig, profile, uuid) -> None:
    m = parse_list_gpus(fixture(name))[gpu].mig_devices[mig]
    assert (m.profile, m.index, m.uuid) == (profile, mig, uuid)


@pytest.mark.parametrize("text", ["", "\n", "No devices were found\n"])
def test_parse_list_gpus_none(text) -> None:
    assert parse_list_gpus(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        "  MIG 1g.10gb     Device  0: (UUID: MIG-feb88891-0321-5fef-9c87-d4af3b54259e)\n",
        "GPU 0: NVIDIA A100-SXM4-80GB\n",  # no UUID
        fixture("L_rtx-3090_4gpu.txt") + "No devices were found\n",
    ],
    ids=["driver-error", "orphan-mig", "no-uuid", "trailing-garbage"],
)
def test_parse_list_gpus_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_list_gpus(text)


def test_parse_list_gpus_old_mig_uuid_form() -> None:
    # The MIG-GPU-<uuid>/<gi>/<ci> form that drivers before R470 printed
    # (see NVIDIA/nvidia-container-toolkit#203). Built from the recorded line.
    text = fixture("L_a100-80gb-pcie_1gpu_mig-2x3g40gb.txt").replace(
        "MIG-0929581a-2be6-5dec-bf34-0954c6c529a6", "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0"
    )
    assert parse_list_gpus(text)[0].mig_devices[0].uuid == "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0"


# ---------------------------------------------------------------------------
# --query-gpu csv

CSV_CASES = [
    # file, fields, expected rows (subset of canonical field -> value)
    ("csv_header_gtx1080ti_1gpu_name.csv", ["name"], [{"name": "NVIDIA GeForce GTX 1080 Ti"}]),
    (
        "csv_header_titanv-rtx5880_2gpu_compute-cap.csv",
        ["compute_cap", "compute_mode", "driver_version", "name", "index"],
        [
            {"compute_cap": "7.0", "compute_mode": "Default", "driver_version": "570.86.15",
             "name": "NVIDIA TITAN V", "index": "0"},
            {"compute_cap": "8.9", "compute_mode": "Default", "driver_version": "570.86.15",
             "name": "NVIDIA RTX 5880 Ada Generation", "index": "1"},
        ],
    ),
    (
        "csv_header_gtx1060-1080ti_5gpu_uuid.csv",
        ["name", "pci.bus", "index", "uuid"],
        [
            {"name": "GeForce GTX 1060 6GB", "pci.bus": "0x01", "index": "0",
             "uuid": "GPU-f3da2e71-6e43-729a-e3ae-f731ed96d50c"},
            {"name": "GeForce GTX 1080 Ti", "pci.bus": "0x02", "index": "1",
             "uuid": "GPU-15ea7bf9-1a0e-2d7f-9c62-c28e5ca1aaf1"},
            {"name": "GeForce GTX 1060 6GB", "index": "2"},
            {"name": "GeForce GTX 1060 6GB", "index": "3"},
            {"name": "GeForce GTX 1060 6GB", "pci.bus": "0x0A", "index": "4",
             "uuid": "GPU-ff3318a7-f0dd-dc57-1fb8-cc95ba35c56e"},
        ],
    ),
    (
        "csv_header_units_a100-sxm4-80gb_8gpu.csv",
        ["name", "memory.total", "driver_version"],
        [{"name": "NVIDIA A100-SXM4-80GB", "memory.total": "81920", "driver_version": "570.133.20"}] * 8,
    ),
    (
        "csv_noheader_nounits_rtx2080_1gpu.csv",
        ["power.limit", "power.min_limit", "power.max_limit", "memory.total", "vbios_version", "driver_version",
         "name", "gpu_uuid", "power.draw", "temperature.gpu", "temperature.memory", "clocks.current.graphics",
         "clocks.sm", "clocks.mem", "utilization.gpu", "utilization.memory", "fan.speed",
         "pcie.link.width.current", "pstate"],
        [{"memory.total": "7979", "driver_version": "440.64", "name": "GeForce RTX 2080",
          "uuid": "GPU-22b2c6ac-2d49-4863-197c-9c469071178a", "temperature.memory": None, "pstate": "P2"}],
    ),
    ("csv_noheader_h100nvl_1gpu.csv", ["name", "pci.device_id"],
     [{"name": "NVIDIA H100 NVL", "pci.device_id": "0x232110DE"}]),
]


@pytest.mark.parametrize("name,fields,expected", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_parse_query_gpu_csv_recordings(name, fields, expected) -> None:
    rows = parse_query_gpu_csv(fixture(name), fields)
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected):
        for key, value in exp.items():
            assert row.values[key] == value, (key, row.values)


def test_parse_query_gpu_csv_typed_fields() -> None:
    a100 = parse_query_gpu_csv(fixture("csv_header_units_a100-sxm4-80gb_8gpu.csv"),
                               ["name", "memory.total", "driver_version"])
    assert {r.memory_total_mib for r in a100} == {81920}
    assert {r.driver_version for r in a100} == {"570.133.20"}
    cc = parse_query_gpu_csv(fixture("csv_header_titanv-rtx5880_2gpu_compute-cap.csv"),
                             ["compute_cap", "compute_mode", "driver_version", "name", "index"])
    assert [(r.index, r.compute_cap) for r in cc] == [(0, "7.0"), (1, "8.9")]
    rtx = parse_query_gpu_csv(fixture("csv_noheader_nounits_rtx2080_1gpu.csv"),
                              ["power.limit", "power.min_limit", "power.max_limit", "memory.total",
                               "vbios_version", "driver_version", "name", "gpu_uuid", "power.draw",
                               "temperature.gpu", "temperature.memory", "clocks.current.graphics", "clocks.sm",
                               "clocks.mem", "utilization.gpu", "utilization.memory", "fan.speed",
                               "pcie.link.width.current", "pstate"])
    assert rtx[0].uuid == "GPU-22b2c6ac-2d49-4863-197c-9c469071178a"
    assert rtx[0].memory_total_mib == 7979
    assert rtx[0].index is None and rtx[0].compute_cap is None  # not queried


def test_parse_query_gpu_csv_same_rows_with_and_without_header() -> None:
    text = fixture("csv_header_gtx1060-1080ti_5gpu_uuid.csv")
    fields = ["name", "pci.bus", "index", "uuid"]
    body = "".join(text.splitlines(keepends=True)[1:])
    assert parse_query_gpu_csv(text, fields) == parse_query_gpu_csv(body, fields)


def test_parse_query_gpu_csv_header_units_and_nounits_agree() -> None:
    fields = ["name", "memory.total", "driver_version"]
    units = fixture("csv_header_units_a100-sxm4-80gb_8gpu.csv")
    # The same rows as nvidia-smi prints them with ,noheader,nounits.
    nounits = "".join(line.replace(" MiB", "") + "\n" for line in units.splitlines()[1:])
    assert parse_query_gpu_csv(units, fields) == parse_query_gpu_csv(nounits, fields)


def test_parse_query_gpu_csv_cross_checks_list() -> None:
    """uuid/index from the csv match `-L` of the same machine (recorded together)."""
    listed = parse_list_gpus(fixture("L_titanv-rtx5880_2gpu.txt"))
    rows = parse_query_gpu_csv(fixture("csv_header_titanv-rtx5880_2gpu_compute-cap.csv"),
                               ["compute_cap", "compute_mode", "driver_version", "name", "index"])
    assert [(r.index, r.name) for r in rows] == [(g.index, g.name) for g in listed]


@pytest.mark.parametrize(
    "name,fields",
    [
        ("csv_header_units_a100-sxm4-80gb_8gpu.csv", ["name", "driver_version", "memory.total"]),  # order
        ("csv_header_units_a100-sxm4-80gb_8gpu.csv", ["name", "memory.total"]),  # too few fields
        ("csv_noheader_h100nvl_1gpu.csv", ["name", "pci.device_id", "uuid"]),  # too many fields
    ],
)
def test_parse_query_gpu_csv_rejects_mismatch(name, fields) -> None:
    with pytest.raises(ValueError):
        parse_query_gpu_csv(fixture(name), fields)


@pytest.mark.parametrize("text", ["", "No devices were found\n"])
def test_parse_query_gpu_csv_none(text) -> None:
    assert parse_query_gpu_csv(text, ["index", "name"]) == []


# ---------------------------------------------------------------------------
# driver_at_least


@pytest.mark.parametrize(
    "version,minimum,ok",
    [
        ("570.133.20", "570.133.20", True),
        ("570.133.20", "535.104.05", True),
        ("535.104.05", "535.129.03", False),
        ("535.129.03", "535.104.05", True),  # numeric, not string, compare
        ("440.64", "440.100", False),
        ("440.100", "440.64", True),
        ("530.30.02", "530.30", True),
        ("530", "530.0.0", True),
        ("525.60.13", "530", False),
        ("610.43.02", "570", True),
    ],
)
def test_driver_at_least(version, minimum, ok) -> None:
    assert driver_at_least(version, minimum) is ok


@pytest.mark.parametrize("bad", ["", "N/A", "535.x", "r535"])
def test_driver_at_least_rejects(bad) -> None:
    with pytest.raises(ValueError):
        driver_at_least(bad, "535")


def test_driver_at_least_on_recordings() -> None:
    rows = parse_query_gpu_csv(fixture("csv_header_units_a100-sxm4-80gb_8gpu.csv"),
                               ["name", "memory.total", "driver_version"])
    assert all(driver_at_least(r.driver_version, "535") for r in rows)
    assert not any(driver_at_least(r.driver_version, "575") for r in rows)


# ---------------------------------------------------------------------------
# --gpus selection

V100 = parse_list_gpus(fixture("L_v100-sxm2-16gb_8gpu.txt"))
MIXED = parse_list_gpus(fixture("L_titanv-rtx5880_2gpu.txt"))
MIG4 = parse_list_gpus(fixture("L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt"))

SELECT_CASES = [
    # host gpus, request, expected host indices
    (V100, "all", [0, 1, 2, 3, 4, 5, 6, 7]),
    (V100, "2", [0, 1]),
    (V100, "8", list(range(8))),
    (V100, "count=3", [0, 1, 2]),
    (V100, "count=all", list(range(8))),
    (V100, "device=1,2", [1, 2]),
    (V100, '"device=1,2"', [1, 2]),
    (V100, "device=2,1", [1, 2]),
    (V100, "device=5", [5]),
    (V100, "device=GPU-cba5a243-219c-df12-013e-1dbc98a8b0de", [7]),
    (V100, "device=GPU-1a046bb9-e456-45d3-5a35-52da392d09a5,GPU-0b034e63-22be-454b-b395-382e2d324728", [0, 3]),
    (V100, "device=GPU-1A046BB9-E456-45D3-5A35-52DA392D09A5", [0]),
    (V100, "device=0,GPU-1a046bb9-e456-45d3-5a35-52da392d09a5", [0]),
    (V100, '"capabilities=compute,utility","device=4"', [4]),
    (MIXED, "device=1", [1]),
    (MIXED, "1", [0]),
    (MIG4, "device=0,3", [0, 3]),
    (MIG4, "'\"device=3,1\"'", [1, 3]),
    (MIG4, '"capabilities=compute,utility",count=2', [0, 1]),
]


@pytest.mark.parametrize("gpus,request_,expected", SELECT_CASES,
                         ids=[f"{len(c[0])}gpu:{c[1]}" for c in SELECT_CASES])
def test_select_gpus(gpus, request_, expected) -> None:
    chosen = select_gpus(request_, gpus)
    assert [g.index for g in chosen] == expected
    assert [g.uuid for g in chosen] == [gpus[i].uuid for i in expected]


def test_select_gpus_names_follow_devices() -> None:
    assert [g.name for g in select_gpus("device=1", MIXED)] == ["NVIDIA RTX 5880 Ada Generation"]


def test_select_whole_mig_gpu_keeps_its_mig_devices() -> None:
    (gpu0,) = select_gpus("device=0", MIG4)
    assert len(gpu0.mig_devices) == 4


@pytest.mark.parametrize(
    "request_,mig_uuids",
    [
        ("device=MIG-a45882f0-9215-5733-a0c1-49286ab31cb5", ["MIG-a45882f0-9215-5733-a0c1-49286ab31cb5"]),
        ("device=0:2", ["MIG-f00d722c-f4e1-52c9-aa31-750441ae1bfe"]),
        ("device=0:3,0:0", ["MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a", "MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b"]),
    ],
)
def test_select_mig_devices(request_, mig_uuids) -> None:
    (gpu,) = select_gpus(request_, MIG4)
    assert gpu.index == 0
    assert [m.uuid for m in gpu.mig_devices] == mig_uuids


def test_select_mig_and_whole_gpu() -> None:
    chosen = select_gpus("device=MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a,2", MIG4)
    assert [(g.index, len(g.mig_devices)) for g in chosen] == [(0, 1), (2, 0)]


@pytest.mark.parametrize(
    "gpus,request_",
    [
        (V100, "9"),  # more than the host has
        (V100, "count=9"),
        (MIXED, "device=2"),  # no such index
        (MIXED, "device=GPU-cba5a243-219c-df12-013e-1dbc98a8b0de"),  # another host's GPU
        (MIG4, "device=1:0"),  # GPU 1 has no MIG devices
        (V100, "0"),
        (V100, ""),
        (V100, "device="),
        (V100, "gpus=2"),
        (V100, "count=2,device=1"),
        (V100, "device=nvidia0"),
        (V100, "devices=1"),  # docker's key is device=
        (V100, "device=1,1"),  # listed twice
        (V100, "none"),  # no GPU requested: nothing to select
        (MIG4, "device=0:4"),  # GPU 0 has MIG devices 0..3
        (MIG4, "device=MIG-1aae4990-b962-574e-8375-119d6d9b9687"),  # another host's MIG device
    ],
)
def test_select_gpus_rejects(gpus, request_) -> None:
    with pytest.raises(GpuRequestError):
        select_gpus(request_, gpus)


def test_select_gpus_on_no_gpus() -> None:
    assert select_gpus("all", []) == []
    with pytest.raises(GpuRequestError):
        select_gpus("1", [])


# ---------------------------------------------------------------------------
# request from docker inspect

INSPECT_CASES = [
    # docker inspect fragments as Docker 20.10+ writes them for each --gpus form
    ({"HostConfig": {"DeviceRequests": [{"Driver": "", "Count": -1, "DeviceIDs": None,
                                         "Capabilities": [["gpu"]], "Options": {}}]}}, "all"),
    ({"HostConfig": {"DeviceRequests": [{"Driver": "", "Count": 2, "DeviceIDs": None,
                                         "Capabilities": [["gpu"]], "Options": {}}]}}, "2"),
    ({"HostConfig": {"DeviceRequests": [{"Driver": "", "Count": 0, "DeviceIDs": ["1", "2"],
                                         "Capabilities": [["gpu"]], "Options": {}}]}}, "device=1,2"),
    ({"HostConfig": {"DeviceRequests": None}}, None),
    ({"HostConfig": {"DeviceRequests": None, "Runtime": "runc"},
      "Config": {"Env": ["NVIDIA_VISIBLE_DEVICES=all"]}}, None),  # image env under runc: no GPU
    ({"HostConfig": {"DeviceRequests": None, "Runtime": "nvidia"},
      "Config": {"Env": ["PATH=/usr/bin", "NVIDIA_VISIBLE_DEVICES=all"]}}, "all"),
    ({"HostConfig": {"DeviceRequests": None, "Runtime": "nvidia"},
      "Config": {"Env": ["NVIDIA_VISIBLE_DEVICES=0,GPU-cba5a243-219c-df12-013e-1dbc98a8b0de"]}},
     "device=0,GPU-cba5a243-219c-df12-013e-1dbc98a8b0de"),
    ({"HostConfig": {"DeviceRequests": None, "Runtime": "nvidia"},
      "Config": {"Env": ["NVIDIA_VISIBLE_DEVICES=void"]}}, None),
]


@pytest.mark.parametrize("inspect,expected", INSPECT_CASES)
def test_gpus_request_from_container(inspect, expected) -> None:
    assert gpus_request_from_container(inspect) == expected


def test_request_from_container_feeds_select() -> None:
    inspect = INSPECT_CASES[2][0]
    assert [g.index for g in select_gpus(gpus_request_from_container(inspect), V100)] == [1, 2]
