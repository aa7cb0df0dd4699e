"""effdet_stage: run one step of the effdet stages in the lab container, as
the lab user, and fail with the step's own words.

    - effdet_stage:
        run: [effdetlab.stages, export, --config, "{{ effdet_tasks_train_ctr }}/export.config.json"]
        what: the export

is `python -m effdetlab.stages export --config ...` through
community.docker.docker_container_exec, with the container, user,
environment and interpreter every stage shares (effdet_tasks_container,
effdet_tasks_user, effdet_tasks_exec_env, effdet_tasks_python). A step that
exits non-zero fails the task with "<what> on <host> failed (exit N): <its
last 'error:' line>" (else the last lines of stderr, else of stdout);
`fail: false` returns the result for the caller to read instead.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ansible.plugins.action import ActionBase

EXEC_MODULE = "community.docker.docker_container_exec"
SHARED = {"container": "effdet_tasks_container", "user": "effdet_tasks_user", "env": "effdet_tasks_exec_env"}
TAIL_LINES = 5


def exec_error(result: Mapping[str, Any], what: str) -> str:
    """'<what> failed (exit N): <reason>' for a failed exec's result."""
    lines = [line.strip() for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    if not lines:
        lines = [line.strip() for line in str(result.get("stdout") or "").splitlines() if line.strip()]
    own = [line for line in lines if "error:" in line]
    reason = own[-1] if own else " / ".join(lines[-TAIL_LINES:]) or "no output"
    return f"{what} failed (exit {result.get('rc', '?')}): {reason}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("run", "what", "fail"))

    def _shared(self, name: str) -> Any:
        return self._templar.resolve_variable_expression(name)

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        run: List[str] = [str(a) for a in self._task.args.get("run") or []]
        what = str(self._task.args.get("what") or (run[0] if run else "the step"))
        fail = self._task.args.get("fail", True)
        if not run:
            return {**result, "failed": True, "msg": "effdet_stage needs `run`: the module and its arguments"}
        args = {key: self._shared(var) for key, var in SHARED.items()}
        args["argv"] = [str(self._shared("effdet_tasks_python")), "-m", *run]
        exec_result = self._execute_module(module_name=EXEC_MODULE, module_args=args, task_vars=task_vars)
        result.update(exec_result)
        if not exec_result.get("failed") and exec_result.get("rc", 0) == 0:
            return result
        host = (task_vars or {}).get("inventory_hostname", "?")
        message = exec_error(exec_result, f"{what} on {host}")
        if exec_result.get("rc") is None:  # the exec itself failed: no container, no docker
            message = f"{what} on {host} could not run: {exec_result.get('msg', 'no message')}"
        if fail:
            result.update(failed=True, msg=message)
        else:
            result.update(failed=False, msg=message)
        return result
