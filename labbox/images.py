"""Locally built images: a debootstrap base, then content-hashed derived images."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .shell import docker, log

BASE_IMAGE = "effdet-lab/debian:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CONTEXT_DIR = Path(__file__).resolve().parent / "context"


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def ensure_base(mirror: str = DEBIAN_MIRROR, suite: str = "bookworm", ref: str = BASE_IMAGE) -> str:
    """A minimal Debian image from debootstrap, imported with no registry involved."""
    if image_exists(ref):
        return ref
    log(f"building {ref} with debootstrap from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="labbox-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(root), mirror],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", ref], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
        shutil.rmtree(root, ignore_errors=True)
    return ref


def file_digest(path: Path) -> str:
    """sha256 of one file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def context_hash(context: Path, *extra: str) -> str:
    """A stable hash of every file in a build context (path and bytes) plus extra strings."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode())
        digest.update(path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:12]


def ensure_built(name: str, base: str = BASE_IMAGE) -> str:
    """Build labbox/context/<name> as effdet-lab/<name>:<hash>, unless that tag exists."""
    context = CONTEXT_DIR / name
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    ref = f"effdet-lab/{name}:{context_hash(context, base_id)}"
    if not image_exists(ref):
        log(f"building {ref}")
        docker("build", "-q", "--build-arg", f"BASE={base}", "-t", ref, str(context))
    docker("tag", ref, f"effdet-lab/{name}:latest")
    prune_stale_tags(f"effdet-lab/{name}", keep={ref, f"effdet-lab/{name}:latest"})
    return ref


def build_logged(ref: str, context: Path, build_args: dict[str, str]) -> float:
    """docker build, every output line logged as it comes (a long build is never silent).

    Returns the seconds it took; raises with the last lines when it fails."""
    args = [f"--build-arg={key}={value}" for key, value in build_args.items()]
    started = time.monotonic()
    proc = subprocess.Popen(["docker", "build", *args, "-t", ref, str(context)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DOCKER_CLI_HINTS": "false"})
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        line = line.replace("\x1b[91m", "").replace("\x1b[0m", "")
        if line:
            print(f"  | {line}", file=sys.stderr, flush=True)
            tail = (tail + [line])[-40:]
    if proc.wait() != 0:
        raise RuntimeError(f"docker build of {ref} failed ({proc.returncode}):\n" + "\n".join(tail))
    seconds = time.monotonic() - started
    log(f"built {ref} in {seconds:.0f} s")
    return seconds


def prune_stale_tags(repository: str, keep: set[str]) -> None:
    """Untag older content-hash builds of an image (layers still in use stay)."""
    tags = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    stale = [t for t in tags if t not in keep and not t.endswith(":<none>")]
    if stale:
        docker("rmi", *stale, check=False)
