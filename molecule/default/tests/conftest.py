"""Shared fixtures of the molecule verify step (testinfra)."""
from __future__ import annotations

import json

import pytest

# The admin's hand-made keys that converge does not set: they stay as they were.
ORIGINAL_FOREIGN_KEYS = {
    "log-driver": "json-file",
    "features": {"buildkit": True},
    "labels": ["lab=vision", "rack=3"],
}


@pytest.fixture()
def daemon_json(host) -> dict:
    return json.loads(host.file("/etc/docker/daemon.json").content_string)


@pytest.fixture()
def docker_info(host) -> dict:
    out = host.check_output("docker info --format '{{json .}}'")
    return json.loads(out)
