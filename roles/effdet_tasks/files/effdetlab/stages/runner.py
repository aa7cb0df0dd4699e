"""Run one automl script as a child process: log everything, hand each line to a callback."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from effdetlab._records import Record

LineFn = Callable[[str, float], None]
# The folder holding the effdetlab package: first on PYTHONPATH for whatever of ours runs
# in another process (a detached stage, a helper module in automl's interpreter).
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def with_pkg_path(env: Mapping[str, str]) -> Dict[str, str]:
    """A copy of env with PKG_ROOT first on its PYTHONPATH."""
    out = dict(env)
    out["PYTHONPATH"] = PKG_ROOT + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    return out


def spawn_stage(stage: str, config_path: str, log_path: str, cwd: str, append: bool) -> subprocess.Popen:
    """`python -m effdetlab.stages STAGE --config CONFIG` in a new session (a detached run
    that outlives the caller), its output into log_path."""
    with open(log_path, "a" if append else "w", encoding="utf-8") as out:
        return subprocess.Popen([sys.executable, "-m", "effdetlab.stages", stage, "--config", config_path],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=with_pkg_path(os.environ), start_new_session=True, cwd=cwd)


class RunResult(Record):
    def __init__(self, returncode: int, duration_s: float, timed_out: bool, output: str) -> None:
        self.returncode = returncode
        self.duration_s = duration_s
        self.timed_out = timed_out
        self.output = output  # this run's output (also in the log file)


def shell_line(argv: List[str], env: Mapping[str, str], cwd: Optional[str] = None) -> str:
    """The command as a person would paste it into a shell (the 'by hand' form)."""
    parts = [f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(a) for a in argv]
    line = " ".join(parts)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


def run_logged(argv: List[str], env_add: Mapping[str, str], log_path: str, *,
               cwd: Optional[str] = None, on_line: Optional[LineFn] = None,
               timeout_s: Optional[float] = None, header: str = "",
               on_start: Optional[Callable[[subprocess.Popen], None]] = None,
               preface: Sequence[str] = ()) -> RunResult:
    """Start argv (env = ours + env_add), append its stdout+stderr to log_path line by line.

    automl runs in our process group, and we lead that group: `kill -- -<our pid>` (or a
    SIGKILL of the group) ends us, automl and any epoch child processes together, and a
    SIGTERM/SIGINT/SIGHUP sent to us alone is passed on to the whole group while we stay
    up to record how it ended. `preface`: our own lines, logged after the command line
    (e.g. the flags left out of it), each starting "# "."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    env = dict(os.environ)
    env.update(env_add)
    chunks: List[str] = []
    if os.getpgrp() != os.getpid():
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"=== effdetlab {header} {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ===\n"
                  f"$ {shell_line(argv, env_add, cwd)}\n")
        for line in preface:
            log.write(f"# {line}\n")
        log.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, errors="replace", bufsize=1)
        if on_start:
            on_start(proc)
        old = {}
        forwarding = []

        def forward(signum: int, _frame: Any) -> None:
            if forwarding:  # our own copy of the group signal
                return
            forwarding.append(signum)
            try:
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpid(), signum)
                else:
                    proc.send_signal(signum)
            except ProcessLookupError:
                pass

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                old[s] = signal.signal(s, forward)
        timed_out = False
        timer = None
        if timeout_s:
            def kill() -> None:
                nonlocal timed_out
                timed_out = True
                forward(signal.SIGTERM, None)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            timer = threading.Timer(timeout_s, kill)
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.time()
                log.write(line)
                log.flush()
                chunks.append(line)
                if on_line:
                    on_line(line, now)
            rc = proc.wait()
        finally:
            if timer:
                timer.cancel()
            for s, h in old.items():
                signal.signal(s, h)
        dur = time.monotonic() - t0
        log.write(f"=== effdetlab {header} exit {rc} after {dur:.1f} s"
                  f"{' (timed out)' if timed_out else ''} ===\n")
    return RunResult(rc, dur, timed_out, "".join(chunks))


def tf_version(python: str) -> Optional[str]:
    """TensorFlow's version as the automl interpreter sees it, from package metadata (no import)."""
    code = ("try:\n"
            "  import importlib.metadata as m; v = m.version; E = m.PackageNotFoundError\n"
            "except ImportError:\n"  # Python 3.6/3.7 (the 2020 TF 2.1 era)
            "  import pkg_resources as r; v = lambda d: r.get_distribution(d).version\n"
            "  E = r.DistributionNotFound\n"
            "for d in ('tensorflow','tensorflow-cpu','tensorflow-gpu','tf-nightly','intel-tensorflow'):\n"
            "  try: print(v(d)); break\n"
            "  except E: pass\n")
    try:
        out = subprocess.run([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    v = out.stdout.strip()
    return v or None


def write_json(path: str, obj: Any) -> None:
    """Atomic write: readers (Ansible's fetch, `status`) never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def proc_start(pid: Optional[int]) -> Optional[str]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None.

    With the pid it names one process: a pid alone may be reused, e.g. after the lab
    container restarted and its processes were numbered anew."""
    if not pid:
        return None
    try:
        with open("/proc/{}/stat".format(pid), encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: Optional[int], start: Optional[str] = None) -> bool:
    """Whether the process runs; with `start` (proc_start's value when it was recorded),
    whether that same process still runs and not a later one that got its pid."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None and proc_start(pid) not in (None, start):
        return False
    # a zombie (exited, not yet reaped) is not running
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def eprint(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)
