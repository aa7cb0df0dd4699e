"""testinfra fixtures: per-host expectations from inventory variables.

Run against any inventory (ansible.cfg's by default):

    pytest -p no:cacheprovider --hosts=ansible://gpu_hosts tests/infra
    pytest -p no:cacheprovider --hosts=ansible://gpu_hosts --ansible-inventory=inventory/labbox tests/infra

Inventory variables (host or group vars) read here:

    verify_gpu_count         int, default 0. GPUs `nvidia-smi` must list on the
                             host. 0 means the host must have none: the GPU
                             checks then assert their absence and fail if a GPU
                             appears.
    verify_gpu_names         list of str, default []. The GPU names in index
                             order as nvidia-smi prints them ("NVIDIA A100-SXM4-80GB"),
                             or a single name that every GPU must have. Required
                             when verify_gpu_count > 0.
    verify_driver_min        str, e.g. "535.104.05". Lowest accepted driver.
                             Required when verify_gpu_count > 0.
    verify_cuda_image        str, e.g. "nvidia/cuda:12.2.2-base-ubuntu22.04":
                             the image for `docker run --gpus ... <image> nvidia-smi -L`.
                             Required when verify_gpu_count > 0.
    verify_registry_mirrors  list of str; default: the host's
                             docker_daemon_registry_mirrors. Null/absent: the
                             mirror checks are skipped (the role leaves the key
                             alone then).
    verify_lab_container     str, default "effdet-lab". The lab container.
    verify_lab_user          str, default "lcg". The user inside the lab container.
    verify_nvidia_runtime_path  str, default nvidia_container_toolkit_runtime_path
                             or /usr/bin/nvidia-container-runtime.
    verify_lab_sudo          nopasswd | password | none; default the host's
                             lab_container_sudo, else lab_image_sudo, else
                             nopasswd (the recipe's). What the lab user's sudo
                             must be: passwordless root; root only with a
                             password (and a password hash set); or none.
    verify_lab_volumes_nosuid  bool; default the host's
                             lab_container_volumes_nosuid, else false. true:
                             every bind volume of lab_container_volumes must be
                             nosuid,nodev on the host and inside the container.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from testinfra.backend.ansible import AnsibleBackend
from testinfra.backend.ssh import SshBackend

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nvidia_smi  # noqa: E402

QUERY_FIELDS = ["index", "name", "uuid", "driver_version", "memory.total", "compute_cap"]
QUERY_CMD = "nvidia-smi --query-gpu=" + ",".join(QUERY_FIELDS) + " --format=csv,noheader,nounits"


SUDO_MODES = ("nopasswd", "password", "none")


def _plain(value: Any) -> Any:
    """An inventory value as given; None where it is still a Jinja expression."""
    return None if isinstance(value, str) and "{{" in value else value


def _sudo_mode(hv: dict[str, Any]) -> str:
    for key in ("verify_lab_sudo", "lab_container_sudo", "lab_image_sudo"):
        value = _plain(hv.get(key))
        if value is None:
            continue
        if value not in SUDO_MODES:
            raise ValueError(f"{key} must be one of {', '.join(SUDO_MODES)}, got {value!r}")
        return value
    return "nopasswd"


def _bool(hv: dict[str, Any], *keys: str) -> bool:
    for key in keys:
        value = _plain(hv.get(key))
        if value is None:
            continue
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return False


def _bind_volumes(hv: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(host folder, container path) of each bind volume in lab_container_volumes."""
    out = []
    for vol in _plain(hv.get("lab_container_volumes")) or []:
        vol = _plain(vol)
        if isinstance(vol, str) and vol.startswith("/") and ":" in vol:
            src, dest = vol.split(":")[:2]
            out.append((src, dest))
    return tuple(out)


