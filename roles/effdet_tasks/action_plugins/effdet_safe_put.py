"""effdet_safe_put: copy a controller file or folder into the lab user's data folder on the host.

Runs on the controller. It lists what `src` holds (folders, and files with their
sha1; links on the controller are skipped, as the filetree lookup did). The sha1s
are cached on the controller by path, size and mtime, so an unchanged tree of
10,000 files costs a stat each there, not a read.

A folder's manifest has a digest. The host keeps a stamp beside the copied tree
(.<name>.effdet-put.json: the digest and the mtime of every folder of the tree
after the last complete copy); when the stamp names the same digest and no
folder changed since, the first module call answers at once: a no-change run is
one comparison, not a read per file. A file edited in place on the host, which
changes no folder's mtime, is therefore not noticed until the controller's tree
changes.

Otherwise the effdet_safe_fs module on the host says which files differ (one
call: it makes the missing folders and fixes owners and modes on the way, never
through a link; where the tree's folder is not on the host yet, there is nothing
to compare and this call is skipped), and only those are sent: a few small ones
inline, more than a few as one bundle through the connection's file transfer.
A bundle is the files' contents one after the other in the manifest's order,
with no names in it, in parts of 64 MiB (part_size). The module gives each file
of a part the next `size` bytes, writes it through the same link-refusing
writer, checks its sha1 and removes the part once read; it flushes the
destination's filesystem once, after the last part. Where the connection is
mitogen's over ssh, the parts go through Ansible's own ssh connection to the
same host (sftp or scp: several times faster than mitogen's file service for
large files), and the work is pipelined: a thread writes the parts, another
sends each as soon as it is written, and the module unpacks each part as soon
as it is on the host, while the next ones are written and sent. The result's
`transfer` says which way it went, and `timings` the seconds of each phase.
Files over 4 MiB go one by one through the connection's temporary folder. A
link anywhere on the host side of the path is refused by the module, with a
message that names it.

On a first put (the tree's folder is not on the host), a file whose sha1 the
controller's cache does not know yet is not read twice: it is hashed while it
is copied into its part, and the module checks that sha1 as it writes the file.

Arguments: src (a controller file or folder), base (the trusted host folder),
path (the destination below it), owner, group, mode (files), dir_mode,
exclude (a regex on paths relative to src), base_alias (for messages),
part_size (bytes per part of a bundle, default 64 MiB).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

MODULE = "effdet_safe_fs"
INLINE_FILE_MAX = 4 * 1024 * 1024     # larger files go through the connection's tmp folder
INLINE_BATCH_MAX = 8 * 1024 * 1024    # bytes of file content per module call
BUNDLE_MIN_FILES = 16                # more files than this to send: one bundle instead of inline batches
BUNDLE_PART_MAX = 64 * 1024 * 1024    # bytes per part of a bundle: the next part is written while one is sent
CHUNK = 1024 * 1024
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "effdet-lab")


def chunks_of(path: str, buffer: bytearray) -> Iterator[memoryview]:
    """path's content, read into one buffer: read(CHUNK) allocates CHUNK bytes per call, which for
    20,000 small images costs five times the hashing itself. Each view is valid until the next."""
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                return
            yield view[:count]


def sha1_of(path: str) -> str:
    digest = hashlib.sha1()
    for chunk in chunks_of(path, bytearray(CHUNK)):
        digest.update(chunk)
    return digest.hexdigest()


class Sha1Cache:
    """sha1s of the controller's files by (path, size, mtime_ns), kept between runs in CACHE_DIR (one
    file per source folder, replaced atomically); a file whose size or mtime changed is read again."""

    def __init__(self, src: str) -> None:
        key = hashlib.sha1(os.path.realpath(src).encode("utf-8")).hexdigest()[:16]
        self.path = os.path.join(CACHE_DIR, f"sha1-{key}.json")
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.old: dict[str, list] = json.load(handle)
        except (OSError, ValueError):
            self.old = {}
        self.new: dict[str, list] = {}

    def known(self, rel: str, st: os.stat_result) -> str | None:
        """The sha1 recorded for this size and mtime, or None."""
        entry = self.old.get(rel)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            self.new[rel] = entry
            return str(entry[2])
        return None

    def record(self, files: list[dict[str, Any]]) -> None:
        """The sha1s the files of a manifest have now (those still without one are left out)."""
        for f in files:
            if f["sha1"] is not None:
                self.new[f["path"]] = [f["size"], f["mtime_ns"], f["sha1"]]

    def save(self) -> None:
        if self.new == self.old:
            return
        try:
            os.makedirs(CACHE_DIR, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".sha1-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.new, handle)
            os.replace(tmp, self.path)
        except OSError:
            pass   # a cache only: the next run reads the files again


def manifest(src: str, cache: Sha1Cache | None, exclude: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """The folders and files of src (a file: itself, at path ''), relative and sorted; links and
    anything matching exclude are left out. A file of a folder whose sha1 the cache does not know
    gets sha1 None (and its mtime_ns), for the caller to fill (hash_missing, or while it is sent)."""
    skip = re.compile(exclude) if exclude else None
    if os.path.isfile(src) or cache is None:
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
            st = os.stat(local)
            files.append({"path": rel, "local": local, "size": st.st_size, "sha1": cache.known(rel, st),
                          "mtime_ns": st.st_mtime_ns})
    return dirs, files


def hash_missing(files: list[dict[str, Any]]) -> None:
    """Fill the sha1s the manifest left out."""
    for f in files:
        if f["sha1"] is None:
            f["sha1"] = sha1_of(f["local"])


def manifest_digest(dirs: list[str], files: list[dict[str, Any]], attrs: dict[str, Any]) -> str:
    """One value for everything a put of this tree decides on: folders, files, their content, owner
    and modes."""
    body = json.dumps({"dirs": dirs, "files": [[f["path"], f["size"], f["sha1"]] for f in files],
                       "attrs": attrs}, sort_keys=True)
    return hashlib.sha1(body.encode("utf-8")).hexdigest()


def bundle_parts(files: list[dict[str, Any]], limit: int = BUNDLE_PART_MAX) -> list[list[dict[str, Any]]]:
    """The files of a bundle, in order, cut into parts of at most `limit` bytes (one file alone may)."""
    return batches(files, limit)


def write_part(files: list[dict[str, Any]], path: str) -> None:
    """One part of a bundle: the files' contents one after the other, no names (the module takes each
    file's size in the manifest's order and checks its sha1). A file whose size is no longer the
    manifest's is refused: it changed since it was listed. A file without a sha1 yet (a first put
    from the manifest) is hashed as it is copied: it is read once."""
    buffer = bytearray(CHUNK)
    with open(path, "wb") as out:
        for f in files:
            digest = hashlib.sha1() if f["sha1"] is None else None
            copied = 0
            for chunk in chunks_of(f["local"], buffer):
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
                copied += len(chunk)
            if copied != f["size"]:
                raise AnsibleActionFail(f"{f['local']} changed on the controller while it was sent "
                                        f"({copied} bytes, {f['size']} when listed)")
            if digest is not None:
                f["sha1"] = digest.hexdigest()


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
    _VALID_ARGS = frozenset(("src", "base", "path", "base_alias", "owner", "group", "mode", "dir_mode", "exclude",
                             "part_size"))

    def _module(self, args: dict[str, Any], files: list[dict[str, Any]], task_vars: dict[str, Any]) -> dict[str, Any]:
        res = self._execute_module(module_name=MODULE, module_args={**args, "files": files}, task_vars=task_vars)
        if res.get("failed"):
            raise AnsibleActionFail(res.get("msg", "effdet_safe_fs failed"), result=res)
        return res

    def _send(self, local: str, name: str, task_vars: dict[str, Any] | None = None) -> str:
        """A controller file to the host, into a temporary folder (made on first use) the module
        reads it from. With task_vars, where the connection is mitogen's over ssh, through Ansible's
        own ssh connection to the same host (_bulk_ssh); otherwise through the task's connection."""
        bulk = self._bulk_ssh(task_vars) if task_vars is not None else None
        if bulk is not None:
            return self._send_over_ssh(bulk, local, name)
        if not self._connection._shell.tmpdir:
            self._make_tmp_path()
            self._made_tmp = True
        remote = self._connection._shell.join_path(self._connection._shell.tmpdir, name)
        self._transfer_file(local, remote)
        self._fixup_perms2((self._connection._shell.tmpdir, remote))
        self._transfer = "connection"
        return remote

    def _bulk_ssh(self, task_vars: dict[str, Any]) -> Any:
        """Ansible's ssh connection (sftp or scp, as configured) to the host the task's connection
        reaches, where that connection is mitogen's over ssh: mitogen's file service moves a large
        file in 128 KiB messages through Python (about 30 MB/s on a 2-core controller), sftp at the
        speed of ssh. Same host, port, user, key and ssh arguments (the task's connection
        variables). None for any other connection, and where the task becomes a user other than
        root (who could not read the login user's private folder); made once per task."""
        if self._bulk is not None:
            return self._bulk
        if getattr(self._connection, "transport", None) != "ssh" or not hasattr(self._connection, "vanilla_class"):
            return None
        if self._play_context.become and (self._play_context.become_user or "root") != "root":
            return None
        conn = self._shared_loader_obj.connection_loader.get("ansible.builtin.ssh", self._play_context, new_stdin=None)
        if conn is None:
            return None
        task_keys = self._task.dump_attrs()
        task_keys["timeout"] = self._play_context.timeout
        task_keys.pop("retries", None)
        if self._play_context.password:
            task_keys["password"] = self._play_context.password
        conn.set_options(task_keys=task_keys, var_options=conn._resolve_option_variables(task_vars, self._templar))
        self._bulk = conn
        return conn

    def _send_over_ssh(self, bulk: Any, local: str, name: str) -> str:
        """Into a private folder of the login user (umask 077, mktemp -d under ~/.ansible/tmp, as
        Ansible's own temporary folders), which the module reads as root or as that user."""
        if self._bulk_folder is None:
            rc, out, err = bulk.exec_command(
                "umask 077 && mkdir -p ~/.ansible/tmp && mktemp -d ~/.ansible/tmp/effdet-put.XXXXXXXXXX")
            folder = out.decode("utf-8", "replace").strip().splitlines()[-1:] if rc == 0 else []
            if not folder or not folder[0].startswith("/"):
                raise AnsibleActionFail("could not make a private folder for the transfer on the host: "
                                        + err.decode("utf-8", "replace").strip())
            self._bulk_folder = folder[0]
        remote = f"{self._bulk_folder}/{name}"
        bulk.put_file(local, remote)
        self._transfer = "ssh"
        return remote

    def _close_bulk(self) -> None:
        if self._bulk is None:
            return
        try:
            if self._bulk_folder is not None:
                self._bulk.exec_command(f"rm -rf -- {shlex.quote(self._bulk_folder)}")
        finally:
            self._bulk.close()
            self._bulk = None

    def _lap(self, phase: str) -> None:
        """Seconds since the last lap, added to the result's timings under phase."""
        now = time.monotonic()
        self._timings[phase] = round(self._timings.get(phase, 0.0) + now - self._clock, 3)
        self._clock = now

    def _put_bundle(self, common: dict[str, Any], files: list[dict[str, Any]],
                    task_vars: dict[str, Any]) -> dict[str, Any]:
        """Many files in one transfer: a bundle of their contents in parts written here (hashing the
        files that have no sha1 yet), each part unpacked by the module (its files, in the manifest's
        order; it removes the part once read) as soon as it is on the host; the filesystem is
        flushed once, after the last part. The merged results of the module's calls.

        Where the parts go over Ansible's own ssh connection (_bulk_ssh), a writer thread writes
        them and a sender thread sends each as soon as it is written, so that the module unpacks
        one part while the next ones are written and sent. Otherwise (the task's connection carries
        both) each part is written, sent and unpacked in turn."""
        parts = bundle_parts(files, self._part_size)
        bulk = self._bulk_ssh(task_vars)
        local = tempfile.mkdtemp(prefix="effdet-put-")

        def write(index: int) -> str:
            path = os.path.join(local, f"part-{index:04d}")
            write_part(parts[index], path)
            return path

        def send(index: int, path: str) -> str:
            try:
                return self._send(path, f"effdet-put-{index:04d}.part", task_vars)
            finally:
                os.unlink(path)

        merged: dict[str, Any] = {"written": [], "created": [], "attributes_changed": []}
        rest = common
        try:
            with ThreadPoolExecutor(max_workers=1) as writer, ThreadPoolExecutor(max_workers=1) as sender:
                sent: list[Future] = []
                if bulk is not None:
                    sent = [sender.submit(lambda i, w: send(i, w.result()), i, writer.submit(write, i))
                            for i in range(len(parts))]
                try:
                    for index, part in enumerate(parts):
                        remote = sent[index].result() if sent else send(index, write(index))
                        self._lap("send_wait" if sent else "send")
                        payload = [{"path": f["path"], "sha1": f["sha1"], "size": f["size"], "in_bundle": True}
                                   for f in part]
                        got = self._module({**rest, "bundle": [remote], "flush": index == len(parts) - 1},
                                           payload, task_vars)
                        self._lap("unpack")
                        for key in merged:
                            merged[key].extend(got.get(key) or [])
                        for key, timing in (("unpack_s", "unpack_files"), ("flush_s", "unpack_flush")):
                            if key in got:
                                self._timings[timing] = round(self._timings.get(timing, 0.0) + got[key], 3)
                        rest = {**common, "dirs": []}    # the folders came with the first part
                except BaseException:
                    for future in sent:
                        future.cancel()
                    raise
        finally:
            shutil.rmtree(local, ignore_errors=True)
        self._timings["parts"] = len(parts)
        return merged

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
        part_size = a.get("part_size", BUNDLE_PART_MAX)
        if isinstance(part_size, bool) or not str(part_size).isdigit() or not 0 < int(part_size) <= 2**31:
            raise AnsibleActionFail(f"part_size = {part_size!r} breaks the rule: bytes per part of a bundle, "
                                    f"an integer from 1 to {2**31}")
        self._part_size = int(part_size)
        self._timings: dict[str, float] = {}
        self._clock = time.monotonic()
        cache = None if single else Sha1Cache(src)
        # A file the sha1 cache does not know is hashed only once it is needed (below).
        dirs, files = manifest(src, cache, a.get("exclude"))
        self._lap("manifest")
        path = str(a["path"])
        if single:
            # One file: its folder is the tree's root, the file its only entry.
            path, _, name = path.rpartition("/")
            files[0]["path"] = name
        common = {"op": "tree", "base": a["base"], "path": path, "base_alias": a.get("base_alias"),
                  "owner": a.get("owner"), "group": a.get("group"), "mode": a.get("mode"),
                  "dir_mode": a.get("dir_mode"), "dirs": dirs, "root_attrs": not single}
        attrs = {k: a.get(k) for k in ("owner", "group", "mode", "dir_mode")}
        unknown = [f for f in files if f["sha1"] is None]
        if not single and not unknown:
            common["digest"] = manifest_digest(dirs, files, attrs)
        by_path = {f["path"]: f for f in files}
        self._made_tmp = False
        self._bulk: Any = None
        self._bulk_folder: str | None = None
        self._transfer = "none"    # or how files went through the tmp folder: "connection", "ssh"
        try:
            check = {} if single else self._module({**common, "stamp_check": True}, [], task_vars)
            if unknown and (check.get("root") != "missing" or self._task.check_mode):
                # Files to compare with the host's: their sha1s now, then the stamp asked again.
                hash_missing(unknown)
                unknown = []
                common["digest"] = manifest_digest(dirs, files, attrs)
                check = self._module({**common, "stamp_check": True}, [], task_vars)
            if check.get("stamp") == "holds":
                result.update(changed=False, written=[], created=[], attributes_changed=[], files=len(files),
                              dest=a["path"], stamp="holds", transfer="none")
                return result
            self._lap("stamp_check")
            # The folders go with the first call that writes (made before its files), not again.
            rest = common
            if check.get("root") == "missing" and files and not self._task.check_mode:
                # A first put: there is nothing on the host to compare with, every file is sent.
                first: dict[str, Any] = {}
                need = files
            else:
                first = self._module(common, [{"path": f["path"], "sha1": f["sha1"]} for f in files], task_vars)
                self._lap("compare")
                need = [by_path[p] for p in first.get("need") or []]
                rest = {**common, "dirs": []}
            written = list(first.get("written") or [])
            created = list(first.get("created") or [])

            def absorb(got: dict[str, Any]) -> None:
                nonlocal rest
                written.extend(got.get("written") or [])
                created.extend(got.get("created") or [])
                rest = {**common, "dirs": []}

            if need and not self._task.check_mode:
                small = [f for f in need if f["size"] <= INLINE_FILE_MAX]
                large = [f for f in need if f["size"] > INLINE_FILE_MAX]
                if len(small) > BUNDLE_MIN_FILES:
                    absorb(self._put_bundle(rest, small, task_vars))    # hashes the bundle's files as it writes it
                    small = []
                hash_missing(small + large)
                for group in batches(small):
                    payload = []
                    for f in group:
                        with open(f["local"], "rb") as handle:
                            payload.append({"path": f["path"], "sha1": f["sha1"],
                                            "content_b64": base64.b64encode(handle.read()).decode("ascii")})
                    absorb(self._module(rest, payload, task_vars))
                for f in large:
                    absorb(self._module(rest, [{"path": f["path"], "sha1": f["sha1"],
                                                "src": self._send(f["local"], "effdet-put-src", task_vars)}], task_vars))
            elif need:
                written += [p["path"] for p in need]
            if not single and not self._task.check_mode:
                hash_missing(files)      # none left: every file was sent or compared
                common["digest"] = manifest_digest(dirs, files, attrs)
                self._module({**common, "dirs": dirs, "stamp_write": True}, [], task_vars)
                self._lap("stamp_write")
        finally:
            if cache is not None:    # every sha1 known by now, those hashed while the bundle was written too
                cache.record(files)
                cache.save()
            if self._made_tmp:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            self._close_bulk()
        fixed = first.get("attributes_changed") or []
        changed = bool(written or created or fixed)
        result.update(changed=changed, written=written, created=created, attributes_changed=fixed,
                      files=len(files), dest=a["path"], transfer=self._transfer, timings=self._timings)
        if changed:
            result["msg"] = (f"{len(written)} of {len(files)} files written, {len(created)} folders created, "
                             f"{len(fixed)} owners or modes fixed")
        if self._task.diff and changed:
            result["diff"] = {"prepared": "\n".join([f"+ {p}" for p in created + written]
                                                    + [f"~ {p} (owner or mode)" for p in fixed])}
        return result
