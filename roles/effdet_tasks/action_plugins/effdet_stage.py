"""effdet_stage: run one step of the effdet stages in the lab container, as
the lab user, and fail with the step's own words.

    - effdet_stage:
        run: [effdetlab.stages, export, --config, "{{ effdet_tasks_train_ctr }}/export.config.json"]
        what: the export
        queue: {name: "{{ effdet_tasks_slurm_job_prefix }}-export", wait: true}

is `python -m effdetlab.stages export --config ...` through
community.docker.docker_container_exec, with the container, user,
environment and interpreter every stage shares (effdet_tasks_container,
effdet_tasks_user, effdet_tasks_exec_env, effdet_tasks_python). A step that
exits non-zero fails the task with "<what> on <host> failed (exit N): <its
last 'error:' line>" (else the last lines of stderr, else of stdout);
`fail: false` returns the result for the caller to read instead.

A step given `queue` is one of the heavy ones. With effdet_tasks_executor:
slurm it is submitted with sbatch instead (plugins/module_utils/slurm_job.py
writes the job: `docker run` of the lab container's image, its GPUs the ones
Slurm allocated). `queue` says how:
  name        the job's name (a job of that name already queued or running is
              followed, not submitted again, unless `wait` or `array`)
  wait        wait for the job's end (sbatch --wait) and return its stdout and
              stderr as an exec would; a failure also names Slurm's state and reason
  gpus        GPUs per job (--gres gpu:N; 0: none); default effdet_tasks_slurm_gpus
  pin         run on this host's node (default true: its data and model are here)
  array       N: a job array of tasks 0..N-1, anywhere in the partition
  exclusive   the whole node per job (a benchmark's measurement to itself)
  exclude     nodes the job must not use
Without `wait` the result carries `slurm_job` (the id) for effdet_follow or
effdet_slurm_wait to follow. A job runs its step in the foreground (a
`--detach` in `run` is dropped: the job is what runs detached). In check mode
nothing is submitted.
"""
from __future__ import annotations

import os
import runpy
from typing import Any, Dict, List, Mapping, Optional

from ansible.plugins.action import ActionBase

try:
    from ansible_collections.effdet_lab.lab.plugins.module_utils import slurm_job
except ImportError:  # the plain repository (roles_path=roles): the same file, by path
    slurm_job = runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                            "../../../plugins/module_utils/by_path.py"))["load"]("slurm_job")

EXEC_MODULE = "community.docker.docker_container_exec"
COMMAND_MODULE = "ansible.legacy.command"
SHARED = {"container": "effdet_tasks_container", "user": "effdet_tasks_user", "env": "effdet_tasks_exec_env"}
TAIL_LINES = 5
QUEUE_KEYS = frozenset(("name", "wait", "gpus", "pin", "array", "exclusive", "exclude"))


