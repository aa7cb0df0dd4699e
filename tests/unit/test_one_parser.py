"""One parser per fact (issue 13): the roles and the verifier read GPUs alike.

The `--gpus` grammar lives in plugins/module_utils/gpu_request.py and the
`nvidia-smi` readers in plugins/module_utils/nvidia_smi.py. The lab_container
filters (roles/lab_container/filter_plugins/lab_gpus.py), the lab_image
filters (roles/lab_image/filter_plugins/lab_profile.py) and the verifier
(tests/infra/nvidia_smi.py) all use them. Here the two layers are asked the
same questions and must give the same answers: a table of `--gpus` requests
on a recorded MIG host, and every recorded `--query-gpu` CSV
(tests/fixtures/nvidia-smi/, provenance in SOURCES.md). The shared modules
must also run, and answer the same, under Python 3.6.
"""
from __future__ import annotations

import glob
import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
MODULE_UTILS = REPO / "plugins" / "module_utils"


role_gpus = load_module(REPO / "roles" / "lab_container" / "filter_plugins" / "lab_gpus.py", "effdet_one_parser_lab_gpus")
role_image = load_module(REPO / "roles" / "lab_image" / "filter_plugins" / "lab_profile.py", "effdet_one_parser_lab_profile")
verifier = load_module(REPO / "tests" / "infra" / "nvidia_smi.py", "effdet_one_parser_nvidia_smi")
_by_path = runpy.run_path(str(MODULE_UTILS / "by_path.py"))["load"]
shared_gpus = _by_path("gpu_request")
shared_nvsmi = _by_path("nvidia_smi")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def ok(stdout: str) -> dict:
    """A registered `nvidia-smi` command result that succeeded."""
    return {"rc": 0, "stdout": stdout, "stderr": ""}


# ----------------------------------------------------------------------------- one copy

def test_every_layer_uses_the_shared_modules():
    assert role_gpus.GpusSpecError is verifier.GpuRequestError is shared_gpus.GpuRequestError
    for name in ("driver_tuple", "driver_at_least", "parse_query_column", "parse_compute_caps",
                 "parse_driver_versions"):
        assert getattr(role_image, name) is getattr(shared_nvsmi, name), name
    for name in ("ListedGpu", "MigDevice", "QueriedGpu", "parse_list_gpus", "parse_query_gpu_csv",
                 "parse_version", "driver_at_least"):
        assert getattr(verifier, name) is getattr(shared_nvsmi, name), name
    filters = role_image.FilterModule().filters()
    assert filters["lab_image_compute_caps"] is shared_nvsmi.parse_compute_caps


@pytest.mark.parametrize("path", ["roles/lab_container/filter_plugins/lab_gpus.py",
                                  "roles/lab_image/filter_plugins/lab_profile.py", "tests/infra/nvidia_smi.py"])
def test_no_parser_is_left_behind(path):
    """The users hold no CSV reader, no version or device-id pattern of their own."""
    text = (REPO / path).read_text()
    assert "import csv" not in text
    for pattern in (r"\d+(?:\.\d+)", r"GPU-[0-9a-fA-F-]", "MIG-GPU-", r"\(UUID: "):
        assert pattern not in text, pattern


def test_the_shared_modules_import_no_ansible():
    for path in MODULE_UTILS.glob("*.py"):
        assert not re.search(r"^\s*(from|import) ansible", path.read_text(), re.M), path.name


# ----------------------------------------------------------------------------- --gpus

MIG4 = verifier.parse_list_gpus(fixture("L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt"))  # MIG devices 0..3 on GPU 0
ALL4 = [(0, [0, 1, 2, 3]), (1, []), (2, []), (3, [])]

