"""lab_container_volumes_nosuid's mountinfo filters, and verify's sudo and nosuid expectations."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]


mounts = load_module(REPO / "roles/lab_container/filter_plugins/lab_mounts.py", "lab_mounts")
sys.path.insert(0, str(REPO / "tests" / "infra"))     # its nvidia_smi
try:
    infra = load_module(REPO / "tests/infra/conftest.py", "infra_conftest")
finally:
    sys.path.remove(str(REPO / "tests" / "infra"))

# A simulated host: / on overlay, /srv/effdet-lab/data bound onto itself nosuid,nodev (the unit's
# work), stacked on an earlier plain bind of the same folder; a folder with a space in its name.
HOST = """\
158 107 0:62 / / rw,relatime master:4 - overlay overlay rw,lowerdir=/l
159 158 0:65 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
235 158 0:62 /srv/effdet-lab/data /srv/effdet-lab/data rw,relatime master:4 - overlay overlay rw
236 235 0:62 /srv/effdet-lab/data /srv/effdet-lab/data rw,nosuid,nodev,relatime master:4 - overlay overlay rw
240 158 0:70 / /srv/my\\040data rw,nosuid,relatime - ext4 /dev/sdb1 rw
"""
# Inside the container, started before the unit: its /data has no nosuid.
CONTAINER_OLD = """\
399 362 0:62 / / rw,relatime - overlay overlay rw
400 399 0:62 /srv/effdet-lab/data /data rw,relatime - overlay overlay rw
"""
CONTAINER_NEW = CONTAINER_OLD.replace("/data rw,relatime", "/data rw,nosuid,nodev,relatime")
BINDS = [{"src": "/srv/effdet-lab/data", "dest": "/data"}]


def test_flags_of_the_mount_that_holds_a_path():
    assert mounts.lab_container_mount_flags(HOST, "/srv/effdet-lab/data") == ["rw", "nosuid", "nodev", "relatime"]
    assert "nosuid" in mounts.lab_container_mount_flags(HOST, "/srv/effdet-lab/data/effdet-lab/runs")
    assert mounts.lab_container_mount_flags(HOST, "/srv/effdet-lab") == ["rw", "relatime"]
    assert mounts.lab_container_mount_flags(HOST, "/srv/my data/x") == ["rw", "nosuid", "relatime"]
    assert mounts.lab_container_mount_flags(HOST, "/srv/effdet-lab/data-other") == ["rw", "relatime"]
    assert mounts.lab_container_mount_flags(CONTAINER_OLD, "/data", exact=True) == ["rw", "relatime"]
    assert mounts.lab_container_mount_flags(CONTAINER_OLD, "/elsewhere", exact=True) == []


def test_folders_missing_nosuid_on_the_host():
    assert mounts.lab_container_nosuid_missing(["/srv/effdet-lab/data", "/srv/my data", "/opt/x"], HOST) == [
        "/srv/my data", "/opt/x"]


def test_a_container_started_before_the_unit_must_restart():
    assert mounts.lab_container_nosuid_mismatch(BINDS, HOST, CONTAINER_OLD) == ["/data"]
    assert mounts.lab_container_nosuid_mismatch(BINDS, HOST, CONTAINER_NEW) == []
    plain_host = HOST.replace("236 235", "#").splitlines()
    plain_host = "\n".join(line for line in plain_host if not line.startswith("#"))
    assert mounts.lab_container_nosuid_mismatch(BINDS, plain_host, CONTAINER_OLD) == []
    assert mounts.lab_container_nosuid_mismatch(BINDS, plain_host, CONTAINER_NEW) == ["/data"], "turned off"


@pytest.mark.parametrize("hostvars, mode", [
    ({}, "nopasswd"),
    ({"lab_image_sudo": "none"}, "none"),
    ({"lab_image_sudo": "password", "lab_container_sudo": "{{ lab_image_sudo }}"}, "password"),
    ({"lab_image_sudo": "none", "lab_container_sudo": "password"}, "password"),
    ({"lab_image_sudo": "password", "verify_lab_sudo": "nopasswd"}, "nopasswd"),
])
def test_sudo_expectation_comes_from_the_inventory(hostvars, mode):
    assert infra.Expectations.from_hostvars(hostvars).lab_sudo == mode


def test_a_bad_sudo_mode_is_named():
    with pytest.raises(ValueError, match="lab_image_sudo must be one of"):
        infra.Expectations.from_hostvars({"lab_image_sudo": "sometimes"})


def test_nosuid_expectation_and_bind_volumes():
    exp = infra.Expectations.from_hostvars({"lab_container_volumes_nosuid": True, "lab_container_volumes": [
        "/srv/effdet-lab/data:/data", "keys:/etc/keys", "/srv/ro:/ro:ro", "{{ more }}"]})
    assert exp.lab_volumes_nosuid is True
    assert exp.lab_bind_volumes == (("/srv/effdet-lab/data", "/data"), ("/srv/ro", "/ro"))
    assert infra.Expectations.from_hostvars({}).lab_volumes_nosuid is False
    assert infra.Expectations.from_hostvars({"lab_container_volumes_nosuid": True,
                                             "verify_lab_volumes_nosuid": False}).lab_volumes_nosuid is False
