"""effdet_safe_put: copy a controller file or folder into the lab user's data folder on the host.

Runs on the controller. It lists what `src` holds (folders, and files with their
sha1; links on the controller are skipped, as the filetree lookup did), asks the
effdet_safe_fs module on the host which files differ (one call: it makes the
missing folders and fixes owners and modes on the way, never through a link),
then sends only those: small files inline in a few module calls, large ones
through the connection's temporary folder. A link anywhere on the host side of
the path is refused by the module, with a message that names it.

Arguments: src (a controller file or folder), base (the trusted host folder),
path (the destination below it), owner, group, mode (files), dir_mode,
exclude (a regex on paths relative to src), base_alias (for messages).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

MODULE = "effdet_safe_fs"
INLINE_FILE_MAX = 4 * 1024 * 1024     # larger files go through the connection's tmp folder
INLINE_BATCH_MAX = 8 * 1024 * 1024    # bytes of file content per module call
CHUNK = 1024 * 1024


def sha1_of(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(src: str, exclude: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """The folders and files of src (a file: itself, at path ''), relative and sorted; links and
    anything matching exclude are left out."""
    skip = re.compile(exclude) if exclude else None
    if os.path.isfile(src):
        return [], [{"path": "", "local": src, "size": os.path.getsize(src), "sha1": sha1_of(src)}]
    dirs: list[str] = []
    files: list[dict[str, Any]] = []
    for root, subdirs, names in os.walk(src, followlinks=False):
        rel_root = os.path.relpath(root, src)
        rel_root = "" if rel_root == "." else rel_root
        keep = []
        for name in sorted(subdirs):
            rel = os.path.join(rel_root, name)
            if os.path.islink(os.path.join(root, name)) or (skip and skip.search(rel)):
                continue
            keep.append(name)
            dirs.append(rel)
        subdirs[:] = keep
        for name in sorted(names):
            local = os.path.join(root, name)
            rel = os.path.join(rel_root, name)
            if os.path.islink(local) or not os.path.isfile(local) or (skip and skip.search(rel)):
                continue
            files.append({"path": rel, "local": local, "size": os.path.getsize(local), "sha1": sha1_of(local)})
    return dirs, files


def batches(files: list[dict[str, Any]], limit: int = INLINE_BATCH_MAX) -> list[list[dict[str, Any]]]:
    """Small files grouped so that one module call carries at most `limit` bytes (one file alone may)."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for item in files:
        if out and size + item["size"] <= limit:
            out[-1].append(item)
            size += item["size"]
        else:
            out.append([item])
            size = item["size"]
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("src", "base", "path", "base_alias", "owner", "group", "mode", "dir_mode", "exclude"))

    def _module(self, args: dict[str, Any], files: list[dict[str, Any]], task_vars: dict[str, Any]) -> dict[str, Any]:
        res = self._execute_module(module_name=MODULE, module_args={**args, "files": files}, task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail(res.get("msg", "effdet_safe_fs failed"), result=res)
        return res

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        a = self._task.args
        for key in ("src", "base", "path"):
            if not a.get(key):
                raise AnsibleActionFail(f"effdet_safe_put needs {key}")
        src = str(a["src"])
        if not os.path.isabs(src):
            src = self._find_needle("files", src)
        if not os.path.exists(src):
            raise AnsibleActionFail(f"{src} does not exist on the controller")
        single = os.path.isfile(src)
        dirs, files = manifest(src, a.get("exclude"))
        path = str(a["path"])
        if single:
            # One file: its folder is the tree's root, the file its only entry.
            path, _, name = path.rpartition("/")
            files[0]["path"] = name
        common = {"op": "tree", "base": a["base"], "path": path, "base_alias": a.get("base_alias"),
                  "owner": a.get("owner"), "group": a.get("group"), "mode": a.get("mode"),
                  "dir_mode": a.get("dir_mode"), "dirs": dirs, "root_attrs": not single}
        by_path = {f["path"]: f for f in files}
        made_tmp = False
        try:
            first = self._module(common, [{"path": f["path"], "sha1": f["sha1"]} for f in files], task_vars)
            written = list(first.get("written") or [])
            need = [by_path[p] for p in first.get("need") or []]
            if need and not self._task.check_mode:
                small = [f for f in need if f["size"] <= INLINE_FILE_MAX]
                large = [f for f in need if f["size"] > INLINE_FILE_MAX]
                rest = {**common, "dirs": []}
                for group in batches(small):
                    payload = []
                    for f in group:
                        with open(f["local"], "rb") as handle:
                            payload.append({"path": f["path"], "sha1": f["sha1"],
                                            "content_b64": base64.b64encode(handle.read()).decode("ascii")})
                    written += self._module(rest, payload, task_vars).get("written") or []
                for f in large:
                    if not self._connection._shell.tmpdir:
                        self._make_tmp_path()
                        made_tmp = True
                    remote = self._connection._shell.join_path(self._connection._shell.tmpdir, "effdet-put-src")
                    self._transfer_file(f["local"], remote)
                    self._fixup_perms2((self._connection._shell.tmpdir, remote))
                    written += self._module(rest, [{"path": f["path"], "sha1": f["sha1"], "src": remote}],
                                            task_vars).get("written") or []
            elif need:
                written += [p["path"] for p in need]
        finally:
            if made_tmp:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        created = first.get("created") or []
        fixed = first.get("attributes_changed") or []
        changed = bool(written or created or fixed)
        result.update(changed=changed, written=written, created=created, attributes_changed=fixed,
                      files=len(files), dest=a["path"])
        if changed:
            result["msg"] = (f"{len(written)} of {len(files)} files written, {len(created)} folders created, "
                             f"{len(fixed)} owners or modes fixed")
        if self._task.diff and changed:
            result["diff"] = {"prepared": "\n".join([f"+ {p}" for p in created + written]
                                                    + [f"~ {p} (owner or mode)" for p in fixed])}
        return result
