#!/usr/bin/python
"""effdet_safe_fs: root's file work inside the lab user's data folder, never through a link.

The lab user (uid 1001 in the lab container) owns <effdet_tasks_host_dir>/effdet-lab
through the bind mount, and with nopasswd sudo container root can write anywhere
in the data folder. Root on the host must therefore never resolve a path in
there the usual way: a planted symlink would make it chown, write or read a host
file of the lab user's choosing. Every path here is taken relative to a trusted
base folder (the bind mount's host side) and walked one component at a time with
openat-style directory fds and O_NOFOLLOW: a symlink anywhere below the base, a
'..', or a path outside the base is refused, regular files are opened without
following links (O_PATH, then reopened through /proc/self/fd, so a device node or
FIFO is never opened), and a file with more than one hard link is never read.
New files are written to a temporary name in the same folder and renamed into
place, owner and mode set through the file descriptor.

Runs on the managed host's Python (3.8 on Ubuntu 20.04): no newer syntax.
"""
from __future__ import annotations

import base64
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import stat
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

DOCUMENTATION = r"""
module: effdet_safe_fs
short_description: mkdir, write, stat, read, find, tree copy and sync below a trusted base folder, refusing symlinks
description:
  - Every path is walked from O(base) component by component with O_NOFOLLOW; a symlink, a '..' or a path
    outside O(base) is refused with a message that names it. Files are read without following links and only
    when they are regular files with one hard link.
options:
  op:
    description: mkdir, write, stat, read, find, tree (copy a manifest of files in) or sync (mirror a host folder in).
    type: str
    required: true
    choices: [mkdir, write, stat, read, find, tree, sync]
  base:
    description: The trusted folder (absolute); it is opened as given, everything below it without following links.
    type: str
    required: true
  base_alias:
    description: Where O(base) is seen inside the lab container, for messages.
    type: str
  path:
    description: The path to work on, relative to O(base) or absolute and lexically below it.
    type: str
    required: true
  owner:
    description: uid of what is created or written.
    type: int
  group:
    description: gid of what is created or written.
    type: int
  mode:
    description: Mode of a folder (mkdir) or of files (write, tree).
    type: raw
  dir_mode:
    description: Mode of the folders that tree and sync create.
    type: raw
  content:
    description: Text to write (write).
    type: str
  src:
    description: A trusted file (write) or folder (sync) on the host to copy from.
    type: str
  get_checksum:
    description: Return the sha1 of a regular file (stat) or of each file found (find).
    type: bool
    default: false
  missing_ok:
    description: A missing file is no failure (read, stat always reports exists).
    type: bool
    default: false
  unsafe:
    description: What read does with a link or non-regular file at the end of the path, fail or skip (returns skipped).
    type: str
    choices: [fail, skip]
    default: fail
  offset:
    description: Where read starts.
    type: int
    default: 0
  length:
    description: How much read returns at most; unset is the whole file (up to O(max_bytes)).
    type: int
  max_bytes:
    description: The most read returns in one call.
    type: int
    default: 16777216
  unless_sha1:
    description: read returns no content when the file's sha1 is this (same=true).
    type: str
  patterns:
    description: Shell patterns of file names (find).
    type: list
    elements: str
    default: []
  recurse:
    description: Look into sub-folders (find).
    type: bool
    default: false
  hidden:
    description: Include names that start with a dot (find).
    type: bool
    default: false
  dirs:
    description: Folders (relative to O(path)) that tree makes sure of.
    type: list
    elements: str
    default: []
  files:
    description: Files (relative to O(path)) for tree, each {path, sha1} and optionally content_b64, src or in_bundle (with size).
    type: list
    elements: dict
    default: []
  root_attrs:
    description: tree also sets owner and dir_mode on O(path) itself (never on O(base)).
    type: bool
    default: true
  digest:
    description: The digest of the caller's whole manifest (tree), kept in the stamp beside O(path).
    type: str
  stamp_check:
    description: tree only answers whether the stamp beside O(path) holds for O(digest) and the folders are unchanged.
    type: bool
    default: false
  stamp_write:
    description: tree only records O(digest) and the folders' mtimes in the stamp beside O(path), after a complete copy.
    type: bool
    default: false
  bundle:
    description:
      - The parts, in order, of the caller's bundle on the host (in its private temporary folder) the files marked
        in_bundle: their contents one after the other, in the order of O(files), each of its size; removed once read.
    type: list
    elements: str
  flush:
    description:
      - With O(bundle), flush the filesystem of O(base) once its files are written (they are written without an
        fsync each). A caller that unpacks a bundle part by part flushes after the last part only.
    type: bool
    default: true
author: effdet-lab
"""

EXAMPLES = r"""
- name: Create a run folder owned by the lab user
  effdet_safe_fs:
    op: mkdir
    base: /srv/effdet-lab/data
    path: effdet-lab/runs/default
    owner: 1001
    group: 1001
    mode: "0755"
"""

