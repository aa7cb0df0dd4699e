"""The lab_image role's profile chooser and id checks, fed with recorded nvidia-smi output."""
from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
lp = load_module(REPO / "roles" / "lab_image" / "filter_plugins" / "lab_profile.py", "effdet_lab_profile")

PROFILES = {
    "tf2.1-gpu": {"base": "tensorflow/tensorflow:2.1.0-gpu-py3", "gpu": True,
                  "compute_cap_min": "3.5", "compute_cap_below": "8.0"},
    "tf2.15-gpu": {"base": "tensorflow/tensorflow:2.15.0-gpu", "gpu": True,
                   "compute_cap_min": "5.0", "compute_cap_below": None},
    "cpu": {"base": "tensorflow/tensorflow:2.15.0", "gpu": False},
}


def ok(stdout: str) -> dict:
    return {"rc": 0, "stdout": stdout, "stderr": ""}


# The command module's result when nvidia-smi is not installed (ansible-core 2.19).
MISSING = {"rc": 2, "failed": True, "msg": "Error executing command.", "stdout": "", "stderr": "",
           "exception": "FileNotFoundError: [Errno 2] No such file or directory: b'nvidia-smi'"}
NO_DEVICES = {"rc": 6, "stdout": "No devices were found", "stderr": ""}
# The recorded TITAN V (7.0) + RTX 5880 Ada (8.9) query, header form, more fields.
TITANV_ADA = (FIXTURES / "csv_header_titanv-rtx5880_2gpu_compute-cap.csv").read_text()


def choose(result, requested=None, force=False):
    return lp.lab_image_choose_profile(result, PROFILES, requested, force, ["tf2.1-gpu", "tf2.15-gpu"])


def test_recorded_compute_caps():
    assert lp.parse_compute_caps(TITANV_ADA) == ["7.0", "8.9"]


@pytest.mark.parametrize("result", [MISSING, NO_DEVICES, ok(""), None, {"skipped": True}])
def test_no_gpu_picks_cpu(result):
    got = choose(result)
    assert got["ok"] and got["profile"] == "cpu" and got["gpu_count"] == 0


@pytest.mark.parametrize("stdout,profile", [
    ("7.0\n7.0\n7.0\n7.0\n7.0\n7.0\n7.0\n7.0\n", "tf2.1-gpu"),   # 8x V100
    ("7.5\n", "tf2.1-gpu"),                                     # RTX 2080 Ti
    ("8.0\n8.0\n", "tf2.15-gpu"),                                # A100
    ("8.6\n", "tf2.15-gpu"),                                     # RTX 3090
    ("9.0\n", "tf2.15-gpu"),                                     # H100 / H200
    ("3.7\n", "tf2.1-gpu"),                                      # K80: below TF 2.15's range
])
def test_auto_pick_by_compute_capability(stdout, profile):
    got = choose(ok(stdout))
    assert got["ok"], got["error"]
    assert got["profile"] == profile


def test_mixed_cards_take_the_profile_that_fits_all():
    got = choose(ok(TITANV_ADA))
    assert got["profile"] == "tf2.15-gpu" and got["compute_caps"] == ["7.0", "8.9"]


@pytest.mark.parametrize("stdout", ["8.0\n", TITANV_ADA, "9.0\n"])
def test_tf21_refused_on_ampere_and_newer(stdout):
    got = choose(ok(stdout), requested="tf2.1-gpu")
    assert not got["ok"]
    assert "tf2.1-gpu" in got["error"] and "no kernels" in got["error"]
    assert "lab_image_profile_force" in got["error"] and "tf2.15-gpu" in got["error"]


def test_tf21_forced_by_the_inventory():
    got = choose(ok("8.6\n"), requested="tf2.1-gpu", force=True)
    assert got["ok"] and got["profile"] == "tf2.1-gpu" and "forced" in got["reason"]


def test_inventory_wins_when_it_fits():
    assert choose(ok("7.0\n"), requested="tf2.15-gpu")["profile"] == "tf2.15-gpu"
    assert choose(ok("8.0\n"), requested="cpu")["profile"] == "cpu"
    assert choose(MISSING, requested="tf2.1-gpu")["profile"] == "tf2.1-gpu"


def test_unknown_profile_is_refused():
    got = choose(ok("7.0\n"), requested="tf1.15")
    assert not got["ok"] and "known: cpu, tf2.1-gpu, tf2.15-gpu" in got["error"]


def test_old_driver_without_compute_cap():
    old = {"rc": 2, "stdout": 'Field "compute_cap" is not a valid field to query.\n', "stderr": ""}
    got = choose(old)
    assert not got["ok"] and "lab_image_profile" in got["error"]
    assert choose(old, requested="tf2.1-gpu")["ok"]


def test_broken_driver_is_an_error_not_cpu():
    broken = {"rc": 9, "stdout": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
              "stderr": ""}
    got = choose(broken)
    assert not got["ok"] and "rc 9" in got["error"]


PASSWD_GROUP = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
root:x:0:
daemon:x:1:
users:x:100:
ubuntu:x:1000:
"""


def test_id_conflicts():
    assert lp.lab_image_id_conflicts(PASSWD_GROUP, "lcg", 1001, 1001) == []
    assert lp.lab_image_id_conflicts(PASSWD_GROUP, "lcg", 1000, 1001) == [
        "uid 1000 is already taken in the base image by user 'ubuntu'"]
    assert lp.lab_image_id_conflicts(PASSWD_GROUP, "lcg", 1001, 100) == [
        "gid 100 is already taken in the base image by group 'users'"]
    assert lp.lab_image_id_conflicts(PASSWD_GROUP, "ubuntu", 1000, 1000) == []
    assert "already exists" in lp.lab_image_id_conflicts(PASSWD_GROUP, "ubuntu", 1001, 1000)[0]


@pytest.mark.parametrize("name,valid", [("lcg", True), ("_svc", True), ("a-b_9", True), ("Bad User", False),
                                        ("9lcg", False), ("lcg;rm", False), ("x" * 33, False), ("", False)])
def test_user_names(name, valid):
    assert lp.lab_image_valid_user(name) is valid


def test_context_hash_is_stable_and_content_sensitive():
    a = {"Dockerfile": "FROM x\n", "sudoers": "lcg ALL=(ALL:ALL) NOPASSWD: ALL\n"}
    assert lp.lab_image_context_hash(a) == lp.lab_image_context_hash(dict(reversed(list(a.items()))))
    assert lp.lab_image_context_hash(a) != lp.lab_image_context_hash({**a, "sudoers": "lcg ALL=(ALL:ALL) ALL\n"})
    assert len(lp.lab_image_context_hash(a)) == 12
