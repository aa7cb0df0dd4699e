"""The effdet stages as Slurm jobs: the batch script, the sbatch command line, and
what squeue and scontrol say about a job.

With `effdet_tasks_executor: slurm` the heavy stages (train, export, the
benchmark's exports and points, infer) are not run with `docker exec` in the
lab container but submitted with sbatch. Each job runs the lab container's own
image with `docker run`, sharing the lab container's volumes (the data folder),
PID namespace (so the stage runner's status, stop and the controller's
follower see the job's processes as today) and network, as the lab user, and
with the interpreter as its entrypoint (the image's own entrypoint sets up
the container's sshd as root, which a job neither needs nor may do), and
with `--gpus "device=$SLURM_JOB_GPUS"`: only the GPUs Slurm allocated. A
job that Slurm cancels (scancel, a node taken down, a time limit) stops its
container: the script traps the signal and runs `docker stop`, since killing
the docker client alone would leave the container running.

The script goes to sbatch on stdin (Slurm keeps it in its own root-owned
spool), and its output to root-only files, so nothing a lab user can write is
ever run or followed by root. Pure Python 3.6+, no Ansible imports: the action
plugins load it like plugins/module_utils/slurm_state.py, and
tests/unit/test_slurm_job.py runs it on recorded real outputs.
"""
import re
import shlex
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

