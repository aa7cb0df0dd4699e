"""effdet_exec_error: one readable line from a failed docker_container_exec.

A stage that fails inside the lab container says why on stderr, after
TensorFlow's own noise. This picks the stage's own words (its last
"error:" line), or else the last lines of stderr, for the task's message.
"""
from __future__ import annotations

from typing import Any, Mapping

TAIL_LINES = 5


def effdet_exec_error(result: Mapping[str, Any], what: str) -> str:
    """'<what> failed (exit N): <reason>' for a registered exec result."""
    lines = [line.strip() for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    if not lines:
        lines = [line.strip() for line in str(result.get("stdout") or "").splitlines() if line.strip()]
    own = [line for line in lines if "error:" in line]
    reason = own[-1] if own else " / ".join(lines[-TAIL_LINES:]) or "no output"
    rc = result.get("rc", "?")
    return f"{what} failed (exit {rc}): {reason}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"effdet_exec_error": effdet_exec_error}