# request, what a container started with it sees on MIG4: (GPU index, its MIG device indices) per GPU;
# None: refused, by the role's input check and by the verifier alike.
REQUESTS = [
    ("all", ALL4),
    ("2", [(0, [0, 1, 2, 3]), (1, [])]),
    ("count=2", [(0, [0, 1, 2, 3]), (1, [])]),
    ("count=all", ALL4),
    ('"device=0,1"', [(0, [0, 1, 2, 3]), (1, [])]),
    ("device=0,1", [(0, [0, 1, 2, 3]), (1, [])]),
    ("'\"device=3,1\"'", [(1, []), (3, [])]),
    ("device=0:1", [(0, [1])]),
    ('"device=0:0,0:3"', [(0, [0, 3])]),
    ('"device=0:2,2"', [(0, [2]), (2, [])]),
    (f"device={MIG4[0].mig_devices[3].uuid}", [(0, [3])]),
    (f"device={MIG4[3].uuid}", [(3, [])]),
    (f'"device={MIG4[3].uuid.upper()},1"', [(1, []), (3, [])]),
    ('"capabilities=compute,utility","device=1"', [(1, [])]),
    ('"capabilities=compute,utility",count=1', [(0, [0, 1, 2, 3])]),
    ("banana", None),
    ("device=", None),
    ("0", None),
    ("count=0", None),
    ("count=-1", None),
    ("count=2,device=1", None),
    ("2,", None),
    ("all,all", None),
    ("devices=1", None),
    ("gpus=2", None),
    ("device=gpu0", None),
    ("device=nvidia0", None),
    ("device=1,1", None),
    ("device=0:x", None),
    ("device=0:1:2", None),
    ("capabilities=compute", None),
    ("options=novalue,count=1", None),
]


def _seen(gpus) -> list:
    return [(g.index, [m.index for m in g.mig_devices]) for g in gpus]


def _inspect(device_requests: list) -> dict:
    """`docker inspect` of a container that community.docker.docker_container started with device_requests."""
    return {"HostConfig": {"DeviceRequests": [
        {"Driver": r["driver"], "Count": r.get("count", 0), "DeviceIDs": r.get("device_ids"),
         "Capabilities": r["capabilities"], "Options": r.get("options", {})} for r in device_requests] or None}}


@pytest.mark.parametrize("request_,seen", REQUESTS, ids=[r for r, _ in REQUESTS])
def test_the_role_and_the_verifier_agree(request_, seen):
    error = role_gpus.lab_container_gpus_error(request_)
    if seen is None:
        assert error.startswith(f"gpus {request_!r}: "), error
        with pytest.raises(verifier.GpuRequestError) as exc:
            verifier.select_gpus(request_, MIG4)
        assert str(exc.value) == error
        with pytest.raises(role_gpus.GpusSpecError):
            role_gpus.lab_container_device_requests(request_)
        return
    assert error == ""
    assert _seen(verifier.select_gpus(request_, MIG4)) == seen
    # The container the role starts with this request, as the verifier finds it on the host:
    started = verifier.gpus_request_from_container(_inspect(role_gpus.lab_container_device_requests(request_)))
    assert started is not None
    assert _seen(verifier.select_gpus(started, MIG4)) == seen


@pytest.mark.parametrize("spec", [None, False, "", "none", "None", [], "  'none'  "])
def test_no_gpu_alike(spec):
    assert role_gpus.lab_container_gpus_error(spec) == ""
    assert role_gpus.lab_container_device_requests(spec) == []
    assert shared_gpus.parse_gpu_request(spec) is None
    assert verifier.gpus_request_from_container(_inspect([])) is None  # so the checks expect no GPU


@pytest.mark.parametrize("request_,why", [
    ("device=7", "this host has no device 7"),
    ("device=1:0", "this host has no device 1:0"),          # GPU 1 has no MIG devices
    ("device=GPU-1a046bb9-e456-45d3-5a35-52da392d09a5", "this host has no device"),  # a V100's
    ("5", "5 GPUs requested, host has 4"),
])
def test_what_only_the_host_can_refuse(request_, why):
    """Well-formed for both; the role cannot know the host's GPUs, the verifier checks them."""
    assert role_gpus.lab_container_gpus_error(request_) == ""
    with pytest.raises(verifier.GpuRequestError, match=re.escape(why)):
        verifier.select_gpus(request_, MIG4)


# ----------------------------------------------------------------------------- --query-gpu CSV

def _queried_fields() -> dict:
    """{csv recording: the --query-gpu fields of its command}, from SOURCES.md's table."""
    fields = {}
    for line in fixture("SOURCES.md").splitlines():
        m = re.match(r"\| `(csv_[^`]+)` \| `[^`]*--query-gpu=([^\s`]+)", line)
        if m:
            fields[m.group(1)] = m.group(2).split(",")
    return fields


