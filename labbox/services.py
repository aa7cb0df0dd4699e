"""Controller-side services: the registry mirror and the apt repository server."""
from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from .shell import docker, log, wait_for

NETWORK = "effdet-lab"
LABEL = "effdet-lab.labbox"
REGISTRY = "effdet-lab-registry"
REGISTRY_PUSH = "127.0.0.1:15000"
REGISTRY_MIRROR_URL = f"http://{REGISTRY}:5000"
APT_SERVER = "effdet-lab-apt"
APT_URL = f"http://{APT_SERVER}:8080"


def ensure_network() -> None:
    if docker("network", "inspect", NETWORK, check=False).returncode != 0:
        docker("network", "create", "--label", f"{LABEL}=network", NETWORK)


def ensure_container(name: str, image: str, run_args: Sequence[str], command: Sequence[str],
                     healthy: Callable[[], bool] | None = None) -> None:
    """Keep a running container whose spec is unchanged and that answers; replace it otherwise.

    A bind mount can outlive its source folder (a re-cloned checkout), so a
    reused container must also pass `healthy`, else it is recreated once.
    """
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    spec = hashlib.sha256(json.dumps([image_id, list(run_args), list(command)]).encode()).hexdigest()[:16]
    found = docker("container", "inspect", "--format",
                   '{{.State.Running}} {{index .Config.Labels "effdet-lab.spec"}}', name, check=False)
    if found.returncode == 0:
        running, _, old_spec = found.stdout.strip().partition(" ")
        if running == "true" and old_spec == spec and (healthy is None or _soon(healthy)):
            return
        docker("rm", "-f", name)
    log(f"starting {name}")
    docker("run", "-d", "--name", name, "--network", NETWORK, "--restart", "unless-stopped",
           "--label", f"{LABEL}=service", "--label", f"effdet-lab.spec={spec}",
           *run_args, image, *command)


def _soon(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    try:
        wait_for(check, "a reused service", timeout=seconds, interval=0.5)
        return True
    except TimeoutError:
        return False


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY_PUSH}/v2/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def ensure_registry(image: str) -> None:
    ensure_container(
        REGISTRY, image,
        ["-p", f"{REGISTRY_PUSH}:5000", "-v", "effdet-lab-registry-data:/var/lib/docker-registry"],
        ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"],
        healthy=_registry_up,
    )
    wait_for(_registry_up, "the local registry", timeout=30, interval=0.5)


def serve_image(local_ref: str, hub_name: str) -> None:
    """Push a local image so hosts can pull it as hub_name through the mirror.

    A hub name without a namespace lives under library/, as on Docker Hub.
    """
    repo, _, tag = hub_name.partition(":")
    if "/" not in repo:
        repo = f"library/{repo}"
    target = f"{REGISTRY_PUSH}/{repo}:{tag or 'latest'}"
    docker("tag", local_ref, target)
    docker("push", "-q", target)
    log(f"registry serves {hub_name}")


def ensure_apt_server(image: str, root: Path) -> None:
    key = (root / "nvidia" / "gpgkey").read_text()

    def serves_this_repo() -> bool:
        probe = ["python3", "-c", "import sys, urllib.request; "
                 f"sys.stdout.write(urllib.request.urlopen('{APT_URL}/nvidia/gpgkey').read().decode())"]
        out = docker("exec", REGISTRY, *probe, check=False)
        return out.returncode == 0 and out.stdout == key

    ensure_container(
        APT_SERVER, image,
        ["-v", f"{root}:/srv/apt:ro"],
        ["python3", "-m", "http.server", "8080", "--directory", "/srv/apt"],
        healthy=serves_this_repo,
    )
    wait_for(serves_this_repo, "the apt repository server", timeout=30, interval=0.5)
