"""Small helpers to run commands and report progress."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".labbox"


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[labbox {stamp}] {message}", file=sys.stderr, flush=True)


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; raise with its output when it fails and check is set."""
    proc = subprocess.run(
        list(args),
        input=input_bytes.decode() if input_bytes is not None else None,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or "") + (proc.stdout or "") if capture else ""
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(args)}\n{detail.strip()}")
    return proc


def docker(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], check=check, capture=capture)


def wait_for(predicate, what: str, timeout: float = 120.0, interval: float = 1.0) -> None:
    """Poll predicate() until it is true, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
