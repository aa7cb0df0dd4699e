"""GPU checks. With verify_gpu_count: 0 (the lab-in-a-box) they assert that
there is no GPU, and fail if one appears; with N > 0 they check the driver,
the GPUs, Docker's --gpus device selection, and TensorFlow in the lab container.
"""

from __future__ import annotations

import json
import shlex

import pytest

import nvidia_smi

TIMEOUT = "timeout 180 "


def _needs_gpus(expect) -> None:
    if expect.gpu_count == 0:
        pytest.skip("verify_gpu_count is 0: this host must have no GPU (checked by the test_no_gpu_* tests)")


def _needs_no_gpus(expect) -> None:
    if expect.gpu_count > 0:
        pytest.skip(f"verify_gpu_count is {expect.gpu_count}")


# ---------------------------------------------------------------------------
# Hosts that must have no GPU


def test_no_gpu_nvidia_smi(host, expect, host_gpus) -> None:
    _needs_no_gpus(expect)
    assert host_gpus.listed == [], f"expected no GPU, nvidia-smi lists: {host_gpus.list_output}"


def test_no_gpu_device_nodes(host, expect) -> None:
    _needs_no_gpus(expect)
    r = host.run("ls -1 /dev/nvidia[0-9]* 2>/dev/null")
    assert r.stdout.strip() == "", f"expected no GPU, found device nodes: {r.stdout}"


def test_no_gpu_docker_gpus_all_fails(host, expect) -> None:
    _needs_no_gpus(expect)
    r = host.run(TIMEOUT + "docker run --rm --gpus all debian:bookworm true")
    assert r.rc != 0, "docker run --gpus all succeeded: this host has a GPU (or a GPU device driver)"
    err = r.stderr.lower()
    known = (
        'could not select device driver "" with capabilities: [[gpu]]',  # no nvidia hook registered
        "nvidia-container-cli: initialization error",  # hook present, no driver/GPU
        "no cuda-capable device",
    )
    assert any(k in err for k in known), f"docker run --gpus all failed for another reason: {r.stderr}"


# ---------------------------------------------------------------------------
# Hosts with GPUs


def test_nvidia_smi_gpus(expect, host_gpus) -> None:
    _needs_gpus(expect)
    assert host_gpus.nvidia_smi, "nvidia-smi is not installed"
    rows = host_gpus.queried
    assert len(rows) == expect.gpu_count, f"nvidia-smi shows {len(rows)} GPUs, expected {expect.gpu_count}"
    assert [r.index for r in rows] == list(range(expect.gpu_count))
    assert [r.name for r in rows] == expect.names_for(expect.gpu_count)
    # -L and the csv query agree on the GPUs.
    assert [(g.index, g.name, g.uuid) for g in host_gpus.listed] == [(r.index, r.name, r.uuid) for r in rows]


def test_driver_version(expect, host_gpus) -> None:
    _needs_gpus(expect)
    versions = {r.driver_version for r in host_gpus.queried}
    assert len(versions) == 1, f"GPUs report different drivers: {versions}"
    (version,) = versions
    assert nvidia_smi.driver_at_least(version, expect.driver_min), (
        f"driver {version} is older than verify_driver_min {expect.driver_min}"
    )


def _docker_list(host, request: str, image: str, env: str = "") -> list:
    arg = shlex.quote(request)
    r = host.run(f"{TIMEOUT}docker run --rm {env}--gpus {arg} {shlex.quote(image)} nvidia-smi -L")
    assert r.rc == 0, f"docker run --gpus {request} {image} nvidia-smi -L failed: {r.stderr}"
    return nvidia_smi.parse_list_gpus(r.stdout)


def _uuids(gpus) -> list:
    return [(g.uuid, tuple(m.uuid for m in g.mig_devices)) for g in gpus]


def test_docker_gpus_all(host, expect, host_gpus) -> None:
    _needs_gpus(expect)
    seen = _docker_list(host, "all", expect.cuda_image)
    assert len(seen) == len(host_gpus.listed)
    assert _uuids(seen) == _uuids(host_gpus.listed)


