"""Pure logic of the lab_image role: pick the image profile, check the lab user.

Free of Ansible imports beyond the filter registration, so that
tests/unit/test_lab_profile.py and tests/unit/test_driver_minimum.py exercise
it directly with recorded `nvidia-smi` outputs (tests/fixtures/nvidia-smi/).
The `nvidia-smi` output itself (compute capability, driver version) is parsed
once, in plugins/module_utils/nvidia_smi.py, which the verifier
(tests/infra/nvidia_smi.py) uses too.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

try:
    from ansible_collections.effdet_lab.lab.plugins.module_utils import nvidia_smi
except ImportError:  # the plain repository (roles_path=roles): the same file, by path
    import os
    import runpy

    _by_path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "../../../plugins/module_utils/by_path.py")
    nvidia_smi = runpy.run_path(_by_path)["load"]("nvidia_smi")

# The parsers, under the names this module has always had (tests and filters use them).
NVSMI_NO_DEVICES = nvidia_smi.NO_DEVICES_RC  # nvidia-smi's exit status for "No devices were found"
_cc_tuple = nvidia_smi.compute_cap_tuple
driver_tuple = nvidia_smi.driver_tuple
driver_at_least = nvidia_smi.driver_at_least
parse_query_column = nvidia_smi.parse_query_column
parse_compute_caps = nvidia_smi.parse_compute_caps
parse_driver_versions = nvidia_smi.parse_driver_versions

_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _nvsmi_run(result: Optional[Mapping[str, Any]]) -> tuple[str, str]:
    """('absent' | 'none' | 'error' | 'ok', detail) for a registered nvidia-smi command result."""
    if not result or result.get("skipped"):
        return "absent", "nvidia-smi was not run"
    rc = result.get("rc")
    out = (result.get("stdout") or "") + "\n" + (result.get("stderr") or "")
    msg = str(result.get("msg") or "")
    # A missing executable: the command module fails before running anything
    # ("Error executing command", errno 2 in the exception on ansible-core 2.19).
    missing = "No such file or directory" in str(result) or (
        msg.startswith("Error executing command") and not out.strip())
    if rc in (None, 127) or missing:
        return "absent", "no nvidia-smi on the host"
    if rc == NVSMI_NO_DEVICES or nvidia_smi.NO_DEVICES_MESSAGE in out:
        return "none", "nvidia-smi finds no GPU"
    if rc != 0:
        detail = " ".join(out.split())[:300] or msg
        return "error", f"nvidia-smi failed (rc {rc}): {detail}"
    return "ok", ""


def _nvsmi_state(result: Optional[Mapping[str, Any]]) -> tuple[str, list[str], str]:
    """('absent' | 'none' | 'gpus' | 'error', caps, detail) for a registered command result."""
    state, detail = _nvsmi_run(result)
    if state != "ok":
        return state, [], detail
    try:
        caps = parse_compute_caps((result or {}).get("stdout") or "")
    except ValueError as exc:
        return "error", [], f"cannot read the compute capability ({exc}); is the driver older than 510?"
    return ("gpus" if caps else "none"), caps, f"{len(caps)} GPU(s), compute capability {', '.join(caps) or '-'}"


def host_driver_version(result: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The host's NVIDIA driver version from a registered
    `nvidia-smi --query-gpu=driver_version --format=csv,noheader` result, or
    None where it cannot be read (no nvidia-smi, no GPU, an error, odd output).

    Every GPU reports the same driver; should they differ, the oldest counts."""
    state, _ = _nvsmi_run(result)
    if state != "ok":
        return None
    try:
        versions = parse_driver_versions((result or {}).get("stdout") or "")
    except ValueError:
        return None
    return min(versions, key=_padded) if versions else None


def _padded(version: str) -> tuple[int, ...]:
    t = driver_tuple(version) or ()
    return t + (0,) * (4 - len(t))


def _fits(profile: Mapping[str, Any], caps: Sequence[str]) -> bool:
    low = _cc_tuple(profile.get("compute_cap_min"))
    below = _cc_tuple(profile.get("compute_cap_below"))
    for cap in caps:
        c = _cc_tuple(cap)
        if low and c < low:
            return False
        if below and c >= below:
            return False
    return True


def _range(profile: Mapping[str, Any]) -> str:
    low, below = profile.get("compute_cap_min"), profile.get("compute_cap_below")
    parts = [f"{low} <= compute capability" if low else "compute capability"]
    if below:
        parts.append(f"< {below}")
    return " ".join(parts)


