"""A cache on disk, between runs, of the two things mitogen's connection
multiplexer works out afresh in every run for every Python module it sends to
the hosts.

- ModuleResponder._build_tuple: a module's source, minified (mitogen's own
  modules), compressed with zlib at level 9, and the list of the modules it
  imports, directly or not (mitogen compiles each to find them), which it sends
  along.
- ansible_mitogen.module_finder.scan: the module_utils an Ansible module
  needs, found by compiling the module and each module_utils file it reaches.

On a 1-host no-change re-run of the host layer the multiplexer used 1.0 s of
CPU, the same on every run, and 0.19 s with this cache warm (getrusage, by
hand, three runs each).

Keys and what a hit checks:

- a module: the module's name, path, whether it is a package and its source
  (the bytes mitogen read this run), with the versions of this cache, mitogen
  and Python. The hit is the compressed source and the import list; whether
  a package has submodules is worked out afresh, and the import list goes
  through mitogen's policy again. mitogen lists the imports of a module only
  where the controller has imported it, so a list from an earlier run may
  differ from this run's; it is only what mitogen sends ahead, and a host asks
  for any module it lacks, so that changes when a module arrives, not whether.
- a scan: the Ansible module's name, path and source and the search path, with
  the same versions. The entry also holds a digest of every file the scan read
  and the modification time of every folder it looked in (the search path's
  and those of the files it found): a hit needs all of them unchanged, so an
  edited module_utils file, or one added to or removed from any folder the
  scan looked in, makes a new scan.

The entries are JSON (no pickle). They hold code the hosts run, so the folder
has the Jinja code cache's guards (plugin_utils/jinja_code_cache.py): used
only while it is a real folder of the controller's user with no access for
group or others, a file only if it is a regular file of that user; otherwise
the cache stays off for the run, with one warning. Writes are atomic.

EFFDET_MITOGEN_MODULE_CACHE names the folder (absolute), or turns the cache
off with "off" (default, or "on": <ANSIBLE_HOME>/effdet_lab/mitogen_modules; a
relative folder is refused as jinja_code_cache.ready_folder says).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import sys
from typing import Any, Callable

from ansible_collections.effdet_lab.lab.plugins.plugin_utils import jinja_code_cache as guarded

CACHE_VERSION = "1"
ENV_VAR = "EFFDET_MITOGEN_MODULE_CACHE"
_STATE: dict[str, Any] = {"dir": None, "installed": False}


@functools.lru_cache(maxsize=None)
def _versions() -> str:
    import mitogen

    return f"cache {CACHE_VERSION}|mitogen {mitogen.__version__}|python {sys.version_info[:3]}"


def _as_bytes(source: Any) -> bytes:
    return source if isinstance(source, bytes) else str(source).encode("utf-8", "surrogatepass")


def key_of(kind: str, fields: tuple, source: bytes) -> str:
    digest = hashlib.sha256(repr((_versions(), kind, fields)).encode("utf-8"))
    digest.update(b"\0")
    digest.update(source)
    return digest.hexdigest()


def load(key: str) -> dict | None:
    folder = _STATE["dir"]
    data = guarded.read_bytes(os.path.join(folder, key)) if folder else None
    if data is None:
        return None
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def store(key: str, entry: dict) -> None:
    folder = _STATE["dir"]
    if folder:
        guarded.write_bytes(folder, os.path.join(folder, key), json.dumps(entry, sort_keys=True).encode("utf-8"))


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def folder_mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def cached_build_tuple(original: Callable[..., Any]) -> Callable[..., Any]:
    def _build_tuple(self: Any, fullname: str) -> Any:
        import mitogen.core
        import mitogen.master

        if fullname in self._cache or fullname == "__main__":
            return original(self, fullname)
        self.policy.denied_raise(fullname)
        path, source, is_pkg = self._finder.get_module_source(fullname)
        if not path or source is None or mitogen.master.is_stdlib_path(path):
            return original(self, fullname)
        key = key_of("module", (fullname, path, bool(is_pkg)), _as_bytes(source))
        entry = load(key)
        if entry is None or not isinstance(entry.get("compressed"), str) or not isinstance(entry.get("related"), list):
            tup = original(self, fullname)
            store(key, {"compressed": base64.b64encode(bytes(tup[3])).decode("ascii"), "related": list(tup[4])})
            return tup
        pkg_present = mitogen.master.get_child_modules(path, fullname) if is_pkg else None
        tup = (mitogen.core.to_text(fullname), pkg_present, mitogen.core.to_text(path),
               mitogen.core.Blob(base64.b64decode(entry["compressed"])),
               [name for name in entry["related"] if not self.policy.denied(name)])
        self._cache[fullname] = tup
        return tup
    return _build_tuple


def scan_entry(result: list, search_path: tuple) -> dict:
    files = {origin: file_digest(origin) for _name, origin, _is_pkg in result}
    folders = {folder: folder_mtime(folder) for folder in {*search_path, *(os.path.dirname(f) for f in files)}}
    return {"result": [list(row) for row in result], "files": files, "folders": folders}


def still_true(entry: dict) -> bool:
    files, folders = entry.get("files"), entry.get("folders")
    if not isinstance(files, dict) or not isinstance(folders, dict) or not isinstance(entry.get("result"), list):
        return False
    return all(file_digest(path) == digest for path, digest in files.items()) \
        and all(folder_mtime(path) == mtime for path, mtime in folders.items())


def cached_scan(original: Callable[..., Any]) -> Callable[..., Any]:
    def scan(module_name: str, module_path: str, search_path: Any) -> list:
        source = None
        try:
            with open(module_path, "rb") as fh:
                source = fh.read()
        except (OSError, TypeError):
            pass
        if source is None:
            return original(module_name, module_path, search_path)
        search = tuple(search_path)
        key = key_of("scan", (module_name, module_path, search), source)
        entry = load(key)
        if entry is not None and still_true(entry):
            return [(name, origin, bool(is_pkg)) for name, origin, is_pkg in entry["result"]]
        result = original(module_name, module_path, search_path)
        store(key, scan_entry(result, search))
        return result
    return scan


def install(warn: Callable[[str], Any] | None = None) -> str | None:
    """Wrap mitogen's two steps (once per process; the multiplexer is forked after this). Returns the folder,
    or None where the cache is off."""
    if _STATE["installed"]:
        return _STATE["dir"]
    _STATE["installed"] = True
    folder = guarded.ready_folder(ENV_VAR, "mitogen_modules", "mitogen module cache", warn)
    if folder is None:
        return None
    import ansible_mitogen.module_finder
    import mitogen.master

    _STATE["dir"] = folder
    mitogen.master.ModuleResponder._build_tuple = cached_build_tuple(mitogen.master.ModuleResponder._build_tuple)
    ansible_mitogen.module_finder.scan = cached_scan(ansible_mitogen.module_finder.scan)
    return folder
