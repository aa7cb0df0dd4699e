"""The minimum NVIDIA driver of each GPU image profile (lab_image, issue #10).

The driver version is read with the one CSV parser that the lab_image filter
plugin (roles/lab_image/filter_plugins/lab_profile.py) and the verifier share
(plugins/module_utils/nvidia_smi.py), here on recorded real
`nvidia-smi` output (tests/fixtures/nvidia-smi/, SOURCES.md) and on synthetic
one-line outputs, which are marked as such. The profiles are the role's own
(roles/lab_image/defaults/main.yml).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from pathload import load_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import role_docs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
ROLE = REPO / "roles" / "lab_image"


lp = load_module(ROLE / "filter_plugins" / "lab_profile.py", "effdet_lab_profile_driver")
infra = load_module(REPO / "tests" / "infra" / "nvidia_smi.py", "effdet_nvidia_smi_driver")

DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PROFILES = DEFAULTS["lab_image_profiles"]
AUTO = DEFAULTS["lab_image_auto_profiles"]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def ok(stdout: str) -> dict:
    return {"rc": 0, "stdout": stdout, "stderr": ""}


def synthetic_driver(version: str, gpus: int = 1) -> dict:
    """SYNTHETIC: what `nvidia-smi --query-gpu=driver_version --format=csv,noheader`
    prints (one line per GPU, as in the recorded csv_noheader_driver-version_2gpu.csv)."""
    return ok(f"{version}\n" * gpus)


def synthetic_caps(*caps: str) -> dict:
    """SYNTHETIC: `nvidia-smi --query-gpu=compute_cap --format=csv,noheader`."""
    return ok("".join(f"{c}\n" for c in caps))


MISSING = {"rc": 2, "failed": True, "msg": "Error executing command.", "stdout": "", "stderr": "",
           "exception": "FileNotFoundError: [Errno 2] No such file or directory: b'nvidia-smi'"}
NO_DEVICES = {"rc": 6, "stdout": "No devices were found", "stderr": ""}
# What a driver older than 510 answers to --query-gpu=compute_cap.
NO_COMPUTE_CAP = {"rc": 2, "stdout": 'Field "compute_cap" is not a valid field to query.\n', "stderr": ""}


def choose(caps, driver, requested=None, force=False, profiles=None, auto=None, host="labhost-1"):
    return lp.lab_image_choose_profile(caps, profiles or PROFILES, requested, force, auto or AUTO,
                                       driver=driver, host=host)


# ----------------------------------------------------------------------------- the profiles

def test_every_gpu_profile_states_its_driver_minimum():
    """NVIDIA's table (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver
    Versions", Linux x86_64): CUDA 10.1 (10.1.105 and updates) >= 418.39, CUDA 12.2 GA >= 535.54.03."""
    assert PROFILES["tf2.1-gpu"]["driver_min"] == "418.39"
    assert PROFILES["tf2.15-gpu"]["driver_min"] == "535.54.03"
    assert "driver_min" not in PROFILES["cpu"] and PROFILES["cpu"]["gpu"] is False
    for name, profile in PROFILES.items():
        if profile["gpu"]:
            assert isinstance(profile["driver_min"], str), f"{name}: quote driver_min (YAML floats lose parts)"
            assert lp.driver_tuple(profile["driver_min"]), name


def test_driver_min_is_documented():
    spec = role_docs.load_specs(ROLE)
    assert "driver_min" in spec["main"]["options"]["lab_image_profiles"]["description"]
    assert "driver_min:" in (ROLE / "defaults" / "main.yml").read_text()


# ----------------------------------------------------------------------------- versions

VERSIONS = [
    ("470.82.01", "535.54.03", False),
    ("535.104.05", "535.54.03", True),   # numeric per part, not string order
    ("535.54.03", "535.54.03", True),
    ("535.54.02", "535.54.03", False),
    ("525.60.13", "535.54.03", False),
    ("570.86.15", "535.54.03", True),
    ("418.39", "418.39", True),
    ("418.87.01", "418.39", True),
    ("410.48", "418.39", False),
    ("440.64", "440.100", False),
    ("440.100", "440.64", True),
    ("515.57", "515.57.0", True),        # missing parts count as 0
    ("515.57", "515.57.01", False),
    ("378.09", "378.9", True),           # 09 is the number 9
    ("1000.1", "999.99.99", True),
]


@pytest.mark.parametrize("version,minimum,fits", VERSIONS)
def test_driver_at_least(version, minimum, fits):
    assert lp.driver_at_least(version, minimum) is fits


