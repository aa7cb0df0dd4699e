"""The CPU stand-in for the TensorFlow GPU base image (lab-in-a-box only).

labbox/context/tf-cpu is built on the debootstrap base and served by the local
registry under a hub-style name, so that the lab_image role pulls it on the
simulated hosts exactly as it would pull tensorflow/tensorflow:*-gpu from
Docker Hub through a mirror.

Installing the wheels needs the CA bundle of this network (TLS is
intercepted). It is copied into a temporary copy of the build context and used
only in the first stage of a multi-stage build: the served image holds neither
the CA nor a pip cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import images, services
from .shell import docker, log

NAME = "tf-cpu"
HUB_NAME = "effdetlab/tensorflow:2.15.1-cpu"
DEFAULT_CA = "/etc/ssl/certs/ca-certificates.crt"


def pip_index() -> str:
    """The index the stand-ins' builds install from: LABBOX_PIP_INDEX_URL, else PyPI."""
    return os.environ.get("LABBOX_PIP_INDEX_URL", "https://pypi.org/simple")


def ca_bundle() -> Path:
    for candidate in (os.environ.get("LABBOX_BUILD_CA"), os.environ.get("PIP_CERT"), DEFAULT_CA):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("no CA bundle for pip: set LABBOX_BUILD_CA (or PIP_CERT) to a PEM file")


def ensure_built(base: str = images.BASE_IMAGE) -> str:
    """effdet-lab/tf-cpu:<hash of the context and base>, built unless that tag exists.

    The CA bundle is not part of the hash: it changes nothing in the image.
    """
    context = images.CONTEXT_DIR / NAME
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
    index = pip_index()
    ref = f"effdet-lab/{NAME}:{images.context_hash(context, base_id, index)}"
    if not images.image_exists(ref):
        log(f"building {ref}: TensorFlow CPU and the EfficientDet imports from PyPI (several minutes, once)")
        with tempfile.TemporaryDirectory(prefix="labbox-tf-cpu-") as tmp:
            build = Path(tmp) / "context"
            shutil.copytree(context, build)
            shutil.copyfile(ca_bundle(), build / "build-ca.crt")
            images.build_logged(ref, build, {"BASE": base, "PIP_INDEX_URL": index})
    docker("tag", ref, f"effdet-lab/{NAME}:latest")
    return ref


def ensure_served(base: str = images.BASE_IMAGE) -> str:
    """Build (once) and serve the stand-in as effdetlab/tensorflow:2.15.1-cpu."""
    ref = ensure_built(base)
    services.serve_image(ref, HUB_NAME)
    return ref