RETURN = r"""
content:
  description: base64 of what read returned.
  returned: read
  type: str
files:
  description: What find found, each with path (on the host), rel (below base), size, mode and checksum.
  returned: find
  type: list
"""

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_PATH = getattr(os, "O_PATH", 0)
O_NOCTTY = getattr(os, "O_NOCTTY", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | O_CLOEXEC
CHUNK = 1024 * 1024
MAX_DEPTH = 64
OPS = ("mkdir", "write", "stat", "read", "find", "tree", "sync")


class Refused(Exception):
    """A path that root on the host will not use: a link, a '..', outside the base, a wrong file type."""


class FsError(Exception):
    """Anything else that stops the operation (a missing parent, a folder where a file should be)."""


# ---------------------------------------------------------------------------
# Paths


def parse_mode(value: Any, default: int) -> int:
    """A mode given as an int (420) or an octal string ("0644", "644", "0o644")."""
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip()
        text = text[2:] if text.lower().startswith("0o") else text
        if not text or any(c not in "01234567" for c in text):
            raise FsError(f"mode {value!r} is not an octal mode such as 0644")
        mode = int(text, 8)
    if mode < 0 or mode > 0o7777:
        raise FsError(f"mode {value!r} is out of range")
    return mode


def split_path(base: str, path: str) -> List[str]:
    """The components of path below base. path is relative to base, or absolute and lexically
    inside it; '.', '..', empty components and NUL are refused, whatever they would resolve to."""
    if not base.startswith("/") or "\x00" in base:
        raise Refused(f"the base folder {base!r} is not an absolute path")
    if "\x00" in path:
        raise Refused(f"{path!r} holds a NUL character")
    root = base.rstrip("/") or "/"
    if path.startswith("/"):
        prefix = root if root.endswith("/") else root + "/"
        if path == root:
            return []
        if not path.startswith(prefix):
            raise Refused(f"{path} is outside the folder {root}")
        path = path[len(prefix):]
    if path in ("", "."):
        return []
    parts = path.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]     # one trailing slash
    for part in parts:
        if part in ("", ".", ".."):
            raise Refused(f"{path!r} has an empty, '.' or '..' component (below {root})")
    return parts


def kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return "a special file"


class Base:
    """The trusted base folder, opened once; every path is walked from its fd."""

    def __init__(self, base: str, alias: Optional[str] = None) -> None:
        self.path = base.rstrip("/") or "/"
        self.alias = alias.rstrip("/") if alias else None
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
        except OSError as exc:
            raise FsError(f"cannot open the base folder {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "Base":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def shown(self, parts: List[str]) -> str:
        """The host path, and where the lab user sees it."""
        rel = "/".join(parts)
        host = f"{self.path}/{rel}" if rel else self.path
        if self.alias:
            inside = f"{self.alias}/{rel}" if rel else self.alias
            return f"{host} (in the lab container: {inside})"
        return host

    def refuse(self, parts: List[str], dir_fd: int, st: os.stat_result, what: str = "") -> Refused:
        """The refusal of parts (whose last component, in dir_fd, is st)."""
        kind = kind_of(st.st_mode)
        detail = ""
        if stat.S_ISLNK(st.st_mode):
            try:
                detail = f" to {os.readlink(parts[-1], dir_fd=dir_fd)!r}"
            except OSError:
                detail = ""
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            kind = f"a file with {st.st_nlink} hard links"
        why = what or ("root on the host never follows a link in the lab user's folders"
                       if stat.S_ISLNK(st.st_mode) else "root on the host only uses plain files and folders there")
        return Refused(f"refusing {self.shown(parts)}: it is {kind}{detail}; {why}. Remove it "
                       f"(as the lab user, inside the container) and run again.")

    def lstat(self, dir_fd: int, name: str) -> Optional[os.stat_result]:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def open_child_dir(self, dir_fd: int, parts: List[str]) -> Optional[int]:
        """The folder parts[-1] in dir_fd, opened without following a link; None when missing."""
        name = parts[-1]
        try:
            return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                st = self.lstat(dir_fd, name)
                if st is None:
                    return None
                if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                    raise self.refuse(parts, dir_fd, st) if stat.S_ISLNK(st.st_mode) else FsError(
                        f"{self.shown(parts)} is {kind_of(st.st_mode)}, not a folder") from exc
            raise

    def open_dir(self, parts: List[str], create: Optional[Tuple[int, Optional[int], Optional[int]]] = None,
                 check_mode: bool = False, created: Optional[List[str]] = None) -> Optional[int]:
        """The folder base/parts as an fd (the caller closes it), never through a link.

        Missing folders are None, or with create=(mode, uid, gid) made with that owner and mode
        (in check mode only noted in created, and None is returned)."""
        return open_under(self, self.fd, [], parts, create, check_mode, created)

    def make_dir(self, dir_fd: int, parts: List[str], mode: int, uid: Optional[int], gid: Optional[int]) -> int:
        """mkdir parts[-1] in dir_fd, then open it (never through a link) and set owner and mode on the fd."""
        try:
            os.mkdir(parts[-1], 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        child = self.open_child_dir(dir_fd, parts)
        if child is None:
            raise FsError(f"{self.shown(parts)} vanished while it was being created")
        try:
            set_attrs(child, mode, uid, gid)
        except BaseException:
            os.close(child)
            raise
        return child

    def open_regular(self, dir_fd: int, parts: List[str], st: Optional[os.stat_result] = None) -> Tuple[int, os.stat_result]:
        """parts[-1] in dir_fd opened for reading: a regular file with one link, never a link, a FIFO or
        a device (O_PATH first, so nothing but a regular file is ever really opened)."""
        name = parts[-1]
        if st is None:
            st = self.lstat(dir_fd, name)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "missing", self.shown(parts))
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise self.refuse(parts, dir_fd, st)
        if O_PATH and os.path.isdir("/proc/self/fd"):
            pfd = os.open(name, O_PATH | os.O_NOFOLLOW | O_CLOEXEC, dir_fd=dir_fd)
            try:
                pst = os.fstat(pfd)
                if not stat.S_ISREG(pst.st_mode) or pst.st_nlink != 1 or (pst.st_dev, pst.st_ino) != (st.st_dev, st.st_ino):
                    raise self.refuse(parts, dir_fd, pst, "it changed while it was opened")
                fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | O_CLOEXEC)
            finally:
                os.close(pfd)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, dir_fd=dir_fd)
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or fst.st_nlink != 1 or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise self.refuse(parts, dir_fd, fst, "it changed while it was opened")
        return fd, fst