def _driver_min(name: str, profile: Mapping[str, Any]) -> Optional[str]:
    """The profile's driver_min as text (None: the profile states none). Raises ValueError."""
    value = profile.get("driver_min")
    if value is None or value == "":
        return None
    if driver_tuple(value) is None:
        hint = (f"; write it as a string ('{value}'): YAML reads a number such as 450.80 as 450.8"
                if isinstance(value, float) else "")
        raise ValueError(f"lab_image_profiles[{name}].driver_min = {value!r} is not an NVIDIA driver "
                         f"version (numbers separated by dots, such as 535.54.03){hint}")
    return str(value)


def _fits_driver(name: str, profile: Mapping[str, Any], driver: Optional[str]) -> bool:
    low = _driver_min(name, profile)
    return driver is None or low is None or driver_at_least(driver, low)


def _driver_refusal(head: str, name: str, profiles: Mapping[str, Mapping[str, Any]], driver: str,
                    host: str, caps: Sequence[str], auto_order: Sequence[str]) -> str:
    """The refusal of a GPU profile whose CUDA needs a newer driver, with the profiles that fit."""
    order = [n for n in auto_order if n in profiles] + sorted(n for n in profiles if n not in auto_order)
    fitting = [n for n in order if n != name and profiles[n].get("gpu") and _fits_driver(n, profiles[n], driver)
               and (not caps or _fits(profiles[n], caps))]

    def label(n: str) -> str:
        low = _driver_min(n, profiles[n])
        parts = [f">= {low}" if low else "no driver minimum stated"]
        if not caps and (profiles[n].get("compute_cap_min") or profiles[n].get("compute_cap_below")):
            parts.append(_range(profiles[n]))  # the GPUs are unknown here: say which it supports
        return f"{n} ({'; '.join(parts)})"

    gpus = f" and GPUs of compute capability {', '.join(sorted(set(caps)))}" if caps else ""
    if fitting:
        suggestion = (f"The profile{'s' if len(fitting) > 1 else ''} that fit{'' if len(fitting) > 1 else 's'} "
                      f"this driver{gpus}: {', '.join(label(n) for n in fitting)}.")
    else:
        suggestion = f"No GPU profile fits this driver{gpus}."
    return (f"{head} needs NVIDIA driver >= {_driver_min(name, profiles[name])}; {host} has {driver}. "
            f"{suggestion} Install a newer driver first.")


