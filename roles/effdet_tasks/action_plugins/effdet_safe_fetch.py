"""effdet_safe_fetch: copy a result file from the lab user's data folder to the controller.

Runs on the controller; reads through the effdet_safe_fs module on the host, so
the file is opened without following links, relative to the trusted base:

- a link (or a FIFO, a device node, a file with several hard links) as the file
  itself is skipped with a warning that names it (the task is ok, with
  not_fetched: true): nothing is copied, and what the controller already holds
  stays as it was;
- a link among its folders is refused: the task fails, naming the link;
- the sha1 of the controller's copy goes along, so an unchanged file costs one
  module call and no transfer; a larger file comes in chunks.

Check mode reports whether the controller's copy would change, and writes
nothing. Arguments: base, path (below base, or absolute inside it), dest (on
the controller), base_alias (for messages), fail_on_missing (default true).
"""
from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

MODULE = "effdet_safe_fs"
CHUNK_BYTES = 8 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024   # results are reports, logs and images, never this large


def local_sha1(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def write_local(dest: str, data: bytes) -> None:
    """dest replaced atomically (a temporary file beside it, then rename)."""
    folder = os.path.dirname(dest) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".effdet-fetch-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("base", "path", "dest", "base_alias", "fail_on_missing"))

    def _read(self, args: dict[str, Any], task_vars: dict[str, Any], **more: Any) -> dict[str, Any]:
        res = self._execute_module(module_name=MODULE, module_args={
            "op": "read", "base": args["base"], "path": args["path"], "base_alias": args.get("base_alias"),
            "unsafe": "skip", "missing_ok": True, "max_bytes": CHUNK_BYTES, **more}, task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail(res.get("msg", "effdet_safe_fs read failed"), result=res)
        return res

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        a = self._task.args
        for key in ("base", "path", "dest"):
            if not a.get(key):
                raise AnsibleActionFail(f"effdet_safe_fetch needs {key}")
        dest = os.path.expanduser(str(a["dest"]))
        have = local_sha1(dest)
        first = self._read(a, task_vars, offset=0, length=CHUNK_BYTES, unless_sha1=have or "")
        result.update(src=first.get("path"), dest=dest)
        if not first.get("exists"):
            if self._task.check_mode or not boolean(a.get("fail_on_missing", True), strict=False):
                return {**result, "changed": False, "skipped": True, "msg": f"{first.get('path')} does not exist"}
            raise AnsibleActionFail(f"{first.get('path')} does not exist on {task_vars.get('inventory_hostname')}")
        if first.get("skipped"):
            # Not a "skipped" result: Ansible does not show a skipped result's warnings.
            warning = f"{task_vars.get('inventory_hostname')}: not fetched to the controller: {first.get('msg')}"
            display.warning(warning)
            return {**result, "changed": False, "not_fetched": True, "msg": warning}
        if first.get("same"):
            return {**result, "changed": False, "checksum": have}
        if self._task.check_mode:
            return {**result, "changed": True, "msg": "the controller's copy would change"}
        size = int(first.get("size") or 0)
        if size > MAX_BYTES:
            warning = (f"{task_vars.get('inventory_hostname')}: not fetched to the controller: {first.get('path')} "
                       f"is {size} bytes (more than {MAX_BYTES})")
            display.warning(warning)
            return {**result, "changed": False, "not_fetched": True, "msg": warning}
        parts = [base64.b64decode(first.get("content") or "")]
        offset = len(parts[0])
        eof = first.get("eof", True)
        while not eof and offset < MAX_BYTES:
            more = self._read(a, task_vars, offset=offset, length=CHUNK_BYTES)
            if more.get("skipped") or not more.get("exists"):
                raise AnsibleActionFail(f"{first.get('path')} changed while it was fetched: {more.get('msg', 'gone')}")
            chunk = base64.b64decode(more.get("content") or "")
            parts.append(chunk)
            offset += len(chunk)
            eof = more.get("eof", True) or not chunk
        data = b"".join(parts)
        sha1 = hashlib.sha1(data).hexdigest()
        if sha1 == have:
            return {**result, "changed": False, "checksum": sha1}
        write_local(dest, data)
        return {**result, "changed": True, "checksum": sha1, "size": len(data)}
