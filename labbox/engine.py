"""Make sure a Docker engine answers on the controller: install and start one if not."""
from __future__ import annotations

import os
import shutil
import subprocess

from .shell import log, run, wait_for

DOCKERD_LOG = "/var/log/effdet-lab-dockerd.log"


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def ensure_engine() -> None:
    """Docker engine up: reuse a running one, else install docker.io and start dockerd."""
    if engine_answers():
        log("docker engine answers")
        return
    if shutil.which("dockerd") is None:
        log("installing docker.io from the distro packages")
        _apt_install("docker.io")
    if engine_answers():
        return
    log(f"starting dockerd in the background (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    wait_for(engine_answers, "dockerd to answer", timeout=60)
    log("docker engine started")


def ensure_tools(*commands: str) -> None:
    """Install the controller-side tools the harness shells out to."""
    package_for = {
        "debootstrap": "debootstrap",
        "rsync": "rsync",
        "gpg": "gnupg",
        "apt-ftparchive": "apt-utils",
        "dpkg-deb": "dpkg",
        "ssh": "openssh-client",
        "ssh-keygen": "openssh-client",
    }
    missing = sorted({package_for[c] for c in commands if shutil.which(c) is None})
    if missing:
        log(f"installing controller tools: {' '.join(missing)}")
        _apt_install(*missing)