def set_attrs(fd: int, mode: int, uid: Optional[int], gid: Optional[int]) -> bool:
    """Owner, then mode (a chown clears set-id bits) on an open fd; True when something changed."""
    st = os.fstat(fd)
    changed = False
    want_uid = st.st_uid if uid is None else uid
    want_gid = st.st_gid if gid is None else gid
    if (st.st_uid, st.st_gid) != (want_uid, want_gid):
        os.fchown(fd, want_uid, want_gid)
        changed = True
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
        changed = True
    return changed


def attrs_differ(st: os.stat_result, mode: int, uid: Optional[int], gid: Optional[int]) -> bool:
    return (stat.S_IMODE(st.st_mode) != mode or (uid is not None and st.st_uid != uid)
            or (gid is not None and st.st_gid != gid))


def sha1_fd(fd: int) -> str:
    # One buffer for the whole file: os.read(fd, CHUNK) allocates CHUNK bytes per
    # call, which for thousands of small images costs more than the hashing.
    digest = hashlib.sha1()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        count = os.readv(fd, [buffer])
        if not count:
            break
        digest.update(view[:count])
    return digest.hexdigest()


def read_fd(fd: int, offset: int, length: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    out = []
    left = length
    while left > 0:
        block = os.read(fd, min(CHUNK, left))
        if not block:
            break
        out.append(block)
        left -= len(block)
    return b"".join(out)


def write_new(dir_fd: int, name: str, chunks: Iterator[bytes], mode: int, uid: Optional[int],
              gid: Optional[int], sync: bool = True, fresh: bool = False) -> str:
    """name in dir_fd replaced by a new file (a temporary name, then rename, which replaces a file
    or a link itself and never writes through one); returns the sha1 written. sync=False leaves the
    flush to the caller (one sync of the filesystem after many files instead of an fsync each).
    fresh=True, where the caller found nothing at name: the file is made under its own name with
    O_EXCL, which fails on anything that appeared there since (a link included), and no rename; a
    copy cut short leaves a file whose sha1 the next put finds wrong and replaces."""
    tmp = name if fresh else f".effdet-tmp-{os.getpid()}-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | O_CLOEXEC, 0o600, dir_fd=dir_fd)
    digest = hashlib.sha1()
    try:
        try:
            for block in chunks:
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if tmp != name:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    return digest.hexdigest()


def file_chunks(path: str) -> Iterator[bytes]:
    """A trusted host file (the module's own temporary copy, or the automl checkout)."""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                return
            yield block


def remove_entry(dir_fd: int, name: str, depth: int = 0) -> None:
    """Remove name from dir_fd, a folder with everything in it; links are removed, never followed."""
    if depth > MAX_DEPTH:
        raise FsError(f"more than {MAX_DEPTH} nested folders under {name}")
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        for child in os.listdir(fd):
            remove_entry(fd, child, depth + 1)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


# ---------------------------------------------------------------------------
# Operations. Each returns the module's result; warnings go in result["warnings"].


def op_mkdir(base: Base, parts: List[str], p: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    if not parts:
        raise FsError("mkdir needs a path below the base folder")
    mode = parse_mode(p.get("mode"), 0o755)
    uid, gid = p.get("owner"), p.get("group")
    created: List[str] = []
    parent = base.open_dir(parts[:-1], (mode, uid, gid), check_mode, created)
    if parent is None:
        return {"changed": True, "created": created + [base.shown(parts)], "path": base.shown(parts)}
    try:
        fd = base.open_child_dir(parent, parts)
        if fd is None:
            created.append(base.shown(parts))
            if check_mode:
                return {"changed": True, "created": created, "path": base.shown(parts)}
            fd = base.make_dir(parent, parts, mode, uid, gid)
            os.close(fd)
            return {"changed": True, "created": created, "path": base.shown(parts)}
        try:
            st = os.fstat(fd)
            fixed = attrs_differ(st, mode, uid, gid)
            if fixed and not check_mode:
                set_attrs(fd, mode, uid, gid)
        finally:
            os.close(fd)
        return {"changed": bool(created) or fixed, "created": created, "attributes_changed": fixed,
                "path": base.shown(parts)}
    finally:
        os.close(parent)


def existing_file(base: Base, parent: int, parts: List[str]) -> Optional[os.stat_result]:
    """What is at parts[-1] where a file is to be written: None, or a file's stat. A link, a folder or
    a special file there is refused (a file with several hard links is simply replaced)."""
    st = base.lstat(parent, parts[-1])
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise base.refuse(parts, parent, st)
    if not stat.S_ISREG(st.st_mode):
        raise FsError(f"{base.shown(parts)} is {kind_of(st.st_mode)}, not a file")
    return st


def same_file(base: Base, parent: int, parts: List[str], st: os.stat_result, sha1: str) -> bool:
    """Whether the existing file holds exactly sha1 (one hard link only; else it is rewritten)."""
    if st.st_nlink != 1:
        return False
    fd, _ = base.open_regular(parent, parts, st)
    try:
        return sha1_fd(fd) == sha1
    finally:
        os.close(fd)


def fix_attrs(base: Base, parent: int, parts: List[str], st: os.stat_result, mode: int, uid: Optional[int],
              gid: Optional[int]) -> None:
    fd, _ = base.open_regular(parent, parts, st)
    try:
        set_attrs(fd, mode, uid, gid)
    finally:
        os.close(fd)


def text_of(base: Base, parent: int, parts: List[str], st: Optional[os.stat_result], limit: int = 65536) -> str:
    """The current text of a small plain file, for --diff ('' when none or not shown)."""
    if st is None or st.st_nlink != 1 or st.st_size > limit:
        return ""
    fd, _ = base.open_regular(parent, parts, st)
    try:
        data = read_fd(fd, 0, limit)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def op_write(base: Base, parts: List[str], p: Dict[str, Any], check_mode: bool, diff: bool) -> Dict[str, Any]:
    if not parts:
        raise FsError("write needs a file path below the base folder")
    mode = parse_mode(p.get("mode"), 0o644)
    uid, gid = p.get("owner"), p.get("group")
    if p.get("content") is not None:
        data = str(p["content"]).encode("utf-8")
        chunks = lambda: iter([data])  # noqa: E731
        sha1 = hashlib.sha1(data).hexdigest()
    elif p.get("src"):
        src = p["src"]
        digest = hashlib.sha1()
        for block in file_chunks(src):
            digest.update(block)
        sha1 = digest.hexdigest()
        chunks = lambda: file_chunks(src)  # noqa: E731
        data = None
    else:
        raise FsError("write needs content or src")
    parent = base.open_dir(parts[:-1])
    if parent is None:
        if check_mode:
            return {"changed": True, "path": base.shown(parts), "msg": "its folder does not exist yet"}
        raise FsError(f"the folder of {base.shown(parts)} does not exist")
    try:
        st = existing_file(base, parent, parts)
        result: Dict[str, Any] = {"path": base.shown(parts), "checksum": sha1}
        if st is not None and same_file(base, parent, parts, st, sha1):
            if not attrs_differ(st, mode, uid, gid):
                return {**result, "changed": False}
            if not check_mode:
                fix_attrs(base, parent, parts, st, mode, uid, gid)
            return {**result, "changed": True, "attributes_changed": True}
        if diff and data is not None:
            before = text_of(base, parent, parts, st)
            try:
                result["diff"] = {"before": before, "after": data.decode("utf-8"),
                                  "before_header": base.shown(parts), "after_header": base.shown(parts)}
            except UnicodeDecodeError:
                pass
        if not check_mode:
            write_new(parent, parts[-1], chunks(), mode, uid, gid)
        return {**result, "changed": True}
    finally:
        os.close(parent)


def stat_result(st: os.stat_result) -> Dict[str, Any]:
    return {"exists": True, "isdir": stat.S_ISDIR(st.st_mode), "isreg": stat.S_ISREG(st.st_mode),
            "islnk": False, "size": st.st_size, "mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "nlink": st.st_nlink, "mtime": st.st_mtime}


def op_stat(base: Base, parts: List[str], p: Dict[str, Any]) -> Dict[str, Any]:
    if not parts:
        return {"changed": False, "stat": stat_result(os.fstat(base.fd))}
    parent = base.open_dir(parts[:-1])
    if parent is None:
        return {"changed": False, "stat": {"exists": False}}
    try:
        st = base.lstat(parent, parts[-1])
        if st is None:
            return {"changed": False, "stat": {"exists": False}}
        if stat.S_ISLNK(st.st_mode):
            raise base.refuse(parts, parent, st)
        out = stat_result(st)
        if stat.S_ISREG(st.st_mode) and p.get("get_checksum"):
            fd, _ = base.open_regular(parent, parts, st)
            try:
                out["checksum"] = sha1_fd(fd)
            finally:
                os.close(fd)
        return {"changed": False, "stat": out}
    finally:
        os.close(parent)


def op_read(base: Base, parts: List[str], p: Dict[str, Any]) -> Dict[str, Any]:
    if not parts:
        raise FsError("read needs a file path below the base folder")
    shown = base.shown(parts)
    missing = {"changed": False, "exists": False, "path": shown}
    parent = base.open_dir(parts[:-1])
    if parent is None:
        if p.get("missing_ok"):
            return missing
        raise FsError(f"{shown} does not exist")
    try:
        st = base.lstat(parent, parts[-1])
        if st is None:
            if p.get("missing_ok"):
                return missing
            raise FsError(f"{shown} does not exist")
        try:
            fd, fst = base.open_regular(parent, parts, st)
        except Refused as exc:
            if p.get("unsafe") == "skip":
                return {"changed": False, "exists": True, "skipped": True, "path": shown, "msg": str(exc)}
            raise
        try:
            offset = max(0, int(p.get("offset") or 0))
            max_bytes = int(p.get("max_bytes") or 16 * 1024 * 1024)
            length = p.get("length")
            out: Dict[str, Any] = {"changed": False, "exists": True, "path": shown, "size": fst.st_size,
                                   "offset": offset}
            if p.get("unless_sha1") is not None:
                out["sha1"] = sha1_fd(fd)
                if out["sha1"] == p["unless_sha1"]:
                    return {**out, "same": True, "eof": True}
            if length is None:
                if fst.st_size - offset > max_bytes:
                    raise FsError(f"{shown} is {fst.st_size} bytes, more than the {max_bytes} read at once")
                length = max_bytes
            data = read_fd(fd, offset, min(int(length), max_bytes))
            end = offset + len(data)
            return {**out, "same": False, "content": base64.b64encode(data).decode("ascii"), "length": len(data),
                    "eof": end >= os.fstat(fd).st_size, "encoding": "base64"}
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def op_find(base: Base, parts: List[str], p: Dict[str, Any]) -> Dict[str, Any]:
    patterns = [x for x in (p.get("patterns") or []) if x]
    warnings: List[str] = []
    files: List[Dict[str, Any]] = []
    top = base.open_dir(parts)
    if top is None:
        return {"changed": False, "files": [], "matched": 0, "exists": False,
                "warnings": [f"{base.shown(parts)} does not exist: nothing found"]}

    def matches(name: str) -> bool:
        return not patterns or any(fnmatch.fnmatch(name, pat) for pat in patterns)

    def walk(fd: int, here: List[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FsError(f"more than {MAX_DEPTH} nested folders under {base.shown(parts)}")
        for name in sorted(os.listdir(fd)):
            entry = here + [name]
            st = base.lstat(fd, name)
            if st is None:
                continue
            hidden = name.startswith(".") and not p.get("hidden")
            if stat.S_ISLNK(st.st_mode):
                warnings.append(f"skipped {base.shown(entry)}: {kind_of(st.st_mode)}, never followed")
                continue
            if stat.S_ISDIR(st.st_mode):
                if p.get("recurse"):
                    try:
                        child = base.open_child_dir(fd, entry)
                    except Refused as exc:
                        warnings.append(f"skipped: {exc}")
                        continue
                    if child is not None:
                        try:
                            walk(child, entry, depth + 1)
                        finally:
                            os.close(child)
                continue
            if hidden or not matches(name):
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                warnings.append(f"skipped {base.shown(entry)}: {kind_of(st.st_mode)}"
                                + (f" with {st.st_nlink} hard links" if stat.S_ISREG(st.st_mode) else ""))
                continue
            item = {"path": f"{base.path}/{'/'.join(entry)}", "rel": "/".join(entry), "size": st.st_size,
                    "mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                    "mtime": st.st_mtime}
            if p.get("get_checksum"):
                try:
                    rfd, _ = base.open_regular(fd, entry, st)
                except Refused as exc:
                    warnings.append(f"skipped: {exc}")
                    continue
                try:
                    item["checksum"] = sha1_fd(rfd)
                finally:
                    os.close(rfd)
            files.append(item)

    try:
        walk(top, list(parts), 0)
    finally:
        os.close(top)
    return {"changed": False, "files": files, "matched": len(files), "exists": True, "warnings": warnings}


def stamp_name(root: List[str]) -> str:
    """The stamp of base/root lies beside it, in its parent (writing it changes no folder of the tree)."""
    return f".{root[-1]}.effdet-put.json"


def tree_mtimes(base: Base, top: int, root: List[str], dirs: List[str]) -> Optional[Dict[str, int]]:
    """The mtime (ns) of root ("") and of each folder of the manifest below it; None where one is missing
    (never through a link). A file added, removed or renamed in a folder changes that folder's mtime."""
    out = {"": os.fstat(top).st_mtime_ns}
    for rel in dirs:
        sub = split_path("/", rel)
        if not sub:
            continue
        fd = open_under(base, top, root, sub, None, False, None)
        if fd is None:
            return None
        try:
            out[rel] = os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)
    return out


def read_stamp(base: Base, root: List[str]) -> Optional[Dict[str, Any]]:
    parent = base.open_dir(root[:-1])
    if parent is None:
        return None
    try:
        st = base.lstat(parent, stamp_name(root))
        if st is None:
            return None
        fd, _ = base.open_regular(parent, root[:-1] + [stamp_name(root)], st)
        try:
            return json.loads(read_fd(fd, 0, min(st.st_size, 4 * 1024 * 1024)).decode("utf-8"))
        except ValueError:
            return None
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def root_state(base: Base, root: List[str]) -> str:
    """"missing" where the tree's folder is not there yet (a first put: nothing to compare), else
    "present"."""
    top = base.open_dir(root)
    if top is None:
        return "missing"
    os.close(top)
    return "present"


def stamp_holds(base: Base, root: List[str], p: Dict[str, Any]) -> bool:
    """Whether the tree is as the last complete put left it: the stamp beside it names the same
    manifest digest and no folder of the tree changed since (one read and a stat per folder)."""
    if not root:
        return False
    stamp = read_stamp(base, root)
    if not stamp or stamp.get("digest") != p.get("digest"):
        return False
    top = base.open_dir(root)
    if top is None:
        return False
    try:
        now = tree_mtimes(base, top, root, p.get("dirs") or [])
        return now is not None and now == stamp.get("mtimes")
    finally:
        os.close(top)


def write_stamp(base: Base, root: List[str], p: Dict[str, Any]) -> None:
    """After a complete put: the manifest's digest and the tree's folder mtimes, beside the tree."""
    top = base.open_dir(root)
    if top is None:
        raise FsError(f"{base.shown(root)} is missing after the copy")
    try:
        mtimes = tree_mtimes(base, top, root, p.get("dirs") or [])
    finally:
        os.close(top)
    parent = base.open_dir(root[:-1])
    if parent is None:
        raise FsError(f"{base.shown(root[:-1])} is missing after the copy")
    try:
        body = json.dumps({"digest": p.get("digest"), "mtimes": mtimes}, sort_keys=True).encode("utf-8")
        existing_file(base, parent, root[:-1] + [stamp_name(root)])   # refuses a link there
        write_new(parent, stamp_name(root), iter([body]), 0o644, p.get("owner"), p.get("group"))
    finally:
        os.close(parent)


def sync_filesystem(fd: int) -> None:
    """Flush the filesystem that holds fd (syncfs(2)), not every filesystem of the machine as
    os.sync() does; os.sync() where libc has no syncfs."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


class Bundle:
    """The caller's bundle: the contents of the files marked in_bundle, one after the other in the
    manifest's order, in one or more parts (trusted files in the caller's private temporary folder).
    It has no names in it: each file takes the next `size` bytes, and its sha1 is checked as written.
    The parts are removed once read (close)."""

    def __init__(self, parts: List[str]) -> None:
        self.parts = parts
        self.total = sum(os.stat(part).st_size for part in parts)
        self.index = -1
        self.fd: Optional[int] = None

    def take(self, size: int) -> Iterator[bytes]:
        """The next size bytes, in chunks."""
        left = size
        while left > 0:
            if self.fd is None:
                self.index += 1
                if self.index >= len(self.parts):
                    raise FsError("the bundle sent ends before the manifest's files do")
                self.fd = os.open(self.parts[self.index], os.O_RDONLY | O_CLOEXEC)
            block = os.read(self.fd, min(CHUNK, left))
            if not block:
                os.close(self.fd)
                self.fd = None
                continue
            left -= len(block)
            yield block

    def skip(self, size: int) -> None:
        for _ in self.take(size):
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for part in self.parts:
            try:
                os.unlink(part)
            except OSError:
                pass


def open_bundle(p: Dict[str, Any]) -> Optional[Bundle]:
    """The bundle of a tree call, checked against the manifest: its size is the sum of the sizes of
    the files it is said to hold."""
    if not p.get("bundle"):
        return None
    bundle = Bundle([str(part) for part in p["bundle"]])
    expected = sum(int(item.get("size") or 0) for item in p.get("files") or [] if item.get("in_bundle"))
    if bundle.total != expected:
        bundle.close()
        raise FsError(f"the bundle sent holds {bundle.total} bytes, the files said to be in it {expected}")
    return bundle


def put_files(base: Base, root: List[str], p: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """tree: the folders and files of a manifest into base/root. Files whose content is given
    (content_b64, src: a trusted file on the host, or in_bundle: the next size bytes of the bundle) are
    written when they differ; the others are compared and, when they differ, listed in `need` for the
    caller to send. stamp_check only says whether the stamp beside the tree holds for digest
    (stamp_holds); stamp_write records a complete put."""
    if p.get("stamp_check"):
        holds = bool(p.get("digest")) and stamp_holds(base, root, p)
        if holds:     # the no-change path: the tree is there, nothing more to look at
            return {"changed": False, "stamp": "holds", "root": "present"}
        return {"changed": False, "stamp": "void", "root": root_state(base, root)}
    if p.get("stamp_write"):
        if not check_mode:
            write_stamp(base, root, p)
        return {"changed": False, "created": [], "written": [], "attributes_changed": [], "need": [],
                "stamp": "written"}
    bundle = open_bundle(p)
    started = time.monotonic()
    result: Dict[str, Any] = {}
    try:
        result = put_manifest(base, root, p, check_mode, bundle)
        if bundle is not None:
            result["unpack_s"] = round(time.monotonic() - started, 3)
        return result
    finally:
        if bundle is not None:
            # The bundle's files were written without an fsync each: one flush of their
            # filesystem. The bundle goes first (the caller's temporary copy, read once), so
            # that its own pages are dropped, not written back.
            flushing = time.monotonic()
            bundle.close()
            if p.get("flush", True):
                sync_filesystem(base.fd)
                result["flush_s"] = round(time.monotonic() - flushing, 3)


def put_manifest(base: Base, root: List[str], p: Dict[str, Any], check_mode: bool,
                 bundle: Optional[Bundle]) -> Dict[str, Any]:
    mode = parse_mode(p.get("mode"), 0o644)
    dir_mode = parse_mode(p.get("dir_mode"), 0o755)
    uid, gid = p.get("owner"), p.get("group")
    created: List[str] = []
    written: List[str] = []
    fixed: List[str] = []
    need: List[str] = []
    top = base.open_dir(root, (dir_mode, uid, gid), check_mode, created)
    if top is None:      # check mode, the folder is not there yet
        return {"changed": True, "created": created, "written": [], "need": [],
                "would_write": [f["path"] for f in p.get("files") or []]}
    try:
        # The root's own owner and mode, unless it is the base itself or the caller said no (the
        # folder of a single file).
        if root and p.get("root_attrs", True) and attrs_differ(os.fstat(top), dir_mode, uid, gid):
            fixed.append(base.shown(root))
            if not check_mode:
                set_attrs(top, dir_mode, uid, gid)
        for rel in sorted(set(p.get("dirs") or []), key=lambda d: (d.count("/"), d)):
            sub = split_path("/", rel)
            if not sub:
                continue
            fd = open_under(base, top, root, sub, (dir_mode, uid, gid), check_mode, created)
            if fd is not None:
                try:
                    if attrs_differ(os.fstat(fd), dir_mode, uid, gid):
                        fixed.append(base.shown(root + sub))
                        if not check_mode:
                            set_attrs(fd, dir_mode, uid, gid)
                finally:
                    os.close(fd)
        # The folder of the previous file stays open for the next one in the same folder (a VOC
        # tree is a few folders of thousands of files): one walk per folder, not per file.
        parents = ParentFolders(base, top, root, (dir_mode, uid, gid), check_mode, created)
        try:
            put_items(base, root, p.get("files") or [], parents, (mode, uid, gid), check_mode, bundle,
                      written, fixed, need)
        finally:
            parents.close()
    finally:
        os.close(top)
    return {"changed": bool(created or written or fixed), "created": created, "written": written,
            "attributes_changed": fixed, "need": need}


class ParentFolders:
    """The open folder of the file being written, reused while the next file has the same one."""

    def __init__(self, base: Base, top: int, root: List[str], create: Tuple[int, Optional[int], Optional[int]],
                 check_mode: bool, created: List[str]) -> None:
        self.base, self.top, self.root, self.create = base, top, root, create
        self.check_mode, self.created = check_mode, created
        self.key: Optional[List[str]] = None
        self.fd: Optional[int] = None

    def get(self, sub: List[str]) -> Optional[int]:
        """The fd of root/sub (None: in check mode, not made yet); the caller must not close it."""
        if self.key != sub:
            self.close()
            self.fd = open_under(self.base, self.top, self.root, sub, self.create, self.check_mode, self.created)
            self.key = sub
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.key = None, None


def put_items(base: Base, root: List[str], items: List[Dict[str, Any]], parents: ParentFolders,
              attrs: Tuple[int, Optional[int], Optional[int]], check_mode: bool,
              bundle: Optional[Bundle], written: List[str], fixed: List[str], need: List[str]) -> None:
    """Each file of the manifest: compared, and written where its content came with it."""
    mode, uid, gid = attrs
    for item in items:
        sub = split_path("/", str(item["path"]))
        if not sub:
            raise FsError("a file of the manifest has an empty path")
        full = root + sub
        parent = parents.get(sub[:-1])
        if parent is None:
            written.append(base.shown(full))
            continue
        st = existing_file(base, parent, full)
        sha1 = str(item.get("sha1") or "")
        if st is not None and same_file(base, parent, full, st, sha1):
            if item.get("in_bundle") and bundle is not None:
                bundle.skip(int(item.get("size") or 0))
            if attrs_differ(st, mode, uid, gid):
                fixed.append(base.shown(full))
                if not check_mode:
                    fix_attrs(base, parent, full, st, mode, uid, gid)
            continue
        if item.get("content_b64") is not None:
            data = base64.b64decode(item["content_b64"])
            chunks: Iterator[bytes] = iter([data])
        elif item.get("src"):
            chunks = file_chunks(str(item["src"]))
        elif item.get("in_bundle"):
            if bundle is None:
                raise FsError(f"{base.shown(full)} is said to be in a bundle, and none was sent")
            chunks = bundle.take(int(item.get("size") or 0))
        else:
            need.append(str(item["path"]))
            continue
        written.append(base.shown(full))
        if not check_mode:
            got = write_new(parent, full[-1], chunks, mode, uid, gid, sync=bundle is None, fresh=st is None)
            if sha1 and got != sha1:
                raise FsError(f"{base.shown(full)}: wrote sha1 {got}, expected {sha1} (damaged in transfer)")


def open_under(base: Base, top: int, root: List[str], sub: List[str],
               create: Optional[Tuple[int, Optional[int], Optional[int]]], check_mode: bool,
               created: Optional[List[str]]) -> Optional[int]:
    """The folder root/sub as an fd (the caller closes it), walked from top (the fd of root) one
    folder at a time, never through a link. Missing folders are None, or with create=(mode, uid,
    gid) made with that owner and mode (in check mode only noted in created, and None is returned)."""
    fd = os.dup(top)
    for i in range(len(sub)):
        here = root + sub[:i + 1]
        try:
            child = base.open_child_dir(fd, here)
            if child is None:
                if create is None:
                    return None
                if created is not None:
                    created.append(base.shown(here))
                if check_mode:
                    return None
                child = base.make_dir(fd, here, *create)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = child
    return fd


def op_sync(base: Base, root: List[str], p: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """Mirror a trusted host folder (src) into base/root: folders, files and links as they are there,
    what is not there removed. Nothing in base/root is ever followed (links there are replaced)."""
    src = p.get("src")
    if not src or not os.path.isdir(src):
        raise FsError(f"sync needs src, a folder on the host ({src!r} is not one)")
    if not root:
        raise FsError("sync needs a folder below the base folder")
    dir_mode = parse_mode(p.get("dir_mode"), 0o755)
    uid, gid = p.get("owner"), p.get("group")
    stats = {"created": [], "written": [], "removed": [], "linked": [], "attributes_changed": []}
    top = base.open_dir(root, (dir_mode, uid, gid), check_mode, stats["created"])
    if top is None:
        return {"changed": True, **stats}
    try:
        sync_dir(base, top, root, src, dir_mode, uid, gid, check_mode, stats, 0)
    finally:
        os.close(top)
    changed = any(stats.values())
    return {"changed": changed, **{k: v[:200] for k, v in stats.items()},
            "counts": {k: len(v) for k, v in stats.items()}}


def sync_dir(base: Base, fd: int, here: List[str], src: str, dir_mode: int, uid: Optional[int],
             gid: Optional[int], check_mode: bool, stats: Dict[str, List[str]], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FsError(f"more than {MAX_DEPTH} nested folders in {src}")
    if attrs_differ(os.fstat(fd), dir_mode, uid, gid):
        stats["attributes_changed"].append(base.shown(here))
        if not check_mode:
            set_attrs(fd, dir_mode, uid, gid)
    wanted = sorted(os.listdir(src))
    for name in sorted(set(os.listdir(fd)) - set(wanted)):
        stats["removed"].append(base.shown(here + [name]))
        if not check_mode:
            remove_entry(fd, name)
    for name in wanted:
        path = os.path.join(src, name)
        entry = here + [name]
        sst = os.lstat(path)
        dst = base.lstat(fd, name)
        if stat.S_ISLNK(sst.st_mode):
            target = os.readlink(path)
            if dst is not None and stat.S_ISLNK(dst.st_mode) and os.readlink(name, dir_fd=fd) == target:
                continue
            stats["linked"].append(base.shown(entry))
            if not check_mode:
                if dst is not None:
                    remove_entry(fd, name)
                os.symlink(target, name, dir_fd=fd)
                if uid is not None or gid is not None:
                    os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid, dir_fd=fd,
                             follow_symlinks=False)
        elif stat.S_ISDIR(sst.st_mode):
            if dst is not None and not stat.S_ISDIR(dst.st_mode):
                stats["removed"].append(base.shown(entry))
                if not check_mode:
                    remove_entry(fd, name)
                dst = None
            if dst is None:
                stats["created"].append(base.shown(entry))
                if check_mode:
                    continue
                child = base.make_dir(fd, entry, dir_mode, uid, gid)
            else:
                child = base.open_child_dir(fd, entry)
                if child is None:
                    raise FsError(f"{base.shown(entry)} vanished during the sync")
            try:
                sync_dir(base, child, entry, path, dir_mode, uid, gid, check_mode, stats, depth + 1)
            finally:
                os.close(child)
        elif stat.S_ISREG(sst.st_mode):
            mode = 0o755 if sst.st_mode & 0o111 else 0o644
            if dst is not None and stat.S_ISREG(dst.st_mode) and dst.st_nlink == 1 and dst.st_size == sst.st_size:
                digest = hashlib.sha1()
                for block in file_chunks(path):
                    digest.update(block)
                if same_file(base, fd, entry, dst, digest.hexdigest()):
                    if attrs_differ(dst, mode, uid, gid):
                        stats["attributes_changed"].append(base.shown(entry))
                        if not check_mode:
                            fix_attrs(base, fd, entry, dst, mode, uid, gid)
                    continue
            stats["written"].append(base.shown(entry))
            if not check_mode:
                if dst is not None and stat.S_ISDIR(dst.st_mode):
                    remove_entry(fd, name)
                write_new(fd, name, file_chunks(path), mode, uid, gid)
        # sockets, FIFOs and devices in the source are not copied


def run(params: Dict[str, Any], check_mode: bool = False, diff: bool = False) -> Dict[str, Any]:
    """The module without Ansible: the result dict, failed=True with msg on a refusal or error."""
    op = params.get("op")
    if op not in OPS:
        return {"failed": True, "changed": False, "msg": f"op must be one of {', '.join(OPS)}"}
    try:
        parts = split_path(str(params["base"]), str(params["path"]))
        with Base(str(params["base"]), params.get("base_alias")) as base:
            if op == "mkdir":
                return op_mkdir(base, parts, params, check_mode)
            if op == "write":
                return op_write(base, parts, params, check_mode, diff)
            if op == "stat":
                return op_stat(base, parts, params)
            if op == "read":
                return op_read(base, parts, params)
            if op == "find":
                return op_find(base, parts, params)
            if op == "tree":
                return put_files(base, parts, params, check_mode)
            return op_sync(base, parts, params, check_mode)
    except Refused as exc:
        return {"failed": True, "changed": False, "refused": True, "msg": str(exc)}
    except FsError as exc:
        return {"failed": True, "changed": False, "msg": str(exc)}
    except OSError as exc:
        where = exc.filename or params.get("path")
        return {"failed": True, "changed": False, "msg": f"{op} {where}: {exc.strerror or exc}"}


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            op=dict(type="str", required=True, choices=list(OPS)),
            base=dict(type="str", required=True),
            base_alias=dict(type="str"),
            path=dict(type="str", required=True),
            owner=dict(type="int"),
            group=dict(type="int"),
            mode=dict(type="raw"),
            dir_mode=dict(type="raw"),
            content=dict(type="str"),
            src=dict(type="str"),
            get_checksum=dict(type="bool", default=False),
            missing_ok=dict(type="bool", default=False),
            unsafe=dict(type="str", default="fail", choices=["fail", "skip"]),
            offset=dict(type="int", default=0),
            length=dict(type="int"),
            max_bytes=dict(type="int", default=16 * 1024 * 1024),
            unless_sha1=dict(type="str"),
            patterns=dict(type="list", elements="str", default=[]),
            recurse=dict(type="bool", default=False),
            hidden=dict(type="bool", default=False),
            dirs=dict(type="list", elements="str", default=[]),
            files=dict(type="list", elements="dict", default=[]),
            root_attrs=dict(type="bool", default=True),
            digest=dict(type="str"),
            stamp_check=dict(type="bool", default=False),
            stamp_write=dict(type="bool", default=False),
            bundle=dict(type="list", elements="str"),
            flush=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    result = run(module.params, module.check_mode, module._diff)
    for warning in result.pop("warnings", []) or []:
        module.warn(warning)
    if result.get("failed"):
        msg = result.pop("msg")
        result.pop("failed")
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