@pytest.mark.parametrize("version,minimum,fits", VERSIONS)
def test_same_answer_as_the_testinfra_parser(version, minimum, fits):
    """tests/infra/nvidia_smi.py compares drivers for the verify checks: the two agree."""
    assert infra.driver_at_least(version, minimum) is lp.driver_at_least(version, minimum)


@pytest.mark.parametrize("bad", ["", "N/A", "535.x", "r535", "535..54", ".535", "535.54.03.1.2", None, 450.8, True])
def test_not_a_driver_version(bad):
    assert lp.driver_tuple(bad) is None
    with pytest.raises(ValueError):
        lp.driver_at_least(bad, "418.39")


# ----------------------------------------------------------------------------- recorded output

@pytest.mark.parametrize("name,fields,expected", [
    # the preflight's own command, recorded on a 2-GPU host
    ("csv_noheader_driver-version_2gpu.csv", None, ["515.57", "515.57"]),
    ("csv_header_titanv-rtx5880_2gpu_compute-cap.csv", None, ["570.86.15", "570.86.15"]),
    ("csv_header_units_a100-sxm4-80gb_8gpu.csv", None, ["570.133.20"] * 8),
    ("csv_noheader_nounits_rtx2080_1gpu.csv",
     ["power.limit", "power.min_limit", "power.max_limit", "memory.total", "vbios_version", "driver_version",
      "name", "gpu_uuid", "power.draw", "temperature.gpu", "temperature.memory", "clocks.current.graphics",
      "clocks.sm", "clocks.mem", "utilization.gpu", "utilization.memory", "fan.speed",
      "pcie.link.width.current", "pstate"], ["440.64"]),
])
def test_parse_driver_versions_recordings(name, fields, expected):
    assert lp.parse_driver_versions(fixture(name), fields) == expected


def test_the_compute_cap_parser_is_the_same_parser():
    """One CSV parser serves both facts: compute_cap and driver_version of the same recording."""
    text = fixture("csv_header_titanv-rtx5880_2gpu_compute-cap.csv")
    assert lp.parse_compute_caps(text) == ["7.0", "8.9"]
    assert lp.parse_driver_versions(text) == ["570.86.15", "570.86.15"]
    with pytest.raises(ValueError, match="no driver_version column"):
        lp.parse_driver_versions(fixture("csv_header_gtx1080ti_1gpu_name.csv"))
    with pytest.raises(ValueError, match="no driver_version column in 'NVIDIA H100 NVL, 0x232110DE'"):
        lp.parse_driver_versions(fixture("csv_noheader_h100nvl_1gpu.csv"))  # no such field: a header?
    with pytest.raises(ValueError, match="not a driver version: 'N/A'"):
        lp.parse_driver_versions("515.57\nN/A\n")  # SYNTHETIC
    with pytest.raises(ValueError, match=r"no driver_version column in the queried fields \['name', 'pci.device_id'\]"):
        lp.parse_driver_versions(fixture("csv_noheader_h100nvl_1gpu.csv"), ["name", "pci.device_id"])
    with pytest.raises(ValueError, match="19 columns, neither a header nor the queried fields"):
        lp.parse_driver_versions(fixture("csv_noheader_nounits_rtx2080_1gpu.csv"))  # not its first column


@pytest.mark.parametrize("result,version", [
    (ok(fixture("csv_noheader_driver-version_2gpu.csv")), "515.57"),
    (synthetic_driver("470.82.01", 4), "470.82.01"),
    (ok("535.104.05\n535.54.03\n"), "535.54.03"),  # SYNTHETIC: should GPUs differ, the oldest counts
    (MISSING, None),
    (NO_DEVICES, None),
    ({"rc": 9, "stdout": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
      "stderr": ""}, None),
    (ok("Failed to initialize NVML: Driver/library version mismatch\n"), None),  # SYNTHETIC
    (ok(""), None),
    (None, None),
    ({"skipped": True}, None),
])
def test_host_driver_version(result, version):
    assert lp.host_driver_version(result) == version


# ----------------------------------------------------------------------------- every profile x drivers

# (profile, compute capability that fits it, driver, accepted)
MATRIX = [(p, cap, v, ok_) for p, cap, cases in [
    ("tf2.1-gpu", "7.0", [("410.48", False), ("418.39", True), ("418.87.01", True), ("470.82.01", True),
                          ("535.54.03", True), ("570.133.20", True)]),
    ("tf2.15-gpu", "8.0", [("418.39", False), ("470.82.01", False), ("525.60.13", False), ("535.54.02", False),
                           ("535.54.03", True), ("535.104.05", True), ("550.54.15", True), ("570.86.15", True)]),
    ("cpu", "8.0", [("410.48", True), ("470.82.01", True), ("570.86.15", True)]),
] for v, ok_ in cases]


