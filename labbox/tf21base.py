"""The stand-in for the recipe's base, tensorflow/tensorflow:2.1.0-gpu-py3 (lab-in-a-box only).

labbox/context/tf2.1-standin is built on the debootstrap bookworm base with
the CPython 3.6 of this machine (pyenv's 3.6.15 tree, itself built on Debian
12: it links bookworm's libssl3) moved to /usr/local, pip 20.0.2 and the
tensorflow-cpu 2.1.0 wheel. The local registry serves it as HUB_NAME, never
under the real name: a pull of tensorflow/tensorflow:2.1.0-gpu-py3 on a
simulated host still fails, so a test must name the stand-in (lab_image_base).

As in tfbase.py, the CA bundle of this network (TLS is intercepted) goes only
into the first stage of a multi-stage build, through a temporary copy of the
context that also receives the Python tree.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from . import images, services, tfbase
from .shell import docker, log

NAME = "tf2.1-standin"
HUB_NAME = "effdetlab/tensorflow:2.1.0-gpu-py3-standin"
PYTHON_VERSION = "3.6.15"
# Where the Python 3.6 tree is looked for: LABBOX_PYTHON36 (an installed
# prefix, with bin/python3.6), then pyenv's.
PYTHON_CANDIDATES = (os.environ.get("LABBOX_PYTHON36"), f"{Path.home()}/.pyenv/versions/{PYTHON_VERSION}",
                     f"/root/.pyenv/versions/{PYTHON_VERSION}")
# Left out of the image: the test suite, pyenv's own pip and whatever else its
# site-packages holds (pip 20.0.2 is installed fresh), byte code, and tkinter's
# module (Tk is not installed; the real base has no python3-tk either).
PYTHON_EXCLUDES = ("lib/python3.6/test/", "lib/python3.6/site-packages/*", "__pycache__/",
                   "lib/python3.6/lib-dynload/_tkinter*")


def python36_prefix() -> Path:
    """The installed CPython 3.6 tree to copy into the stand-in."""
    for candidate in PYTHON_CANDIDATES:
        if not candidate:
            continue
        exe = Path(candidate) / "bin" / "python3.6"
        if exe.is_file():
            out = subprocess.run([str(exe), "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip().startswith("3.6."):
                return Path(candidate)
    raise FileNotFoundError(f"no CPython 3.6 tree (bin/python3.6) at {', '.join(filter(None, PYTHON_CANDIDATES))}: "
                            f"install {PYTHON_VERSION} with pyenv, or set LABBOX_PYTHON36 to its prefix")


def _python_identity(prefix: Path) -> str:
    """What the hash keeps of the Python tree: its prefix and its interpreter and library bytes."""
    parts = [str(prefix)]
    for name in ("bin/python3.6", "lib/libpython3.6m.so.1.0"):
        path = prefix / name
        parts.append(images.file_digest(path) if path.is_file() else "-")
    return ":".join(parts)


def current_ref(base: str = images.BASE_IMAGE, prefix: Path | None = None) -> str:
    """effdet-lab/tf2.1-standin:<hash of context, base, Python tree and index>: the tag a build makes now."""
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    identity = _python_identity(prefix or python36_prefix())
    return f"effdet-lab/{NAME}:{images.context_hash(images.CONTEXT_DIR / NAME, base_id, tfbase.pip_index(), identity)}"


def ensure_built(base: str = images.BASE_IMAGE) -> str:
    """The stand-in, built unless current_ref(base) exists."""
    context = images.CONTEXT_DIR / NAME
    prefix = python36_prefix()
    index = tfbase.pip_index()
    ref = current_ref(base, prefix)
    if not images.image_exists(ref):
        log(f"building {ref}: Python 3.6 from {prefix}, pip 20.0.2 and tensorflow-cpu 2.1.0 "
            f"from PyPI (a few minutes, once)")
        with tempfile.TemporaryDirectory(prefix="labbox-tf21-") as tmp:
            build = Path(tmp) / "context"
            subprocess.run(["cp", "-a", str(context), str(build)], check=True)
            excludes = [f"--exclude={pattern}" for pattern in PYTHON_EXCLUDES]
            subprocess.run(["rsync", "-a", *excludes, f"{prefix}/", str(build / "python3.6")], check=True)
            subprocess.run(["cp", str(tfbase.ca_bundle()), str(build / "build-ca.crt")], check=True)
            images.build_logged(ref, build, {"BASE": base, "PIP_INDEX_URL": index, "PY_SRC_PREFIX": str(prefix)})
    docker("tag", ref, f"effdet-lab/{NAME}:latest")
    images.prune_stale_tags(f"effdet-lab/{NAME}", keep={ref, f"effdet-lab/{NAME}:latest"})
    return ref


def ensure_served(base: str = images.BASE_IMAGE) -> str:
    """Build (once) and serve the stand-in as effdetlab/tensorflow:2.1.0-gpu-py3-standin."""
    ref = ensure_built(base)
    services.serve_image(ref, HUB_NAME)
    return ref


def extra_ca_pem(image: str) -> str | None:
    """The certificates of this controller's CA bundle that the image's own bundle lacks (PEM), or None.

    Where TLS is intercepted that is the interceptor's CA: the lab image's pip
    step needs it (lab_image_extra_ca), as the stand-in's build did."""
    theirs = set(_pem_blocks(docker("run", "--rm", "--entrypoint", "cat", image,
                                    "/etc/ssl/certs/ca-certificates.crt").stdout))
    extra = [block for block in _pem_blocks(tfbase.ca_bundle().read_text()) if block not in theirs]
    return "\n".join(extra) + "\n" if extra else None


def _pem_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if line == "-----BEGIN CERTIFICATE-----":
            current = [line]
        elif current:
            current.append(line)
            if line == "-----END CERTIFICATE-----":
                blocks.append("\n".join(current))
                current = []
    return blocks