QUERIED = _queried_fields()
CSV_RECORDINGS = sorted(p.name for p in FIXTURES.glob("csv_*"))


def test_every_csv_recording_states_its_fields():
    assert CSV_RECORDINGS and sorted(QUERIED) == CSV_RECORDINGS


@pytest.mark.parametrize("field", ["compute_cap", "driver_version"])
@pytest.mark.parametrize("name", CSV_RECORDINGS)
def test_both_read_the_same_facts(name, field):
    text, fields = fixture(name), QUERIED[name]
    rows = verifier.parse_query_gpu_csv(text, fields)
    read = {"compute_cap": role_image.parse_compute_caps, "driver_version": role_image.parse_driver_versions}[field]
    assert rows, name
    if field not in [shared_nvsmi.canonical_field(f) for f in fields]:
        assert all(field not in r.values for r in rows)
        with pytest.raises(ValueError, match=f"no {field} column"):
            read(text, fields)
        return
    values = [r.values[field] for r in rows]
    assert None not in values
    assert read(text, fields) == values
    if name.startswith("csv_header") or len(fields) == 1:
        # as the role's preflight reads its own command's output: without naming the fields
        assert read(text) == values
        if field == "compute_cap":
            got = role_image.lab_image_choose_profile(ok(text), {"cpu": {"gpu": False}}, auto_order=())
            assert got["compute_caps"] == [r.compute_cap for r in rows]
        else:
            assert role_image.host_driver_version(ok(text)) == rows[0].driver_version
    else:  # several columns, no header: which one is the field cannot be guessed
        with pytest.raises(ValueError, match="neither a header nor the queried fields"):
            read(text)
    if field == "driver_version":
        for minimum in ("418.39", "440.100", "515.57", "535.54.03", "570.133.20", "575"):
            assert [role_image.driver_at_least(v, minimum) for v in values] == \
                [verifier.driver_at_least(r.driver_version, minimum) for r in rows]


# ----------------------------------------------------------------------------- Python 3.6

# Runs the shared modules on every recording and every request above; prints JSON.
PROBE = r'''
import json, os, runpy, sys

repo, queried, requests = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
load = runpy.run_path(os.path.join(repo, "plugins", "module_utils", "by_path.py"))["load"]
nvsmi, gpus = load("nvidia_smi"), load("gpu_request")


def attempt(fn, *args):
    try:
        return fn(*args)
    except ValueError as exc:
        return "{}: {}".format(type(exc).__name__, exc)


out = {"requests": {r: attempt(gpus.device_requests, r) for r in requests}, "recordings": {}}
folder = os.path.join(repo, "tests", "fixtures", "nvidia-smi")
for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        text = f.read()
    if name.startswith("L_"):
        out["recordings"][name] = attempt(nvsmi.parse_list_gpus, text)
    elif name.startswith("csv_"):
        fields = queried[name]
        rows = attempt(nvsmi.parse_query_gpu_csv, text, fields)
        out["recordings"][name] = [
            rows if isinstance(rows, str) else [dict(r.values) for r in rows],
            attempt(nvsmi.parse_compute_caps, text, fields), attempt(nvsmi.parse_driver_versions, text, fields),
            attempt(nvsmi.parse_compute_caps, text), attempt(nvsmi.parse_driver_versions, text)]
print(json.dumps(out, sort_keys=True))
'''


def _python36():
    found = sorted(glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6"), reverse=True)
    return found[0] if found else shutil.which("python3.6")


def _probe(python: str) -> dict:
    args = [python, "-c", PROBE, str(REPO), json.dumps(QUERIED), json.dumps([r for r, _ in REQUESTS])]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_shared_modules_answer_alike_under_python36():
    python = _python36()
    if not python:
        pytest.skip("no Python 3.6 interpreter (looked for /root/.pyenv/versions/3.6*/bin/python3.6 "
                    "and python3.6 on PATH)")
    old, new = _probe(python), _probe(sys.executable)
    assert old == new
    assert len(new["recordings"]) == len(list(FIXTURES.glob("[Lc]*_*")))