def truthy(value: Any) -> bool:
    """A task argument or variable as a bool: templated values may arrive as 'True'."""
    return str(value).strip().lower() in ("true", "1", "yes")


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
    _VALID_ARGS = frozenset(("run", "what", "fail", "queue"))

    def _shared(self, name: str) -> Any:
        return self._templar.resolve_variable_expression(name)

    def _command(self, argv: List[str], task_vars: Optional[Dict[str, Any]], stdin: Optional[str] = None
                 ) -> Dict[str, Any]:
        args: Dict[str, Any] = {"argv": argv}
        if stdin is not None:
            args.update(stdin=stdin, stdin_add_newline=False)
        return self._execute_module(module_name=COMMAND_MODULE, module_args=args, task_vars=task_vars)

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        run: List[str] = [str(a) for a in self._task.args.get("run") or []]
        what = str(self._task.args.get("what") or (run[0] if run else "the step"))
        fail = self._task.args.get("fail", True)
        queue = self._task.args.get("queue")
        if not run:
            return {**result, "failed": True, "msg": "effdet_stage needs `run`: the module and its arguments"}
        host = (task_vars or {}).get("inventory_hostname", "?")
        if queue and self._shared("effdet_tasks_executor") == "slurm":
            unknown = set(queue) - QUEUE_KEYS
            if unknown or not queue.get("name"):
                return {**result, "failed": True, "msg": f"effdet_stage queue: needs a name; unknown keys {sorted(unknown)}"}
            return self._submit(result, [a for a in run if a != "--detach"], what, host, queue, fail, task_vars)
        args = {key: self._shared(var) for key, var in SHARED.items()}
        args["argv"] = [str(self._shared("effdet_tasks_python")), "-m", *run]
        exec_result = self._execute_module(module_name=EXEC_MODULE, module_args=args, task_vars=task_vars)
        result.update(exec_result)
        if not exec_result.get("failed") and exec_result.get("rc", 0) == 0:
            return result
        message = exec_error(exec_result, f"{what} on {host}")
        if exec_result.get("rc") is None:  # the exec itself failed: no container, no docker
            message = f"{what} on {host} could not run: {exec_result.get('msg', 'no message')}"
        result.update(failed=bool(fail), msg=message)
        return result

    # ----------------------------------------------------------------- Slurm

    def _submit(self, result: Dict[str, Any], run: List[str], what: str, host: str, queue: Mapping[str, Any],
                fail: Any, task_vars: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        name = str(queue["name"])
        wait = truthy(queue.get("wait", False))
        array = int(queue.get("array") or 0)
        if self._task.check_mode:
            return {**result, "changed": True, "skipped": False,
                    "msg": f"check mode: {what} would be submitted to Slurm as job {name}"}
        if not wait and not array:
            found = self._command(["squeue", "--noheader", "--name", name, "--format", "%i|%T"], task_vars)
            for line in str(found.get("stdout") or "").splitlines():
                job, _, state = line.strip().partition("|")
                if job.isdigit() and state not in slurm_job.ENDED_STATES:
                    return {**result, "changed": False, "slurm_job": job, "slurm_state": state,
                            "slurm_output": slurm_job.output_paths(self._log_dir(), name, job, False),
                            "msg": f"{what}: Slurm job {job} ({name}) is already {state}; following it"}
        spec = slurm_job.JobSpec(
            what=f"{what} on {host}", container=str(self._shared("effdet_tasks_container")),
            user=str(self._shared("effdet_tasks_user")), python=str(self._shared("effdet_tasks_python")),
            argv=run, env={str(k): str(v) for k, v in (self._shared("effdet_tasks_exec_env") or {}).items()},
            docker_gpus=truthy(self._shared("effdet_tasks_slurm_docker_gpus_resolved")))
        argv = slurm_job.sbatch_argv(
            name, str(self._shared("effdet_tasks_slurm_partition")), self._log_dir(),
            node=str(self._shared("effdet_tasks_slurm_node")) if truthy(queue.get("pin", not array)) else None,
            gpus=int(queue.get("gpus", self._shared("effdet_tasks_slurm_gpus"))),
            cpus=int(self._shared("effdet_tasks_slurm_cpus_per_task")), exclusive=truthy(queue.get("exclusive", False)),
            array=array, wait=wait, exclude=[str(n) for n in queue.get("exclude") or []])
        submitted = self._command(argv, task_vars, stdin=slurm_job.job_script(spec))
        try:
            job = slurm_job.job_id(submitted.get("stdout", ""))
        except ValueError:
            return {**result, "failed": True, "sbatch": argv,
                    "msg": exec_error(submitted, f"submitting {what} on {host} to Slurm (sbatch)")}
        paths = slurm_job.output_paths(self._log_dir(), name, job, bool(array))
        result.update(changed=True, slurm_job=job, slurm_output=paths, sbatch=argv)
        if not wait:
            result["msg"] = f"{what}: submitted as Slurm job {job} ({name})"
            return result
        out = self._command(["cat", paths["out"]], task_vars)
        err = self._command(["cat", paths["err"]], task_vars)
        record = slurm_job.parse_records(self._command(
            slurm_job.scontrol_argv(job), task_vars).get("stdout", ""))
        rc = int(submitted.get("rc", 1))
        result.update(rc=rc, stdout=out.get("stdout", ""), stdout_lines=out.get("stdout_lines", []),
                      stderr=err.get("stdout", ""), stderr_lines=err.get("stdout_lines", []),
                      slurm_state=record[0].get("JobState") if record else None)
        if rc == 0:
            return result
        slurm_says = slurm_job.outcome(record[0]) if record else f"Slurm job {job}"
        message = exec_error(result, f"{what} on {host}") + f" [{slurm_says}; log {paths['err']}]"
        result.update(failed=bool(fail), msg=message)
        return result

    def _log_dir(self) -> str:
        return str(self._shared("effdet_tasks_slurm_log_dir"))
