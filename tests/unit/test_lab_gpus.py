"""The lab_container role's --gpus filters: every form of the seed recipe -> device_requests.

The grammar is plugins/module_utils/gpu_request.py, shared with the verifier
(tests/unit/test_one_parser.py shows that both answer alike).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
g = load_module(REPO / "roles" / "lab_container" / "filter_plugins" / "lab_gpus.py", "effdet_lab_gpus")

UUID1 = "GPU-f3da2e71-6e43-729a-e3ae-f731ed96d50c"  # tests/fixtures/nvidia-smi/csv_header_gtx1060-1080ti_5gpu_uuid.csv
UUID2 = "GPU-15ea7bf9-1a0e-2d7f-9c62-c28e5ca1aaf1"
GPU = [["gpu"]]
MIG = "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"  # tests/fixtures/nvidia-smi/L_a100-sxm4-80gb_4gpu_mig-on-gpu0.txt
MIG_OLD = "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0"  # the form of drivers before R470


@pytest.mark.parametrize("spec,want", [
    ("all", {"count": -1}),
    (-1, {"count": -1}),
    ("2", {"count": 2}),
    (2, {"count": 2}),
    ("count=2", {"count": 2}),
    ("count=all", {"count": -1}),
    ('"device=1,2"', {"device_ids": ["1", "2"]}),          # --gpus '"device=1,2"' after the shell
    ("'\"device=1,2\"'", {"device_ids": ["1", "2"]}),      # the recipe's text, quotes and all
    ("device=1,2", {"device_ids": ["1", "2"]}),
    ("device=0", {"device_ids": ["0"]}),
    (f"device={UUID1}", {"device_ids": [UUID1]}),
    (f'"device={UUID1},{UUID2}"', {"device_ids": [UUID1, UUID2]}),
    ([0, UUID2], {"device_ids": ["0", UUID2]}),
    ("MIG-4a6e5b8f-1c2d-5e3f-9a0b-1c2d3e4f5a6b", None),
    # MIG devices: <GPU index>:<MIG index> (the MIG user guide's --gpus '"device=0:0,0:1"') and UUIDs
    ("device=0:1", {"device_ids": ["0:1"]}),
    ('\'"device=0:0,0:1"\'', {"device_ids": ["0:0", "0:1"]}),
    (["1:0", MIG], {"device_ids": ["1:0", MIG]}),
    (f"device={MIG_OLD}", {"device_ids": [MIG_OLD]}),
])
def test_forms(spec, want):
    if want is None:
        with pytest.raises(g.GpusSpecError):
            g.lab_container_device_requests(spec)
        return
    (req,) = g.lab_container_device_requests(spec)
    assert req["driver"] == "nvidia" and req["capabilities"] == GPU
    assert {k: v for k, v in req.items() if k in ("count", "device_ids")} == want


def test_capabilities_and_options():
    (req,) = g.lab_container_device_requests('"capabilities=compute,utility",count=1,driver=nvidia')
    assert req == {"driver": "nvidia", "capabilities": [["gpu", "compute", "utility"]], "count": 1}
    # quotes around two fields are CSV quoting, not quotes around the whole request
    (req,) = g.lab_container_device_requests('"capabilities=compute,utility","device=4"')
    assert req == {"driver": "nvidia", "capabilities": [["gpu", "compute", "utility"]], "device_ids": ["4"]}
    (req,) = g.lab_container_device_requests("count=all,options=key=value")
    assert req == {"driver": "nvidia", "capabilities": [["gpu"]], "count": -1, "options": {"key": "value"}}


@pytest.mark.parametrize("spec", [None, "", "none", "None", [], False])
def test_none(spec):
    assert g.lab_container_device_requests(spec) == []


@pytest.mark.parametrize("spec,why", [
    ("banana", "neither a number nor 'all'"),
    ("device=", "empty device list"),
    ("0", "requests no GPU"),
    (0, "requests no GPU"),
    ("2,device=1", "not both"),
    ("device=1,1", "listed twice"),
    ("device=gpu0", "'gpu0' is neither a GPU index, a MIG index (0:1) nor a GPU-/MIG- UUID"),
    ("device=0:x", "neither a GPU index, a MIG index"),
    ("foo=1", "unknown option"),
    ("devices=1", "unknown option 'devices'"),           # docker: unexpected key 'devices'
    ("capabilities=compute", "names neither 'all', a count, nor devices"),
    ("all,all", "given twice"),
    (True, "ambiguous"),
    ({"count": 1}, "expected a string"),
])
def test_malformed(spec, why):
    assert why in g.lab_container_gpus_error(spec)