@pytest.mark.parametrize("profile,cap,driver,accepted", MATRIX)
def test_every_profile_against_drivers(profile, cap, driver, accepted):
    got = choose(synthetic_caps(cap), synthetic_driver(driver), requested=profile)
    assert got["ok"] is accepted, got["error"]
    assert got["driver_version"] == driver
    if not accepted:
        low = PROFILES[profile]["driver_min"]
        assert got["error"].startswith(f"lab_image_profile {profile} needs NVIDIA driver >= {low}; "
                                       f"labhost-1 has {driver}. ")
        assert got["error"].endswith(" Install a newer driver first.")
    # the same answer without compute_cap (drivers before 510 cannot report it)
    assert choose(NO_COMPUTE_CAP, synthetic_driver(driver), requested=profile)["ok"] is accepted


def test_the_refusal_message():
    """A CUDA 12 profile on a 470 driver: the issue's example, word for word up to the suggestion."""
    got = choose(NO_COMPUTE_CAP, synthetic_driver("470.82.01", 2), requested="tf2.15-gpu")
    assert not got["ok"]
    assert got["error"] == (
        "lab_image_profile tf2.15-gpu needs NVIDIA driver >= 535.54.03; labhost-1 has 470.82.01. "
        "The profile that fits this driver: tf2.1-gpu (>= 418.39; 3.5 <= compute capability < 8.0). "
        "Install a newer driver first.")
    # the preflight's refusal adds the closing sentence
    tasks = yaml.safe_load((ROLE / "tasks" / "choose.yml").read_text())
    refuse = next(t for t in tasks if t["name"] == "Refuse a profile that does not fit this host")
    assert refuse["ansible.builtin.assert"]["fail_msg"] == "{{ lab_image_choice.error }} Nothing was changed."


def test_the_suggestion_takes_the_gpus_into_account():
    # V100 on 470: TF 2.1 fits both the driver and the card
    got = choose(ok("7.0\n7.0\n"), synthetic_driver("515.65.01"), requested="tf2.15-gpu")
    assert "The profile that fits this driver and GPUs of compute capability 7.0: tf2.1-gpu (>= 418.39)." \
        in got["error"]
    # A100 on 525: TF 2.1 has no kernels for it, so nothing fits
    got = choose(ok("8.0\n"), synthetic_driver("525.60.13"), requested="tf2.15-gpu")
    assert "No GPU profile fits this driver and GPUs of compute capability 8.0." in got["error"]
    # a driver older than every profile's minimum
    got = choose(NO_COMPUTE_CAP, synthetic_driver("410.48"), requested="tf2.1-gpu")
    assert "labhost-1 has 410.48. No GPU profile fits this driver. Install a newer driver first." in got["error"]
    # several fit: all are named, in lab_image_auto_profiles order
    more = dict(PROFILES, **{"tf2.4-gpu": dict(PROFILES["tf2.1-gpu"], driver_min="450.80.02")})
    got = choose(NO_COMPUTE_CAP, synthetic_driver("470.82.01"), requested="tf2.15-gpu", profiles=more)
    assert "The profiles that fit this driver: tf2.1-gpu (>= 418.39; 3.5 <= compute capability < 8.0), " \
           "tf2.4-gpu (>= 450.80.02; 3.5 <= compute capability < 8.0)." in got["error"]


def test_auto_pick_considers_the_driver():
    assert choose(ok("7.0\n"), synthetic_driver("470.82.01"))["profile"] == "tf2.1-gpu"
    got = choose(ok("8.6\n"), synthetic_driver("535.104.05"))
    assert got["profile"] == "tf2.15-gpu" and got["reason"].endswith("driver 535.104.05")
    # a TF 2.15-first order on a V100 whose driver is too old for CUDA 12: TF 2.1
    got = choose(ok("7.0\n"), synthetic_driver("515.65.01"), auto=["tf2.15-gpu", "tf2.1-gpu"])
    assert got["ok"] and got["profile"] == "tf2.1-gpu"
    # an A100 on 525: only TF 2.15 supports the card, and the driver is too old for it
    got = choose(ok("8.0\n"), synthetic_driver("525.60.13"))
    assert not got["ok"] and got["error"] == (
        "lab_image_profile is unset; the profile that fits these GPUs, tf2.15-gpu, needs NVIDIA driver "
        ">= 535.54.03; labhost-1 has 525.60.13. No GPU profile fits this driver and GPUs of compute "
        "capability 8.0. Install a newer driver first.")


