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
    """existing, with the owned keys and the given runtimes merged in at any depth.

    A JSON object we set is merged key by key into the host's object (log-opts,
    features, runtimes and each runtime's own keys); a list or scalar we set
    replaces the host's value. Every key we do not set survives untouched.
    The inputs are not mutated. daemon_config_type_conflicts must be empty first.
    """
    merged = _deep_merge(existing, owned)
    if runtimes:
        merged = _deep_merge(merged, {"runtimes": runtimes})
    return merged


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = _plain_copy(value)
    return merged


def _plain_copy(value: Any) -> Any:
    """A copy of a JSON-like value as plain dicts and lists.

    copy.deepcopy of Ansible's lazily templated containers costs about a second
    per call on a real inventory; JSON only has objects, arrays and scalars.
    """
    if isinstance(value, dict):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(item) for item in value]
    return value


def daemon_config_type_conflicts(existing: dict[str, Any], owned: dict[str, Any],
                                 runtimes: dict[str, Any]) -> list[str]:
    """Where the host's file holds something other than a JSON object at a place we
    merge an object into (null, a list, a string): one readable line each.

    Merging there would either crash or silently drop the host's value, so the
    role refuses before any write.
    """
    update = dict(owned)
    if runtimes:
        update = _deep_merge(update, {"runtimes": runtimes})
    return _conflicts(existing, update, "")


def _conflicts(base: dict[str, Any], update: dict[str, Any], where: str) -> list[str]:
    found = []
    for key, value in update.items():
        if not isinstance(value, dict) or key not in base:
            continue
        path = f"{where}.{key}" if where else key
        if isinstance(base[key], dict):
            found += _conflicts(base[key], value, path)
        else:
            found.append(f"{path} is {_json_type(base[key])} in the host's file, where a JSON object belongs "
                         f"(it would be merged with {json.dumps(value, sort_keys=True)})")
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"a string ({json.dumps(value)})"
    if isinstance(value, list):
        return "a list"
    return "an object"


# The JSON types dockerd expects for the keys it is most often given; a value of
# another type makes dockerd refuse to start ("json: cannot unmarshal ...").
# "str-map": an object of strings; "runtime-map": name -> {"path": str, ...}.
KEY_TYPES: dict[str, str] = {
    "registry-mirrors": "str-list", "insecure-registries": "str-list", "labels": "str-list",
    "dns": "str-list", "dns-opts": "str-list", "dns-search": "str-list", "exec-opts": "str-list",
    "storage-opts": "str-list", "hosts": "str-list", "authorization-plugins": "str-list",
    "allow-nondistributable-artifacts": "str-list",
    "log-opts": "str-map", "features": "bool-map", "runtimes": "runtime-map",
    "default-ulimits": "object", "builder": "object",
    "live-restore": "bool", "debug": "bool", "experimental": "bool", "iptables": "bool", "ip6tables": "bool",
    "ipv6": "bool", "ip-forward": "bool", "ip-masq": "bool", "icc": "bool", "userland-proxy": "bool",
    "selinux-enabled": "bool", "no-new-privileges": "bool", "init": "bool", "tls": "bool", "tlsverify": "bool",
    "log-driver": "str", "log-level": "str", "storage-driver": "str", "data-root": "str", "exec-root": "str",
    "default-runtime": "str", "default-shm-size": "str", "cgroup-parent": "str", "bip": "str",
    "fixed-cidr": "str", "fixed-cidr-v6": "str", "bridge": "str", "userns-remap": "str", "pidfile": "str",
    "group": "str", "metrics-addr": "str", "containerd": "str", "seccomp-profile": "str", "ip": "str",
    "mtu": "int", "max-concurrent-downloads": "int", "max-concurrent-uploads": "int",
    "max-download-attempts": "int", "shutdown-timeout": "int",
}


def daemon_config_type_errors(config: dict[str, Any], variable: str) -> list[dict[str, Any]]:
    """For each key of config (what the inventory sets) whose value is not of the JSON
    type dockerd expects, a broken input rule: {"var": "<variable>['key']", "value": ...,
    "rule": ..., "ok": False}. Unknown keys pass."""
    errors = []
    for key, value in config.items():
        rule = KEY_TYPES.get(key)
        if rule and not _has_type(value, rule):
            errors.append({"var": f"{variable}[{key!r}]", "value": value, "rule": f"dockerd expects {_RULE_TEXT[rule]}",
                           "ok": False})
    return errors


_RULE_TEXT = {
    "str-list": "a list of strings", "str-map": "an object whose values are strings",
    "bool-map": "an object whose values are booleans", "object": "an object", "bool": "true or false",
    "str": "a string", "int": "a whole number",
    "runtime-map": "an object of runtimes, each an object with a string \"path\"",
}


def _has_type(value: Any, rule: str) -> bool:
    if rule == "str-list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if rule == "str-map":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if rule == "bool-map":
        return isinstance(value, dict) and all(isinstance(v, bool) for v in value.values())
    if rule == "runtime-map":
        return isinstance(value, dict) and all(
            isinstance(r, dict) and isinstance(r.get("path"), str) and r["path"] for r in value.values())
    if rule == "object":
        return isinstance(value, dict)
    if rule == "bool":
        return isinstance(value, bool)
    if rule == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


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


def daemon_config_unapplied(info: dict[str, Any], desired: dict[str, Any], keys: list[str]) -> list[str]:
    """Of the changed keys, those whose effect `docker info` can show and does not.

    info is `docker info --format '{{json .}}'`. Keys docker info does not
    expose (default-shm-size, log-opts, ...) are not listed: that dockerd
    restarted on the file, or reloaded it without an error, is their proof.
    """
    registry = info.get("RegistryConfig") or {}
    checks = {
        "registry-mirrors": lambda want: sorted(_slash(m) for m in want) == sorted(registry.get("Mirrors") or []),
        "insecure-registries": lambda want: all(_insecure(registry, r) for r in want),
        "live-restore": lambda want: info.get("LiveRestoreEnabled") == want,
        "debug": lambda want: info.get("Debug") == want,
        "labels": lambda want: set(want) <= set(info.get("Labels") or []),
        "default-runtime": lambda want: info.get("DefaultRuntime") == want,
        "runtimes": lambda want: all(name in (info.get("Runtimes") or {}) for name in want),
        "log-driver": lambda want: info.get("LoggingDriver") == want,
        "storage-driver": lambda want: info.get("Driver") == want,
        "data-root": lambda want: info.get("DockerRootDir") == want,
    }
    return sorted(k for k in keys if k in checks and k in desired and not checks[k](desired[k]))


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _insecure(registry: dict[str, Any], name: str) -> bool:
    if "/" in name:
        return name in (registry.get("InsecureRegistryCIDRs") or [])
    index = (registry.get("IndexConfigs") or {}).get(name)
    return bool(index) and index.get("Secure") is False


_MISSING = object()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "docker_daemon_parse": daemon_config_parse,
            "docker_daemon_merge": daemon_config_merge,
            "docker_daemon_type_conflicts": daemon_config_type_conflicts,
            "docker_daemon_type_errors": daemon_config_type_errors,
            "docker_daemon_unapplied": daemon_config_unapplied,
            "docker_daemon_changed_keys": daemon_config_changed_keys,
            "docker_daemon_needs_restart": daemon_config_needs_restart,
            "docker_daemon_flag_conflicts": daemon_config_flag_conflicts,
        }