@dataclass(frozen=True)
class Expectations:
    gpu_count: int
    gpu_names: tuple[str, ...]
    driver_min: Optional[str]
    cuda_image: Optional[str]
    registry_mirrors: Optional[tuple[str, ...]]
    lab_container: str
    lab_user: str
    nvidia_runtime_path: str
    lab_sudo: str = "nopasswd"
    lab_volumes_nosuid: bool = False
    lab_bind_volumes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_hostvars(cls, hv: dict[str, Any]) -> "Expectations":
        count = hv.get("verify_gpu_count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"verify_gpu_count must be an int >= 0, got {count!r}")
        names = hv.get("verify_gpu_names") or []
        if isinstance(names, str):
            names = [names]
        names = tuple(str(n) for n in names)
        mirrors = hv.get("verify_registry_mirrors", hv.get("docker_daemon_registry_mirrors"))
        exp = cls(
            gpu_count=count,
            gpu_names=names,
            driver_min=(str(hv["verify_driver_min"]) if hv.get("verify_driver_min") is not None else None),
            cuda_image=hv.get("verify_cuda_image") or None,
            registry_mirrors=None if mirrors is None else tuple(str(m) for m in mirrors),
            lab_container=str(hv.get("verify_lab_container") or "effdet-lab"),
            lab_user=str(hv.get("verify_lab_user") or "lcg"),
            nvidia_runtime_path=str(
                hv.get("verify_nvidia_runtime_path")
                or hv.get("nvidia_container_toolkit_runtime_path")
                or "/usr/bin/nvidia-container-runtime"
            ),
            lab_sudo=_sudo_mode(hv),
            lab_volumes_nosuid=_bool(hv, "verify_lab_volumes_nosuid", "lab_container_volumes_nosuid"),
            lab_bind_volumes=_bind_volumes(hv),
        )
        if count > 0:
            missing = [
                k
                for k, v in (
                    ("verify_gpu_names", exp.gpu_names),
                    ("verify_driver_min", exp.driver_min),
                    ("verify_cuda_image", exp.cuda_image),
                )
                if not v
            ]
            if missing:
                raise ValueError(f"verify_gpu_count={count} needs {', '.join(missing)} set for this host")
            if len(names) not in (1, count):
                raise ValueError(f"verify_gpu_names has {len(names)} names for verify_gpu_count={count}")
            nvidia_smi.parse_version(exp.driver_min or "")
        return exp

    def names_for(self, n: int) -> list[str]:
        """Expected names of GPUs 0..n-1."""
        if len(self.gpu_names) == 1:
            return [self.gpu_names[0]] * n
        return list(self.gpu_names[:n])


def _hostvars(host) -> dict[str, Any]:
    try:
        return dict(host.ansible.get_variables())
    except (AttributeError, RuntimeError, NotImplementedError):
        # Not an ansible:// host (e.g. --hosts=ssh://...): defaults only.
        return {}


def _ssh_backend(host) -> Optional[SshBackend]:
    """The ssh backend that runs this host's commands, if it is one."""
    backend = host.backend
    if isinstance(backend, AnsibleBackend):
        inner = backend.ansible_runner.get_host(
            backend.host, ssh_config=backend.ssh_config, ssh_identity_file=backend.ssh_identity_file
        )
        backend = inner.backend if inner is not None else None
    return backend if isinstance(backend, SshBackend) else None


@pytest.fixture(scope="session")
def _ssh_master_dir():
    """A private folder for the ssh master connections of this run; the masters
    are stopped and the folder removed when the run ends."""
    path = tempfile.mkdtemp(prefix="effdet-ssh-")
    yield path
    for socket in sorted(Path(path).iterdir()):
        # The path holds no % token: ssh talks to that socket whatever the host name.
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "effdet-ssh-master"],
                       capture_output=True, timeout=30, check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _ssh_connection_reuse(host, _ssh_master_dir) -> None:
    """One ssh login per host for the whole run, not one per command.

    testinfra passes ansible.cfg's ssh_args (ControlMaster=auto, ControlPersist)
    to ssh, but a master is only shared through a ControlPath, which it sets
    only from ansible.cfg's control_path (unset here: mitogen, which runs the
    plays, keeps its own connection). Without one, every command is a new
    login: 26 per host. A host whose ssh options already name a ControlPath
    keeps it."""
    backend = _ssh_backend(host)
    if backend is None or backend.controlpath or "controlpath" in (backend.ssh_extra_args or "").lower():
        return
    # testinfra formats the ssh command line with %: "%%C" reaches ssh as %C,
    # a hash of the host, port and user (short enough for a socket path).
    backend.controlpath = os.path.join(_ssh_master_dir, "%%C")


@pytest.fixture(scope="module")
def expect(host) -> Expectations:
    return Expectations.from_hostvars(_hostvars(host))


def docker_json(host, *args: str) -> Any:
    out = host.check_output("docker " + " ".join(shlex.quote(a) for a in args))
    return json.loads(out)


@dataclass(frozen=True)
class HostGpus:
    """What nvidia-smi says on the host itself."""

    nvidia_smi: Optional[str]  # path, None when not installed
    listed: list  # list[nvidia_smi.ListedGpu]
    queried: list  # list[nvidia_smi.QueriedGpu]
    list_output: str


@pytest.fixture(scope="module")
def host_gpus(host) -> HostGpus:
    which = host.run("command -v nvidia-smi")
    if which.rc != 0:
        return HostGpus(None, [], [], "")
    path = which.stdout.strip()
    lst = host.run("nvidia-smi -L")
    # rc 6: "No devices were found"; anything else non-zero is a broken driver.
    assert lst.rc in (0, 6), f"nvidia-smi -L failed (rc {lst.rc}): {lst.stdout}{lst.stderr}"
    listed = nvidia_smi.parse_list_gpus(lst.stdout)
    queried: list = []
    if listed:
        q = host.run(QUERY_CMD)
        assert q.rc == 0, f"{QUERY_CMD} failed (rc {q.rc}): {q.stdout}{q.stderr}"
        queried = nvidia_smi.parse_query_gpu_csv(q.stdout, QUERY_FIELDS)
    return HostGpus(path, listed, queried, lst.stdout)


@dataclass(frozen=True)
class LabContainer:
    name: str
    inspect: dict


@pytest.fixture(scope="module")
def lab_container(host, expect) -> LabContainer:
    """The running lab container. Skips ONLY when no container of that name
    exists on the host (the image and container come with a later issue)."""
    r = host.run("docker container inspect " + shlex.quote(expect.lab_container))
    if r.rc != 0:
        if "no such container" in (r.stderr + r.stdout).lower():
            pytest.skip(
                f"lab container {expect.lab_container!r} does not exist on this host yet "
                "(set verify_lab_container; these checks become mandatory once it is deployed)"
            )
        pytest.fail(f"docker container inspect {expect.lab_container} failed: {r.stderr}")
    (info,) = json.loads(r.stdout)
    assert info["State"]["Running"], f"lab container {expect.lab_container} exists but is {info['State']['Status']}"
    return LabContainer(expect.lab_container, info)


def pytest_collection_modifyitems(config, items) -> None:
    """Without --hosts, testinfra would point these checks at the local
    machine; skip them instead (e.g. on a plain `pytest tests`)."""
    if config.getoption("hosts", None):
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason="infra checks need --hosts=ansible://<group> (see tests/infra/conftest.py)")
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
