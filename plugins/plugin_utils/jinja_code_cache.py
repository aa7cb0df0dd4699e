"""A cache on disk of the Python code that Jinja compiles Ansible's templates into.

Ansible forks a worker per task and host, and the worker compiles every template
and conditional the task needs: Jinja parses it, generates Python source and
compiles that. Nothing survives the worker, so each host compiles the same few
hundred templates again on every task, and every run does it all again. In a
no-change re-run of the host layer on 8 hosts that was a third of the workers'
CPU (sampled in the workers, bench/rerun_profile.py's runs).

install() makes Ansible's Jinja environment keep each compiled code object in a
folder on the controller, keyed by everything the compiler reads:

- the template's text (or the conditional's, marked apart from templates);
- the environment: its class, code generator, the lexer settings a template's
  "#jinja2:" header can override, optimizer, autoescape, async mode, extensions
  and the load name and file name Jinja is given;
- Ansible's compile-time switches: escape_backslashes (the compile context) and
  ALLOW_EMBEDDED_TEMPLATES;
- the versions of Python (marshal's format), Jinja and ansible-core, and this
  cache's own.

A hit reads one small file instead of compiling. The code is the code the
compiler would have produced for the same key, so a template renders exactly as
before; what is not cacheable (Ansible's template debugging on, a callable
autoescape, another Jinja environment) compiles as before.

The folder holds code the controller runs, so it is used only while it is a real
folder (not a link) of the controller's user, with no access for group or
others; a file in it only if it is a regular file of that user. Otherwise the
cache stays off for the run, with one warning. It is written atomically
(a temporary file, then a rename), so workers may fill it side by side.

EFFDET_JINJA_CODE_CACHE names the folder (absolute), or turns the cache off
with "off" (default, or "on": <ANSIBLE_HOME>/effdet_lab/jinja_code; a relative
folder is refused by name, value and rule, in a warning, and the cache is off
for the run). The folder is emptied when it holds more than MAX_ENTRIES files
(code of old versions of templates).
"""
from __future__ import annotations

import contextvars
import functools
import hashlib
import marshal
import os
import stat
import sys
import tempfile
import types
from typing import Any, Callable

CACHE_VERSION = "1"
MAX_ENTRIES = 20000
ENV_VAR = "EFFDET_JINJA_CODE_CACHE"
OFF = ("off", "0", "false", "no")
ON = ("on", "1", "true", "yes")     # the default folder

# The conditional being compiled (compile_expression hands Jinja a node tree, not text).
_EXPRESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("effdet_jinja_expression", default=None)
_STATE: dict[str, Any] = {"dir": None, "installed": False, "hits": 0, "misses": 0}


def ansible_home_folder(name: str) -> str:
    """<ANSIBLE_HOME>/effdet_lab/<name>: where this project's caches live by default."""
    from ansible import constants as C  # noqa: N812 - Ansible's own spelling

    return os.path.join(C.ANSIBLE_HOME, "effdet_lab", name)


def folder_from(env_var: str, default: str) -> str | None:
    """The folder an environment variable names: unset, empty or an on word, the default; an off word,
    None (off)."""
    value = os.environ.get(env_var)
    if value is None or value == "" or value.lower() in ON:
        return default
    if value.lower() in OFF:
        return None
    return value


def folder_rule_broken(env_var: str, folder: str) -> str | None:
    """Why a folder an environment variable names may not be a cache's folder, by name, value and rule:
    a relative one would be made wherever the run starts (EFFDET_..._CACHE=of, a typo, made ./of)."""
    if os.path.isabs(folder):
        return None
    return (f"{env_var} = {folder!r} breaks the rule: an absolute folder, or one of "
            f"{', '.join(ON)} (the default folder) or {', '.join(OFF)} (off)")


def ready_folder(env_var: str, name: str, what: str, warn: Callable[[str], Any] | None) -> str | None:
    """A cache's folder for this run: the one env_var names (folder_from; default ansible_home_folder(name)),
    made absolute, private (private_dir) and pruned. None where the cache is off; where the folder may not be
    used, warn says why, once."""
    folder = folder_from(env_var, ansible_home_folder(name))
    if folder is None:
        return None
    broken = folder_rule_broken(env_var, folder)
    if broken:
        if warn:
            warn(f"effdet-lab: the {what} is off for this run: {broken}.")
        return None
    folder = os.path.normpath(folder)
    reason = private_dir(folder)
    if reason:
        if warn:
            warn(f"effdet-lab: the {what} {folder} is off for this run: {reason}. "
                 f"Set {env_var} to another folder, or to 'off'.")
        return None
    prune(folder)
    return folder