def test_the_filters_are_registered():
    filters = lp.FilterModule().filters()
    assert filters["lab_image_driver_version"] is lp.host_driver_version
    assert filters["lab_image_choose_profile"] is lp.lab_image_choose_profile


def test_an_unreadable_compute_capability_names_the_driver():
    got = choose(NO_COMPUTE_CAP, synthetic_driver("470.82.01"))
    assert not got["ok"] and "(NVIDIA driver 470.82.01)" in got["error"]


@pytest.mark.parametrize("caps,driver,requested", [
    (MISSING, MISSING, None),            # the lab-in-a-box: no nvidia-smi at all
    (NO_DEVICES, NO_DEVICES, None),      # a driver without a GPU
    (MISSING, MISSING, "tf2.15-gpu"),    # a build host without a GPU
    (MISSING, MISSING, "tf2.1-gpu"),
    (ok("8.0\n"), synthetic_driver("410.48"), "cpu"),
    (None, None, None),
])
def test_hosts_without_a_readable_driver_are_unaffected(caps, driver, requested):
    got = choose(caps, driver, requested=requested)
    assert got["ok"], got["error"]
    assert got["profile"] == (requested or "cpu")


def test_force_does_not_skip_the_driver_check():
    got = choose(ok("8.6\n"), synthetic_driver("470.82.01"), requested="tf2.1-gpu", force=True)
    assert got["ok"]  # force is for the compute capability; 470 runs CUDA 10.1
    got = choose(ok("7.0\n"), synthetic_driver("470.82.01"), requested="tf2.15-gpu", force=True)
    assert not got["ok"] and "needs NVIDIA driver >= 535.54.03" in got["error"]


@pytest.mark.parametrize("value,message", [
    ("abc", "lab_image_profiles[tf2.15-gpu].driver_min = 'abc' is not an NVIDIA driver version"),
    (450.8, "write it as a string ('450.8')"),
    ("535.54.03; id", "is not an NVIDIA driver version"),
])
def test_a_bad_driver_min_is_refused(value, message):
    profiles = dict(PROFILES, **{"tf2.15-gpu": dict(PROFILES["tf2.15-gpu"], driver_min=value)})
    got = choose(MISSING, MISSING, profiles=profiles)
    assert not got["ok"] and message in got["error"]


def test_driver_min_null_checks_nothing():
    """lab_image_profile_overrides: {tf2.15-gpu: {driver_min: null}}, e.g. for CUDA forward compatibility."""
    profiles = dict(PROFILES, **{"tf2.15-gpu": dict(PROFILES["tf2.15-gpu"], driver_min=None)})
    assert choose(ok("8.0\n"), synthetic_driver("470.82.01"), requested="tf2.15-gpu", profiles=profiles)["ok"]


# ----------------------------------------------------------------------------- the preflight

def test_the_preflight_reads_the_driver_before_anything_changes():
    preflight = yaml.safe_load((ROLE / "tasks" / "preflight.yml").read_text())
    include = next(t for t in preflight if "ansible.builtin.include_tasks" in t
                   and t["ansible.builtin.include_tasks"]["file"] == "choose.yml")
    assert include["when"] == "not (lab_image_preflight_done | default(false))"
    tasks = yaml.safe_load((ROLE / "tasks" / "choose.yml").read_text())
    names = [t["name"] for t in tasks]
    query = next(t for t in tasks if t.get("register") == "lab_image_nvidia_smi_driver")
    assert query["ansible.builtin.command"]["cmd"] == "nvidia-smi --query-gpu=driver_version --format=csv,noheader"
    assert query["failed_when"] is False and query["changed_when"] is False and query["check_mode"] is False
    pick = next(t for t in tasks if t["name"] == "Pick the image profile")
    expr = pick["ansible.builtin.set_fact"]["lab_image_choice"]
    assert "driver=lab_image_nvidia_smi_driver" in expr and "host=inventory_hostname" in expr
    assert names.index(query["name"]) < names.index("Pick the image profile") \
        < names.index("Refuse a profile that does not fit this host") \
        < names.index("Look for the base image on the host")
    main = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    assert main[0]["ansible.builtin.include_tasks"] == "preflight.yml"  # before the pull and the build
