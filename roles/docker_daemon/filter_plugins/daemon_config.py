"""Pure logic of the docker_daemon role: parse, merge and diff daemon.json.

Kept free of Ansible imports beyond the filter registration so that
tests/unit/test_daemon_config.py can exercise it directly.
"""
from __future__ import annotations

import json
import re
from typing import Any

# Keys that dockerd re-reads on SIGHUP ("Configuration reload behavior" in the
# dockerd reference). A change to anything else needs a restart.
RELOADABLE_KEYS = frozenset({
    "debug", "labels", "live-restore", "max-concurrent-downloads", "max-concurrent-uploads",
    "max-download-attempts", "default-runtime", "runtimes", "authorization-plugins",
    "insecure-registries", "registry-mirrors", "shutdown-timeout", "features", "builder",
})

# daemon.json key -> the dockerd command-line flag that sets the same thing,
# where the two differ; every other key's flag is "--<key>".
FLAG_FOR_KEY = {
    "registry-mirrors": "--registry-mirror",
    "insecure-registries": "--insecure-registry",
    "runtimes": "--add-runtime",
    "labels": "--label",
    "hosts": "--host",
    "dns-opts": "--dns-opt",
    "dns-search": "--dns-search",
    "storage-opts": "--storage-opt",
    "log-opts": "--log-opt",
    "exec-opts": "--exec-opt",
    "default-ulimits": "--default-ulimit",
    "authorization-plugins": "--authorization-plugin",
    "default-address-pools": "--default-address-pool",
    "allow-nondistributable-artifacts": "--allow-nondistributable-artifacts",
}
SHORT_FLAGS = {"hosts": "-H", "debug": "-D", "group": "-G"}


def daemon_config_parse(text: str | None) -> dict[str, Any]:
    """{'ok', 'config', 'error'} for the text of an existing daemon.json (None: no file)."""
    if text is None or not text.strip():
        return {"ok": True, "config": {}, "error": ""}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"ok": False, "config": {}, "error": f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
    if not isinstance(config, dict):
        return {"ok": False, "config": {}, "error": f"the top level is a {type(config).__name__}, not a JSON object"}
    return {"ok": True, "config": config, "error": ""}


def daemon_config_merge(existing: dict[str, Any], owned: dict[str, Any], runtimes: dict[str, Any]) -> dict[str, Any]:
    """existing, with the owned keys set and the given runtimes added or updated.

    Every key not in owned survives untouched, and so does every runtime not named.
    """
    merged = dict(existing)
    merged.update(owned)
    if runtimes:
        merged["runtimes"] = {**existing.get("runtimes", {}), **runtimes}
    return merged


def daemon_config_changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Sorted top-level keys whose value differs between old and new (added and removed too)."""
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


def daemon_config_needs_restart(changed_keys: list[str]) -> bool:
    """True when some changed key is not one dockerd reloads on SIGHUP."""
    return any(k not in RELOADABLE_KEYS for k in changed_keys)


def daemon_config_flag_conflicts(exec_start: str, keys: list[str]) -> list[str]:
    """The keys in `keys` that dockerd's effective ExecStart also sets as a flag.

    dockerd refuses to start when a setting comes from both a flag and the file,
    so such a key must not be written.
    """
    argv = _exec_start_argv(exec_start)
    conflicts = []
    for key in keys:
        flags = {FLAG_FOR_KEY.get(key, f"--{key}")}
        if key in SHORT_FLAGS:
            flags.add(SHORT_FLAGS[key])
        if any(arg == f or arg.startswith(f + "=") for arg in argv for f in flags):
            conflicts.append(key)
    return conflicts


def _exec_start_argv(exec_start: str) -> list[str]:
    """argv from `systemctl show -p ExecStart --value` output (or a plain command line)."""
    found = re.findall(r"argv\[\]=([^;]*)", exec_start)
    line = " ".join(found) if found else exec_start
    return line.split()


_MISSING = object()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "docker_daemon_parse": daemon_config_parse,
            "docker_daemon_merge": daemon_config_merge,
            "docker_daemon_changed_keys": daemon_config_changed_keys,
            "docker_daemon_needs_restart": daemon_config_needs_restart,
            "docker_daemon_flag_conflicts": daemon_config_flag_conflicts,
        }