def private_dir(path: str) -> str | None:
    """Create the folder (0700) if absent; the reason it may not be used, or None."""
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot create or read it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "it is not a folder (a link is not followed)"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs Ansible"
    if st.st_mode & 0o077:
        return f"group or others have access to it (mode {stat.S_IMODE(st.st_mode):04o}); it must be 0700"
    return None


def prune(path: str, limit: int = MAX_ENTRIES) -> None:
    """Empty the folder when it holds more than limit files."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    if len(names) <= limit:
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except OSError:
            continue


@functools.lru_cache(maxsize=None)
def _versions() -> str:
    import jinja2
    from ansible.release import __version__ as ansible_version

    return f"cache {CACHE_VERSION}|python {sys.version_info[:3]}|{sys.implementation.cache_tag}|" \
           f"jinja {jinja2.__version__}|ansible-core {ansible_version}"


def cache_key(env: Any, text: str, kind: str, name: str | None, filename: str | None, defer_init: bool) -> str | None:
    """The key of one compile, or None where it must not be cached."""
    from ansible._internal._templating import _jinja_bits as bits
    from ansible._internal._templating._jinja_common import _TemplateConfig

    if getattr(env, "_debuggable_template_source", False) or bits._CompileStateSmugglingCtx.current(optional=True):
        return None
    if callable(env.autoescape):
        return None
    context = bits._TemplateCompileContext.current(optional=True)
    settings = (
        _versions(), type(env).__module__, type(env).__qualname__,
        env.code_generator_class.__module__, env.code_generator_class.__qualname__,
        env.optimized, env.autoescape, env.is_async, tuple(sorted(env.extensions)),
        tuple((field, getattr(env, field)) for field in bits._TEMPLATE_OVERRIDE_FIELD_NAMES),
        env.newline_sequence, context.escape_backslashes if context else None,
        _TemplateConfig.allow_embedded_templates, name, filename, defer_init, kind,
    )
    digest = hashlib.sha256(repr(settings).encode("utf-8"))
    digest.update(b"\0")
    digest.update(str.__str__(text).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None (absent, not a regular file of this user, writable by others, or unreadable).
    A link is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def write_bytes(folder: str, path: str, data: bytes) -> None:
    """Write atomically: a temporary file in the folder, then a rename (writers may race; one wins whole)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read(path: str) -> types.CodeType | None:
    """The cached code, or None (see read_bytes; or not code)."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        code = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def write(folder: str, path: str, code: types.CodeType) -> None:
    try:
        data = marshal.dumps(code)
    except ValueError:
        return
    write_bytes(folder, path, data)


def _cached_compile(original: Callable[..., Any]) -> Callable[..., Any]:
    def compile(self: Any, source: Any, name: str | None = None, filename: str | None = None, raw: bool = False,
                defer_init: bool = False) -> Any:
        folder = _STATE["dir"]
        key = None
        if folder and not raw:
            expression = _EXPRESSION.get()
            if isinstance(source, str):
                key = cache_key(self, source, "template", name, filename, defer_init)
            elif expression is not None:
                _EXPRESSION.set(None)   # only the conditional's own compile
                key = cache_key(self, expression, "expression", name, filename, defer_init)
        if key is None:
            return original(self, source, name, filename, raw, defer_init)
        path = os.path.join(folder, key)
        code = read(path)
        if code is not None:
            _STATE["hits"] += 1
            return code
        code = original(self, source, name, filename, raw, defer_init)
        _STATE["misses"] += 1
        write(folder, path, code)
        return code

    compile.__wrapped__ = original  # type: ignore[attr-defined]
    return compile


def _marked_expression(original: Callable[..., Any]) -> Callable[..., Any]:
    def compile_expression(self: Any, source: str, *args: Any, **kwargs: Any) -> Any:
        token = _EXPRESSION.set(source if isinstance(source, str) else None)
        try:
            return original(self, source, *args, **kwargs)
        finally:
            _EXPRESSION.reset(token)

    compile_expression.__wrapped__ = original  # type: ignore[attr-defined]
    return compile_expression


def install(warn: Callable[[str], Any] | None = None) -> str | None:
    """Turn the cache on for Ansible's Jinja environment (once per process); the folder used, or None."""
    if _STATE["installed"]:
        return _STATE["dir"]
    _STATE["installed"] = True
    folder = ready_folder(ENV_VAR, "jinja_code", "Jinja code cache", warn)
    if folder is None:
        return None
    from ansible._internal._templating._jinja_bits import AnsibleEnvironment

    AnsibleEnvironment.compile = _cached_compile(AnsibleEnvironment.compile)  # type: ignore[method-assign]
    AnsibleEnvironment.compile_expression = _marked_expression(  # type: ignore[method-assign]
        AnsibleEnvironment.compile_expression)
    _STATE["dir"] = folder
    return folder
