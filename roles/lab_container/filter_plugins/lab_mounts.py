"""Mount flags from /proc/<pid>/mountinfo, for lab_container_volumes_nosuid.

lab_container_mount_flags(mountinfo, path, exact=False)
    The per-mount options (rw, nosuid, nodev, noexec, relatime, ...) of the
    mount that holds `path` (exact: the mount whose mount point is `path`),
    the top one where mounts are stacked; [] when there is none.

lab_container_nosuid_missing(folders, host_mountinfo)
    The host folders whose mount lacks nosuid or nodev.

lab_container_nosuid_mismatch(bind_mounts, host_mountinfo, container_mountinfo)
    The container paths of the bind volumes ({src, dest}) whose nosuid/nodev
    in the running container differ from the host folder's: the container
    must be restarted to take the host's (a bind mount copies its source's
    flags when the container starts, and only then).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

FLAGS = ("nosuid", "nodev")
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[dict[str, Any]]:
    """One dict per line: id, parent, mount_point, options (list)."""
    mounts = []
    for line in str(text or "").splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        try:
            mount_id, parent = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        mounts.append({"id": mount_id, "parent": parent, "mount_point": _unescape(fields[4]),
                       "options": fields[5].split(",")})
    return mounts


def _holds(mount_point: str, path: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def lab_container_mount_flags(mountinfo: str, path: str, exact: bool = False) -> list[str]:
    mounts = parse_mountinfo(mountinfo)
    path = "/" + str(path).strip("/") if str(path).strip("/") else "/"
    candidates = [m for m in mounts if (m["mount_point"] == path if exact else _holds(m["mount_point"], path))]
    if not candidates:
        return []
    longest = max(len(m["mount_point"]) for m in candidates)
    stack = [m for m in candidates if len(m["mount_point"]) == longest]
    # The top of a stack is the mount no other mount of the same point sits on.
    parents = {m["parent"] for m in stack}
    top = [m for m in stack if m["id"] not in parents] or stack
    return list(top[-1]["options"])


def lab_container_nosuid_missing(folders: Iterable[str], host_mountinfo: str) -> list[str]:
    return [f for f in folders or [] if not set(FLAGS) <= set(lab_container_mount_flags(host_mountinfo, f))]


def lab_container_nosuid_mismatch(bind_mounts: Iterable[dict[str, str]], host_mountinfo: str,
                                  container_mountinfo: str) -> list[str]:
    out = []
    for vol in bind_mounts or []:
        host = set(lab_container_mount_flags(host_mountinfo, vol["src"])) & set(FLAGS)
        inside = lab_container_mount_flags(container_mountinfo, vol["dest"], exact=True)
        if inside and set(inside) & set(FLAGS) != host:
            out.append(vol["dest"])
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"lab_container_mount_flags": lab_container_mount_flags,
                "lab_container_nosuid_missing": lab_container_nosuid_missing,
                "lab_container_nosuid_mismatch": lab_container_nosuid_mismatch}