# Job states (scontrol's JobState, squeue's %T) after which the job runs no more.
ENDED_STATES = frozenset(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                          "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"))
# States of a job that waits in the queue (its reason says for what).
QUEUED_STATES = frozenset(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"))
# `squeue --noheader --array --format` of one job (or every task of an array):
# the task id (N/A for a job that is no array), state, node and reason.
SQUEUE_FORMAT = "%K|%T|%N|%r"
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


class JobSpec(NamedTuple):
    """What one stage's job runs: `python -m <argv>` in the lab container's image."""
    what: str                    # "the export", for the script's comment and for messages
    container: str               # the lab container: its image, volumes, PID and network namespaces
    user: str                    # uid:gid of the lab user
    python: str                  # the interpreter in the image
    argv: Sequence[str]          # what follows `python -m`
    env: Mapping[str, str]       # the stages' environment (effdet_tasks_exec_env)
    docker_gpus: bool            # pass Slurm's GPUs to docker run (hosts with the NVIDIA runtime)


def job_script(spec: JobSpec) -> str:
    """The batch script of one job (bash; every value quoted)."""
    q = shlex.quote
    env = " ".join("-e {}".format(q("{}={}".format(k, v))) for k, v in sorted(spec.env.items()))
    gpus = ('if [ -n "${SLURM_JOB_GPUS:-}" ]; then gpus=(--gpus "device=${SLURM_JOB_GPUS}"); fi\n'
            if spec.docker_gpus else
            "# No --gpus: effdet_tasks_slurm_docker_gpus is off (a host without the NVIDIA runtime).\n")
    command = " ".join(q(str(a)) for a in ["-m", *spec.argv])
    return (
        "#!/bin/bash\n"
        "# effdet-lab: {what}, as a Slurm job in the lab container's image.\n"
        "# Submitted by Ansible (effdet_tasks_executor: slurm); see roles/effdet_tasks/README.md.\n"
        "set -u\n"
        "container={container}\n"
        'name="effdet-job-${{SLURM_JOB_ID}}"\n'
        "image=$(docker inspect --format '{{{{.Image}}}}' \"$container\") || {{\n"
        '  echo "effdet-lab: error: the lab container $container is not running on $(hostname)" >&2; exit 3; }}\n'
        "shm=$(docker inspect --format '{{{{.HostConfig.ShmSize}}}}' \"$container\")\n"
        "gpus=()\n"
        "{gpus}"
        'docker run --rm --name "$name" --volumes-from "$container" --pid "container:$container" \\\n'
        '  --network "container:$container" --shm-size "$shm" --user {user} --entrypoint {python} \\\n'
        "  -e SLURM_JOB_ID -e SLURM_ARRAY_JOB_ID -e SLURM_ARRAY_TASK_ID -e SLURM_JOB_GPUS {env} \\\n"
        '  ${{gpus[@]+"${{gpus[@]}}"}} "$image" {command} &\n'
        "child=$!\n"
        "# Slurm cancels with SIGTERM to this script: stop the container too (SIGKILL follows).\n"
        "trap 'docker stop --time 20 \"$name\" >/dev/null 2>&1' TERM INT HUP\n"
        'wait "$child"\n'
        "rc=$?\n"
        'if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then wait "$child"; rc=$?; fi\n'
        'exit "$rc"\n'
    ).format(what=spec.what.replace("\n", " "), container=q(spec.container), user=q(spec.user),
             python=q(spec.python), gpus=gpus,
             env=env, command=command)


def output_paths(log_dir: str, name: str, job: str, array: bool) -> Dict[str, str]:
    """The job's stdout and stderr files, as sbatch patterns (`pattern`) or for job `job`."""
    stem = "{}/{}-{}".format(log_dir.rstrip("/"), name, "%A_%a" if array else "%j")
    out = {"out": stem + ".out", "err": stem + ".err"}
    if job:
        out = {k: v.replace("%j", job) for k, v in out.items()}
    return out


def sbatch_argv(name: str, partition: str, log_dir: str, node: Optional[str] = None, gpus: int = 0,
                cpus: int = 0, exclusive: bool = False, array: int = 0, wait: bool = False,
                exclude: Sequence[str] = ()) -> List[str]:
    """sbatch's command line for a script on stdin. `node` pins the job to one node (the
    host whose data and model it uses); `array` > 0 submits tasks 0..array-1."""
    paths = output_paths(log_dir, name, "", array > 0)
    argv = ["sbatch", "--parsable", "--job-name", name, "--partition", partition, "--chdir", "/",
            "--output", paths["out"], "--error", paths["err"], "--no-requeue"]
    if node:
        argv += ["--nodelist", node]
    if exclude:
        argv += ["--exclude", ",".join(exclude)]
    if gpus > 0:
        argv += ["--gres", "gpu:{}".format(gpus)]
    if cpus > 0:
        argv += ["--cpus-per-task", str(cpus)]
    if exclusive:
        argv.append("--exclusive")
    if array > 0:
        argv += ["--array", "0-{}".format(array - 1)]
    if wait:
        argv.append("--wait")
    return argv


def squeue_argv(job: str, array: bool = False) -> List[str]:
    """squeue's command line for one job (with `array`, each of its tasks), in SQUEUE_FORMAT."""
    return ["squeue", "--noheader", *(["--array"] if array else []), "--jobs", str(job), "--format", SQUEUE_FORMAT]


def scontrol_argv(job: str) -> List[str]:
    """scontrol's command line for one job's record (an array's: one line per task), for parse_records."""
    return ["scontrol", "--oneliner", "show", "job", str(job)]


def job_id(sbatch_stdout: str) -> str:
    """The job id `sbatch --parsable` printed ('12' or '12;cluster')."""
    for line in reversed(str(sbatch_stdout or "").strip().splitlines()):
        first = line.strip().split(";", 1)[0]
        if first.isdigit():
            return first
    raise ValueError("sbatch printed no job id: {!r}".format(str(sbatch_stdout)[-200:]))


def parse_records(scontrol: str) -> List[Dict[str, str]]:
    """`scontrol --oneliner show job ID`: one dict per job (or array task), key -> value."""
    out = []
    for line in str(scontrol or "").splitlines():
        line = line.strip()
        if not line.startswith("JobId="):
            continue
        marks = [(m.start(1), m.group(1)) for m in _KEY.finditer(line)]
        record = {}
        for i, (start, key) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else len(line)
            record[key] = line[start + len(key) + 1:end].strip()
        out.append(record)
    return out


class QueueEntry(NamedTuple):
    task: Optional[int]   # the array task id; None for a job that is no array
    state: str
    node: str
    reason: str


def parse_squeue(squeue: str) -> List[QueueEntry]:
    """`squeue --noheader --array --format '%K|%T|%N|%r'` lines."""
    out = []
    for line in str(squeue or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[1]:
            continue
        task = int(parts[0]) if parts[0].isdigit() else None
        out.append(QueueEntry(task, parts[1], parts[2], parts[3]))
    return out


def outcome(record: Mapping[str, str]) -> str:
    """One line: 'Slurm job 12 FAILED on node-2 (exit 1:0, reason NonZeroExitCode)'."""
    job = record.get("JobId", "?")
    if record.get("ArrayTaskId") and record.get("ArrayJobId"):
        job = "{}_{}".format(record["ArrayJobId"], record["ArrayTaskId"])
    node = record.get("NodeList") or record.get("BatchHost") or ""
    parts = ["exit " + record.get("ExitCode", "?")]
    reason = record.get("Reason", "")
    if reason and reason != "None":
        parts.append("reason " + reason)
    return "Slurm job {} {}{} ({})".format(job, record.get("JobState", "?"),
                                           " on " + node if node and node != "(null)" else "", ", ".join(parts))
