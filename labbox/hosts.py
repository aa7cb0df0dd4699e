"""Simulated GPU hosts: systemd, sshd and (after converge) their own dockerd."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .services import LABEL, NETWORK
from .shell import STATE_DIR, docker, log, run, wait_for

HOST_PREFIX = "effdet-lab-host-"
BASE_SSH_PORT = 2220
# Scratch hosts: bare simulated hosts that a test (or a developer) starts for
# itself. `up --hosts N` never touches them; `down` removes them.
SCRATCH_PREFIX = "effdet-lab-scratch-"
BASE_SCRATCH_SSH_PORT = 2260
CAPS = ("SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "MKNOD", "SYS_CHROOT", "AUDIT_WRITE", "NET_RAW")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class SimHost:
    index: int
    scratch: bool = False

    @property
    def name(self) -> str:
        return f"scratch-{self.index}" if self.scratch else f"labhost-{self.index}"

    @property
    def container(self) -> str:
        return f"{SCRATCH_PREFIX if self.scratch else HOST_PREFIX}{self.index}"

    @property
    def kind(self) -> str:
        """The value of the labbox label: scratch hosts are invisible to ensure_hosts."""
        return "scratch" if self.scratch else "host"

    @property
    def volume(self) -> str:
        return f"{self.container}-docker"

    @property
    def ssh_port(self) -> int:
        return (BASE_SCRATCH_SSH_PORT if self.scratch else BASE_SSH_PORT) + self.index


def ensure_ssh_key(state_dir: Path = STATE_DIR) -> Path:
    key = state_dir / "id_ed25519"
    if not key.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "effdet-lab-labbox", "-f", str(key)])
    return key


def ssh_args(host: SimHost, key: Path) -> list[str]:
    return ["ssh", "-i", str(key), "-p", str(host.ssh_port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3", "root@127.0.0.1"]


def host_spec(image: str, key: Path) -> str:
    """What a running host must match to be reused: its image and the login key."""
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    return hashlib.sha256((image_id + Path(f"{key}.pub").read_text()).encode()).hexdigest()[:16]


def _reusable(container: str, spec: str) -> bool:
    out = docker("container", "inspect", "--format",
                 '{{.State.Running}} {{index .Config.Labels "effdet-lab.spec"}}', container, check=False)
    return out.returncode == 0 and out.stdout.split() == ["true", spec]


def start_host(host: SimHost, image: str, key: Path, spec: str) -> None:
    log(f"starting simulated GPU host {host.name} (ssh on 127.0.0.1:{host.ssh_port})")
    args = ["run", "-d", "--name", host.container, "--hostname", host.name, "--network", NETWORK,
            "--label", f"{LABEL}={host.kind}", "--label", f"effdet-lab.spec={spec}"]
    for cap in CAPS:
        args += ["--cap-add", cap]
    args += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
             "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
             "--tmpfs", "/run", "--tmpfs", "/run/lock",
             "-v", f"{host.volume}:/var/lib/docker",
             "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro",
             "-p", f"127.0.0.1:{host.ssh_port}:22", image]
    docker(*args)


def wait_ssh(host: SimHost, key: Path) -> None:
    def answers() -> bool:
        return run([*ssh_args(host, key), "true"], check=False, timeout=15).returncode == 0
    wait_for(answers, f"sshd on {host.name}", timeout=90)


def remove_host(container: str) -> None:
    docker("rm", "-f", "-v", container, check=False)
    docker("volume", "rm", "-f", f"{container}-docker", check=False)


def existing_hosts(kind: str = "host") -> list[str]:
    out = docker("ps", "-a", "--filter", f"label={LABEL}={kind}", "--format", "{{.Names}}").stdout
    prefix = SCRATCH_PREFIX if kind == "scratch" else HOST_PREFIX
    return sorted(n for n in out.split() if n.startswith(prefix))


def start_scratch_host(index: int, image: str, key: Path) -> SimHost:
    """A fresh, bare scratch host (any earlier one of that index is replaced), sshd answering."""
    host = SimHost(index, scratch=True)
    remove_host(host.container)
    start_host(host, image, key, host_spec(image, key))
    wait_ssh(host, key)
    return host


def ensure_hosts(count: int, image: str, key: Path, fresh: bool = False) -> list[SimHost]:
    wanted = [SimHost(i) for i in range(1, count + 1)]
    wanted_names = {h.container for h in wanted}
    for name in existing_hosts():
        if fresh or name not in wanted_names:
            remove_host(name)
    spec = host_spec(image, key)
    for host in wanted:
        if not _reusable(host.container, spec):
            remove_host(host.container)
            start_host(host, image, key, spec)
    for host in wanted:
        wait_ssh(host, key)
    clean_cgroups()
    return wanted


def clean_cgroups() -> int:
    """rmdir the empty cgroup folders that nested containers leave behind.

    Simulated hosts share the controller's cgroup tree (--cgroupns=host); their
    dockerd creates <controller>/docker/<id> folders that outlive a killed host.
    A folder is removed only if it is empty, has no tasks, and does not belong
    to a container that is alive on the controller.
    """
    if not CGROUP_ROOT.is_dir():
        return 0
    alive = set(docker("ps", "-q", "--no-trunc").stdout.split())
    removed = 0
    for parent in [*CGROUP_ROOT.glob("*/docker"), *CGROUP_ROOT.glob("docker")]:
        for child in parent.iterdir() if parent.is_dir() else []:
            if not child.is_dir() or child.name in alive:
                continue
            for path in sorted((p for p in child.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                removed += _rmdir(path)
            removed += _rmdir(child)
    for scope in CGROUP_ROOT.glob("*/system.slice/docker-*.scope"):
        if scope.name[len("docker-"):-len(".scope")] not in alive:
            removed += _rmdir(scope)
    return removed


def _rmdir(path: Path) -> int:
    try:
        os.rmdir(path)
        return 1
    except OSError:
        return 0


def host_summary(hosts: list[SimHost]) -> str:
    return json.dumps([{"name": h.name, "container": h.container, "ssh_port": h.ssh_port} for h in hosts])
