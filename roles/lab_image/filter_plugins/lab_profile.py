"""Pure logic of the lab_image role: pick the image profile, check the lab user.

Free of Ansible imports beyond the filter registration, so that
tests/unit/test_lab_profile.py exercises it directly with recorded
`nvidia-smi` outputs (tests/fixtures/nvidia-smi/).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

# nvidia-smi exit status 6: "No devices were found" (driver loaded, no GPU).
NVSMI_NO_DEVICES = 6
_CC = re.compile(r"^\s*(\d+)\.(\d+)\s*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _cc_tuple(text: Any) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    m = _CC.match(str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_compute_caps(stdout: str) -> list[str]:
    """Compute capabilities from `nvidia-smi --query-gpu=compute_cap --format=csv[,noheader]`.

    One value per GPU, in index order. A header line (`compute_cap`) is
    skipped; when other fields were queried too, the compute_cap column is
    taken (with a header) or the first column (without). Raises ValueError on
    anything else.
    """
    lines = [ln.strip() for ln in (stdout or "").splitlines() if ln.strip()]
    column = 0
    if lines and not _CC.match(lines[0].split(",")[0]):
        header = [h.strip() for h in lines[0].split(",")]
        if "compute_cap" not in header:
            raise ValueError(f"no compute_cap column in {lines[0]!r}")
        column = header.index("compute_cap")
        lines = lines[1:]
    caps = []
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        value = cells[column] if column < len(cells) else ""
        if not _cc_tuple(value):
            raise ValueError(f"not a compute capability: {value!r} (line {line!r})")
        caps.append(value)
    return caps


def _nvsmi_state(result: Optional[Mapping[str, Any]]) -> tuple[str, list[str], str]:
    """('absent' | 'none' | 'gpus' | 'error', caps, detail) for a registered command result."""
    if not result or result.get("skipped"):
        return "absent", [], "nvidia-smi was not run"
    rc = result.get("rc")
    out = (result.get("stdout") or "") + "\n" + (result.get("stderr") or "")
    msg = str(result.get("msg") or "")
    # A missing executable: the command module fails before running anything
    # ("Error executing command", errno 2 in the exception on ansible-core 2.19).
    missing = "No such file or directory" in str(result) or (
        msg.startswith("Error executing command") and not out.strip())
    if rc in (None, 127) or missing:
        return "absent", [], "no nvidia-smi on the host"
    if rc == NVSMI_NO_DEVICES or "No devices were found" in out:
        return "none", [], "nvidia-smi finds no GPU"
    if rc != 0:
        detail = " ".join(out.split())[:300] or msg
        return "error", [], f"nvidia-smi failed (rc {rc}): {detail}"
    try:
        caps = parse_compute_caps(result.get("stdout") or "")
    except ValueError as exc:
        return "error", [], f"cannot read the compute capability ({exc}); is the driver older than 510?"
    return ("gpus" if caps else "none"), caps, f"{len(caps)} GPU(s), compute capability {', '.join(caps) or '-'}"


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


def lab_image_choose_profile(
    nvsmi: Optional[Mapping[str, Any]],
    profiles: Mapping[str, Mapping[str, Any]],
    requested: Optional[str] = None,
    force: bool = False,
    auto_order: Sequence[str] = ("tf2.1-gpu", "tf2.15-gpu"),
    cpu_profile: str = "cpu",
) -> dict[str, Any]:
    """{'ok', 'profile', 'gpu_count', 'compute_caps', 'reason', 'error'}.

    - requested (the inventory's lab_image_profile) always wins, except that a
      GPU profile is refused on a GPU outside its compute capability range
      (TF 2.1 has no kernels for Ampere and newer) unless force is true;
    - otherwise: no nvidia-smi, or no GPU, picks cpu_profile; with GPUs, the
      first profile of auto_order whose range covers every GPU.
    """
    state, caps, detail = _nvsmi_state(nvsmi)
    result = {"ok": True, "profile": None, "gpu_count": len(caps), "compute_caps": caps, "reason": "", "error": ""}

    def fail(message: str) -> dict[str, Any]:
        result.update(ok=False, error=message)
        return result

    if requested:
        if requested not in profiles:
            return fail(f"lab_image_profile {requested!r} is not a profile; known: {', '.join(sorted(profiles))}")
        profile = profiles[requested]
        result["profile"] = requested
        if state == "error":
            result["reason"] = f"{requested} set by the inventory; GPU check inconclusive: {detail}"
            return result
        if profile.get("gpu") and caps and not _fits(profile, caps):
            bad = [c for c in caps if not _fits(profile, [c])]
            if not force:
                return fail(
                    f"profile {requested} ({profile.get('description', profile.get('base'))}) supports "
                    f"{_range(profile)}, but this host has GPU(s) of compute capability {', '.join(bad)}: "
                    f"its TensorFlow ships no kernels for them and would fall back to the CPU or fail. "
                    f"Use a profile that fits ({', '.join(n for n in auto_order if n in profiles and _fits(profiles[n], caps)) or 'none'}), "
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
    for name in auto_order:
        if name in profiles and _fits(profiles[name], caps):
            result.update(profile=name, reason=f"{name}: fits {detail}")
            return result
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
        }