def lab_image_choose_profile(
    nvsmi: Optional[Mapping[str, Any]],
    profiles: Mapping[str, Mapping[str, Any]],
    requested: Optional[str] = None,
    force: bool = False,
    auto_order: Sequence[str] = ("tf2.1-gpu", "tf2.15-gpu"),
    cpu_profile: str = "cpu",
    driver: Optional[Mapping[str, Any]] = None,
    host: str = "this host",
) -> dict[str, Any]:
    """{'ok', 'profile', 'gpu_count', 'compute_caps', 'driver_version', 'reason', 'error'}.

    - requested (the inventory's lab_image_profile) always wins, except that a
      GPU profile is refused on a GPU outside its compute capability range
      (TF 2.1 has no kernels for Ampere and newer) unless force is true;
    - otherwise: no nvidia-smi, or no GPU, picks cpu_profile; with GPUs, the
      first profile of auto_order whose range covers every GPU and whose
      driver_min the host's driver meets;
    - driver is the registered result of `nvidia-smi --query-gpu=driver_version
      --format=csv,noheader`: a GPU profile whose driver_min (the oldest
      driver its CUDA runs on) is newer than the host's driver is refused,
      requested or picked, force or not, naming both versions and the
      profiles that would fit. Where the driver cannot be read (no
      nvidia-smi, no GPU) nothing is refused on its account.
    """
    state, caps, detail = _nvsmi_state(nvsmi)
    version = host_driver_version(driver)
    result = {"ok": True, "profile": None, "gpu_count": len(caps), "compute_caps": caps,
              "driver_version": version, "reason": "", "error": ""}

    def fail(message: str) -> dict[str, Any]:
        result.update(ok=False, error=message)
        return result

    try:
        for name, profile in profiles.items():
            _driver_min(name, profile)
    except ValueError as exc:
        return fail(str(exc))
    if state == "error" and version:
        detail = f"{detail} (NVIDIA driver {version})"

    if requested:
        if requested not in profiles:
            return fail(f"lab_image_profile {requested!r} is not a profile; known: {', '.join(sorted(profiles))}")
        profile = profiles[requested]
        result["profile"] = requested
        if profile.get("gpu") and version and not _fits_driver(requested, profile, version):
            return fail(_driver_refusal(f"lab_image_profile {requested}", requested, profiles, version, host,
                                        caps, auto_order))
        if state == "error":
            result["reason"] = f"{requested} set by the inventory; GPU check inconclusive: {detail}"
            return result
        if profile.get("gpu") and caps and not _fits(profile, caps):
            bad = [c for c in caps if not _fits(profile, [c])]
            if not force:
                fitting = [n for n in auto_order if n in profiles and _fits(profiles[n], caps)]
                return fail(
                    f"profile {requested} ({profile.get('description', profile.get('base'))}) supports "
                    f"{_range(profile)}, but this host has GPU(s) of compute capability {', '.join(bad)}: "
                    f"its TensorFlow ships no kernels for them and would fall back to the CPU or fail. "
                    f"Use a profile that fits ({', '.join(fitting) or 'none'}), "
                    f"or set lab_image_profile_force: true to build it anyway."
                )
            result["reason"] = f"{requested} forced by the inventory despite compute capability {', '.join(bad)}"
            return result
        result["reason"] = f"{requested} set by the inventory ({detail})"
        return result

    if state == "error":
        return fail(f"cannot pick an image profile: {detail}. Set lab_image_profile in the inventory.")
    if state in ("absent", "none"):
        result.update(profile=cpu_profile, reason=f"{cpu_profile}: {detail}")
        return result
    by_caps = [n for n in auto_order if n in profiles and _fits(profiles[n], caps)]
    for name in by_caps:
        if _fits_driver(name, profiles[name], version):
            result.update(profile=name, reason=f"{name}: fits {detail}" + (f", driver {version}" if version else ""))
            return result
    if by_caps:
        assert version  # only a known driver rules a profile out
        return fail(_driver_refusal(f"lab_image_profile is unset; the profile that fits these GPUs, {by_caps[0]},",
                                    by_caps[0], profiles, version, host, caps, auto_order))
    return fail(f"no GPU profile of {list(auto_order)} supports compute capability {', '.join(caps)}; "
                f"set lab_image_profile (and lab_image_profile_force) in the inventory.")


def lab_image_id_conflicts(listing: str, user: str, uid: int, gid: int) -> list[str]:
    """Why the lab user cannot be created in the base image, from its /etc/passwd + /etc/group.

    listing is the two files concatenated: passwd lines have 7 fields, group
    lines 4. Empty list: no conflict. The user or group already existing with
    exactly the wanted ids is no conflict.
    """
    problems = []
    for line in (listing or "").splitlines():
        fields = line.strip().split(":")
        if len(fields) == 7:
            name, _, puid, pgid = fields[:4]
            if puid == str(uid) and name != user:
                problems.append(f"uid {uid} is already taken in the base image by user '{name}'")
            elif name == user and puid != str(uid):
                problems.append(f"user '{user}' already exists in the base image with uid {puid}, not {uid}")
        elif len(fields) == 4:
            name, _, ggid = fields[:3]
            if ggid == str(gid) and name != user:
                problems.append(f"gid {gid} is already taken in the base image by group '{name}'")
            elif name == user and ggid != str(gid):
                problems.append(f"group '{user}' already exists in the base image with gid {ggid}, not {gid}")
    return problems


def lab_image_valid_user(name: Any) -> bool:
    """A portable user name: lower case letter or _, then [a-z0-9_-], at most 32.

    Matched in full: `re.match` with `$` would let a trailing newline through
    (into the sudoers and sshd drop-ins)."""
    return isinstance(name, str) and bool(_USER.fullmatch(name))


def lab_image_context_hash(files: Mapping[str, str]) -> str:
    """12 hex digits of sha256 over the rendered context (file names and contents, sorted)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + str(files[name]).encode() + b"\0")
    return digest.hexdigest()[:12]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "lab_image_choose_profile": lab_image_choose_profile,
            "lab_image_id_conflicts": lab_image_id_conflicts,
            "lab_image_valid_user": lab_image_valid_user,
            "lab_image_context_hash": lab_image_context_hash,
            "lab_image_compute_caps": parse_compute_caps,
            "lab_image_driver_version": host_driver_version,
        }
