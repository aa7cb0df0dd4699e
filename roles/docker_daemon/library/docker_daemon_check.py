#!/usr/bin/python
"""Ask dockerd itself whether it accepts a candidate daemon.json, before it is written."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_check
short_description: Ask dockerd whether it accepts a candidate daemon.json
description:
  - Where dockerd has C(--validate) (Docker 23 and newer), runs C(dockerd --validate --config-file) on the candidate.
  - Where it has not (Docker 20.10, Debian 12's docker.io), starts a second, throw-away dockerd on a copy of the
    candidate, with its own data root (inside the real one, so the storage driver meets the same filesystem), its own
    exec root and socket under /run, its own containerd namespace, no bridge, no iptables and no metrics listener.
    The candidate is accepted when that dockerd answers on its socket, rejected with dockerd's own words when it exits.
    It runs in network and mount namespaces of its own (unshare), so it cannot touch the host's docker0 or mounts.
    The throw-away dockerd is stopped and its folders removed either way; the real dockerd and daemon.json are never touched.
  - Runs in check mode too: it changes nothing on the host.
options:
  config:
    description: The candidate daemon.json, as an object.
    type: dict
    required: true
  data_root:
    description: The real dockerd's data root (the throw-away one is made inside it).
    type: path
    default: /var/lib/docker
  timeout:
    description: Seconds the throw-away dockerd gets to answer.
    type: int
    default: 60
author: effdet-lab
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# Keys the throw-away dockerd must not share with the real one, or that would make
# it touch the host's network: dropped from its copy, ours set instead.
DROPPED_KEYS = ("hosts", "pidfile", "data-root", "exec-root", "bip", "fixed-cidr", "fixed-cidr-v6",
                "default-gateway", "default-gateway-v6", "icc", "metrics-addr", "containerd-namespace",
                "containerd-plugins-namespace", "live-restore")
CHECK_NAMESPACE = "effdet-lab-dockerd-check"
# The throw-away dockerd gets network and mount namespaces of its own: with no
# bridge it would otherwise delete the host's live docker0 (dockerd removes the
# default bridge interface when "bridge" is "none"), and whatever it mounts goes
# away with it.
ISOLATE = ("unshare", "--net", "--mount", "--propagation", "private")


def check_copy(config: dict[str, Any], data_root: str, exec_root: str, sock: str) -> dict[str, Any]:
    """The candidate as the throw-away dockerd runs it: every setting kept except
    those that would clash with the real dockerd or change the host's network."""
    copy = {k: v for k, v in config.items() if k not in DROPPED_KEYS}
    copy.update({
        "hosts": [f"unix://{sock}"],
        "pidfile": os.path.join(exec_root, "docker.pid"),
        "data-root": data_root,
        "exec-root": exec_root,
        "containerd-namespace": CHECK_NAMESPACE,
        "containerd-plugins-namespace": CHECK_NAMESPACE + "-plugins",
        "bridge": "none",
        "iptables": False,
        "ip6tables": False,
        "ip-forward": False,
        "ip-masq": False,
    })
    if "ip6tables" not in config and not _knows_ip6tables():
        copy.pop("ip6tables")
    return copy


def _knows_ip6tables() -> bool:
    return "--ip6tables" in _dockerd_help()


_HELP: list[str] = []


def _dockerd_help() -> str:
    if not _HELP:
        proc = subprocess.run(["dockerd", "--help"], capture_output=True, text=True, check=False)
        _HELP.append(proc.stdout + proc.stderr)
    return _HELP[0]


def dockerd_words(log: str, limit: int = 6) -> str:
    """The lines of a dockerd log that say why it stopped (errors and fatals first)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    bad = [line for line in lines if any(mark in line for mark in
                                          ("level=error", "level=fatal", "failed to start daemon", "Error", "error"))]
    return " | ".join((bad or lines)[-limit:])


def validate_flag(config: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="effdet-lab-validate-") as tmp:
        path = os.path.join(tmp, "daemon.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        proc = subprocess.run(["dockerd", "--validate", "--config-file", path],
                              capture_output=True, text=True, check=False)
    words = (proc.stderr + proc.stdout).strip()
    return {"accepted": proc.returncode == 0, "method": "dockerd --validate", "dockerd_said": words}


def _answers(sock: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(sock)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in conn.recv(256)
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _unmount_below(folder: str) -> None:
    """Lazy-unmount whatever the throw-away dockerd left mounted below its folders."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted((p for p in points if p.startswith(folder + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def throwaway_dockerd(config: dict[str, Any], data_root: str, timeout: int) -> dict[str, Any]:
    os.makedirs(data_root, mode=0o710, exist_ok=True)
    root = tempfile.mkdtemp(prefix=".effdet-lab-check-", dir=data_root)
    run = tempfile.mkdtemp(prefix="effdet-lab-check-", dir="/run")
    sock = os.path.join(run, "d.sock")
    config_path = os.path.join(run, "daemon.json")
    log_path = os.path.join(run, "dockerd.log")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(check_copy(config, os.path.join(root, "data"), os.path.join(run, "exec"), sock), handle)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([*ISOLATE, "dockerd", "--config-file", config_path], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        accepted = False
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                break
            if _answers(sock):
                accepted = True
                break
            time.sleep(0.25)
        answered_s = round(time.monotonic() - started, 2)
        timed_out = not accepted and proc.poll() is None
    finally:
        _stop(proc)
        for folder in (root, run):
            _unmount_below(folder)
        with open(log_path, encoding="utf-8", errors="replace") as log:
            text = log.read()
        for folder in (root, run):
            shutil.rmtree(folder, ignore_errors=True)
    words = "" if accepted else dockerd_words(text)
    if timed_out:
        words = f"a dockerd on the candidate did not answer within {timeout} s. {words}"
    return {"accepted": accepted, "method": "throw-away dockerd", "dockerd_said": words, "seconds": answered_s}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "dict", "required": True},
            "data_root": {"type": "path", "default": "/var/lib/docker"},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    if shutil.which("dockerd") is None:
        module.exit_json(changed=False, accepted=True, method="none", dockerd_said="",
                         msg="dockerd is not installed yet: nothing can check the candidate")
    config = module.params["config"]
    data_root = config.get("data-root") or module.params["data_root"]
    if "--validate" in _dockerd_help():
        result = validate_flag(config)
    elif shutil.which(ISOLATE[0]) is None:
        module.fail_json(msg="dockerd has no --validate and unshare (util-linux) is missing: a throw-away dockerd "
                             "cannot be started apart from the host's network, so the new daemon.json cannot be "
                             "checked. Install util-linux. Nothing was changed.")
    else:
        result = throwaway_dockerd(config, data_root, module.params["timeout"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