# Templates resolved against the host's GPUs; each needs `need` GPUs.
SELECTIONS = [
    ("count-1", 1, lambda g: "1"),
    ("count-2", 2, lambda g: "2"),
    ("device-0", 1, lambda g: '"device=0"'),
    ("device-1,2", 3, lambda g: '"device=1,2"'),
    ("uuid-last", 1, lambda g: f'"device={g[-1].uuid}"'),
    ("uuid-first,last", 2, lambda g: f'"device={g[0].uuid},{g[-1].uuid}"'),
]


@pytest.mark.parametrize("label,need,make", SELECTIONS, ids=[s[0] for s in SELECTIONS])
def test_docker_gpu_selection(host, expect, host_gpus, label, need, make) -> None:
    _needs_gpus(expect)
    if expect.gpu_count < need:
        pytest.skip(f"{label} needs {need} GPUs, verify_gpu_count is {expect.gpu_count}")
    assert len(host_gpus.listed) >= need, f"host lists {len(host_gpus.listed)} GPUs, expected {expect.gpu_count}"
    request = make(host_gpus.listed)
    wanted = nvidia_smi.select_gpus(request, host_gpus.listed)
    seen = _docker_list(host, request, expect.cuda_image)
    assert _uuids(seen) == _uuids(wanted), f"--gpus {request}: saw {seen}, expected {wanted}"
    assert [g.name for g in seen] == [g.name for g in wanted]


# ---------------------------------------------------------------------------
# The lab container (skipped only while it does not exist)


@pytest.fixture(scope="module")
def lab_expected_gpus(lab_container, host_gpus) -> list:
    request = nvidia_smi.gpus_request_from_container(lab_container.inspect)
    return nvidia_smi.select_gpus(request, host_gpus.listed) if request else []


def test_lab_container_sees_its_gpus(host, expect, lab_container, lab_expected_gpus) -> None:
    if expect.gpu_count > 0:
        assert lab_expected_gpus, f"{lab_container.name} was started without GPUs"
    r = host.run(f"docker exec {shlex.quote(lab_container.name)} nvidia-smi -L")
    if not lab_expected_gpus and r.rc != 0:
        return  # no GPU given, no nvidia-smi injected: nothing visible
    assert r.rc in (0, 6), f"nvidia-smi -L in {lab_container.name} failed: {r.stderr}"
    seen = nvidia_smi.parse_list_gpus(r.stdout)
    assert _uuids(seen) == _uuids(lab_expected_gpus)


TF_PROBE = (
    "import json, tensorflow as tf; "
    "print(json.dumps({'gpus': [d.name for d in tf.config.list_physical_devices('GPU')], "
    "'name': tf.test.gpu_device_name()}))"
)


def _tf(host, container: str, env: str = "") -> dict:
    r = host.run(f"{TIMEOUT}docker exec {env}{shlex.quote(container)} python3 -c {shlex.quote(TF_PROBE)}")
    assert r.rc == 0, f"TensorFlow probe failed in {container}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_lab_tensorflow_lists_gpus(host, lab_container, lab_expected_gpus) -> None:
    n = len(lab_expected_gpus)
    tf = _tf(host, lab_container.name)
    assert tf["gpus"] == [f"/physical_device:GPU:{i}" for i in range(n)], tf
    assert tf["name"] == ("/device:GPU:0" if n else ""), tf


def test_lab_cuda_visible_devices_hides_gpus(host, lab_container, lab_expected_gpus) -> None:
    """The recipe's switch to the CPU: with CUDA_VISIBLE_DEVICES=-1 TensorFlow sees no GPU."""
    if not lab_expected_gpus:
        # TensorFlow already sees none (test_lab_tensorflow_lists_gpus): hiding
        # nothing proves nothing, and each probe is a TensorFlow import (~2.5 s CPU).
        pytest.skip(f"{lab_container.name} was given no GPU: there is none to hide")
    tf = _tf(host, lab_container.name, env="-e CUDA_VISIBLE_DEVICES=-1 ")
    assert tf == {"gpus": [], "name": ""}, tf
