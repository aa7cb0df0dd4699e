"""The slurm stage on a 2-node cluster of bare simulated hosts (scratch 9 and 10).

scratch-9 is the controller and a node with 1 GPU, scratch-10 a node with 2.
The GPUs are labbox/gpu_standin.py's test double (device files and a recorded
real `nvidia-smi -L`); Slurm, munge and every job are real (Debian bookworm's
slurm-wlm 22.05). In file order, on the same two hosts:

1. a bad value is refused before anything changes;
2. a host that already has another Slurm release (23.02.7), or one too old
   for /etc/slurm (19.05), is refused before anything changes on any host
   (the double: a slurm-client package of that version built here);
3. check mode on the bare hosts predicts the install and changes nothing;
4. the cluster converges twice, the second run with changed=0, both nodes
   idle with the GRES nvidia-smi reports and one munge key, and the verifier
   (tests/infra/test_slurm.py) passes on both hosts;
5. jobs run for real, and two jobs that ask for the same GPU run one after
   the other (Slurm's own record of their times, jobcomp/filetxt);
6. a node taken down makes the play and the verifier fail, naming it (and,
   in the play, Slurm's reason);
Then the effdet stages as Slurm jobs (about 15 minutes of both cores; EFFDET_LAB_SLURM_JOBS=0 skips them):

7. with effdet_tasks_executor: slurm, site.yml takes both hosts from bare to
   trained and benchmarked through the queue: each host's training is a
   Slurm job on its node, the 4-point benchmark sweep one job array whose
   tasks Slurm deals out over both nodes, and the results reach the
   controller as with docker exec; a second run submits nothing and
   changes nothing;
8. a benchmark task that fails (every measurement cut off after 1 s) fails
   the play naming each task, its point, Slurm's words and its last log lines;
9. a node taken down in the middle of its training job fails that host with
   Slurm's state and reason and the job's last log lines, stops the job's
   container, and the other node's training finishes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, PlaybookRun, ScratchHost, playbook_command, remove_scratch_host, run_playbook, start_scratch_host

INDEXES = (9, 10)
GPUS = (1, 2)
PLAY = "playbooks/slurm.yml"


@dataclass
class Cluster:
    controller: ScratchHost
    node: ScratchHost
    inventory: Path

    @property
    def hosts(self) -> tuple[ScratchHost, ScratchHost]:
        return (self.controller, self.node)

    def play(self, *args: str, playbook: str = PLAY) -> PlaybookRun:
        return run_playbook(playbook, *args, timeout=1800, inventory=self.inventory)

    def verify(self) -> subprocess.CompletedProcess[str]:
        """tests/infra/test_slurm.py (what playbooks/verify.yml runs) against the cluster."""
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                               "--hosts=ansible://gpu_hosts", f"--ansible-inventory={self.inventory}",
                               "tests/infra/test_slurm.py"], cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)


@pytest.fixture(scope="module")
def cluster(lab_hosts: list[str]) -> Iterator[Cluster]:
    """Two bare scratch hosts with stand-in GPUs, in one inventory with a slurm_controller group."""
    from labbox import gpu_standin

    hosts = [start_scratch_host(index) for index in INDEXES]
    folder = hosts[0].inventory
    inventory = yaml.safe_load((folder / "hosts.yml").read_text())
    members = inventory["all"]["children"]["gpu_hosts"]["hosts"]
    for host, count in zip(hosts, GPUS):
        port = yaml.safe_load((host.inventory / "hosts.yml").read_text())
        members[host.name] = port["all"]["children"]["gpu_hosts"]["hosts"][host.name]
        members[host.name].update(gpu_standin.install(host.container, count))
    inventory["all"]["children"]["slurm_controller"] = {"hosts": {hosts[0].name: {}}}
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    try:
        yield Cluster(hosts[0], hosts[1], folder)
    finally:
        for host in hosts:
            remove_scratch_host(host)


def installed(host: ScratchHost, package: str) -> bool:
    out = host.sh(f"dpkg-query -W -f='${{db:Status-Status}}' {package} 2>/dev/null || true").stdout
    return out.strip() == "installed"


def untouched(cluster: Cluster) -> None:
    for host in cluster.hosts:
        assert not installed(host, "slurmd"), host.name
        assert not installed(host, "munge"), host.name
        assert host.sh("test -e /etc/slurm/slurm.conf", check=False).returncode != 0, host.name


def test_bad_value_is_refused_before_any_change(cluster: Cluster) -> None:
    run = cluster.play("-e", "slurm_partition_name=gpu;reboot")
    assert run.rc != 0
    assert 'slurm_partition_name = "gpu;reboot" breaks the rule: a partition name' in run.output
    untouched(cluster)


@pytest.mark.parametrize("version,message", [
    ("23.02.7-0effdetlab1", "Slurm's releases differ between the hosts: 22.05.8 on {controller}; 23.02.7 on {node}"),
    ("19.05.5-1effdetlab1", "Slurm 19.05.5 on {node} is older than 20.11, the first release that reads /etc/slurm"),
])
def test_another_slurm_release_is_refused_before_any_change(cluster: Cluster, version: str, message: str) -> None:
    """The double: a slurm-client package of another release, built here and installed on the node."""
    node = cluster.node
    node.sh(f"""
        mkdir -p /tmp/fake/DEBIAN
        cat > /tmp/fake/DEBIAN/control <<'CONTROL'
Package: slurm-client
Version: {version}
Architecture: all
Maintainer: effdet-lab tests <tests@effdet-lab.invalid>
Description: effdet-lab test double: a slurm-client of another Slurm release
CONTROL
        dpkg-deb --build /tmp/fake /tmp/fake.deb >/dev/null
        dpkg -i /tmp/fake.deb >/dev/null
    """)
    try:
        run = cluster.play()
        assert run.rc != 0
        assert message.format(controller=cluster.controller.name, node=node.name) in run.output, run.tail(3000)
        assert run.recap[cluster.controller.name]["failed"] == 1, run.recap
        assert not installed(cluster.controller, "slurmd")
        assert not installed(cluster.controller, "munge")
    finally:
        node.sh("dpkg -r slurm-client >/dev/null")  # the test's own double; the role never removes a package
    untouched(cluster)


def test_check_mode_on_bare_hosts_changes_nothing(cluster: Cluster) -> None:
    run = cluster.play("--check", "--diff")
    assert run.rc == 0, run.tail(3000)
    assert all(r["changed"] > 0 for r in run.recap.values()), run.recap
    untouched(cluster)


def sinfo(cluster: Cluster) -> dict[str, str]:
    out = cluster.controller.sh("sinfo --noheader --Node --format '%N %t'").stdout
    return dict(line.split() for line in out.splitlines())


def test_converges_twice(cluster: Cluster) -> None:
    first = cluster.play()
    assert first.rc == 0, first.tail(4000)
    assert first.changed() > 0
    started = time.monotonic()
    second = cluster.play()
    took = time.monotonic() - started
    assert second.rc == 0, second.tail(4000)
    assert second.changed() == 0, second.recap
    print(f"slurm stage, 2 nodes: no-change re-run {took:.1f} s")
    assert sinfo(cluster) == {cluster.controller.name: "idle", cluster.node.name: "idle"}
    for host, count in zip(cluster.hosts, GPUS):
        gres = cluster.controller.sh(f"scontrol show node {host.name} | grep -o 'Gres=[^ ]*'").stdout.strip()
        assert gres == f"Gres=gpu:tesla_v100_sxm2_16gb:{count}", host.name
    keys = {host.sh("sha256sum /etc/munge/munge.key").stdout.split()[0] for host in cluster.hosts}
    assert len(keys) == 1
    # Both nodes run the same slurm.conf; each its own gres.conf.
    assert cluster.controller.read("/etc/slurm/slurm.conf") == cluster.node.read("/etc/slurm/slurm.conf")
    assert "File=/dev/effdet-lab-standin/nvidia1" in cluster.node.read("/etc/slurm/gres.conf")
    # The verifier agrees: daemons, munge, the controller reached, every node ready with every GPU.
    verify = cluster.verify()
    assert verify.returncode == 0 and "8 passed" in verify.stdout, verify.stdout[-3000:]


def jobcomp(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Slurm's record of every finished job (jobcomp/filetxt), by job id."""
    records = {}
    for line in cluster.controller.read("/var/log/slurm/jobcomp.log").splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        records[fields["JobId"]] = fields
    return records


def wait_done(cluster: Cluster, jobs: list[str], timeout: float = 120) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = jobcomp(cluster)
        if all(job in done for job in jobs):
            return done
        time.sleep(1)
    raise AssertionError(f"jobs {jobs} not done after {timeout} s: {cluster.controller.sh('squeue').stdout}")


def test_jobs_run_and_one_gpu_serves_one_job_at_a_time(cluster: Cluster) -> None:
    ctl = cluster.controller
    submit = "cd /tmp && sbatch --parsable"
    everywhere = ctl.sh(f"{submit} --nodes=2 --wrap 'srun hostname'").stdout.strip()
    gpu_jobs = [ctl.sh(f"{submit} --nodelist={ctl.name} --gres=gpu:1 "
                       "--wrap 'echo gpus=$SLURM_JOB_GPUS; sleep 3'").stdout.strip() for _ in range(2)]
    done = wait_done(cluster, [everywhere, *gpu_jobs])
    assert all(done[job]["JobState"] == "COMPLETED" for job in [everywhere, *gpu_jobs]), done
    assert set(ctl.read(f"/tmp/slurm-{everywhere}.out").split()) == {ctl.name, cluster.node.name}
    assert all(ctl.read(f"/tmp/slurm-{job}.out").strip() == "gpus=0" for job in gpu_jobs)
    first, second = (done[job] for job in gpu_jobs)
    assert second["StartTime"] >= first["EndTime"], (first, second)


def test_a_node_taken_down_fails_the_play_with_its_reason(cluster: Cluster) -> None:
    ctl, node = cluster.controller, cluster.node
    ctl.sh(f"scontrol update nodename={node.name} state=down reason='disk replaced, test'")
    try:
        run = cluster.play("-e", "slurm_node_wait_seconds=4")
        assert run.rc != 0
        assert f"{node.name} (down: disk replaced, test) in partition gpu" in run.output, run.tail(3000)
        assert run.changed() == 0
        verify = cluster.verify()
        assert verify.returncode != 0
        assert f"node {node.name} is down" in verify.stdout, verify.stdout[-3000:]
    finally:
        ctl.sh(f"scontrol update nodename={node.name} state=resume")
    # Resumed, the node is back once the controller hears it again (idle* until then).
    deadline = time.monotonic() + 60
    while sinfo(cluster)[node.name] != "idle" and time.monotonic() < deadline:
        time.sleep(1)
    assert sinfo(cluster)[node.name] == "idle"


# ---------------------------------------------------------------- the effdet stages as Slurm jobs

RUN = "pytest-slurm"
# The stages as Slurm jobs take both hosts from bare to trained and benchmarked:
# about 15 minutes of both cores, in `make test`'s second lane. For a quicker
# local run of the slurm stage alone:
#   EFFDET_LAB_SLURM_JOBS=0 .venv/bin/python -m pytest tests/integration/test_slurm.py
slurm_jobs = pytest.mark.skipif(os.environ.get("EFFDET_LAB_SLURM_JOBS") == "0",
                                reason="the stages as Slurm jobs: EFFDET_LAB_SLURM_JOBS=0 skips them")
RESULTS = REPO / "results" / "effdet"
# 4 points (batch 1 and 2, threads 1 and 2, automl's bm), 2 repeats each.
SWEEP = {"effdet_tasks_executor": "slurm", "effdet_tasks_run_name": RUN, "effdet_tasks_tflite": False,
         "effdet_tasks_benchmark_modes": ["bm"], "effdet_tasks_benchmark_batch_sizes": [1, 2],
         "effdet_tasks_benchmark_threads": [1, 2], "effdet_tasks_benchmark_runs": 3,
         "effdet_tasks_benchmark_repeats": 2, "effdet_tasks_slurm_poll_seconds": 2}


def vars_file(tmp_path: Path, **overrides: object) -> str:
    path = tmp_path / f"slurm-effdet-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({**SWEEP, **overrides}))
    return f"@{path}"


def effdet_jobs(cluster: Cluster, run: str) -> dict[str, dict[str, str]]:
    """Slurm's record of the effdet jobs of run `run`, by job id (jobcomp/filetxt)."""
    return {job: rec for job, rec in jobcomp(cluster).items() if rec.get("Name", "").startswith(f"effdet-{run}-")}


@slurm_jobs
def test_effdet_stages_run_as_slurm_jobs_through_site_yml(cluster: Cluster, tmp_path: Path) -> None:
    shutil.rmtree(RESULTS / RUN, ignore_errors=True)
    extra = vars_file(tmp_path)
    started = time.monotonic()
    # (The verifier's Slurm checks ran on this cluster above: test_converges_twice.)
    first = cluster.play("-e", extra, "--skip-tags", "verify", playbook="site.yml")
    took = time.monotonic() - started
    assert first.rc == 0, first.tail(6000)
    jobs = effdet_jobs(cluster, RUN)
    names = sorted(rec["Name"].rsplit("-", 1)[-1] for rec in jobs.values())
    # Per host: its training, its export, the benchmark's exports, its inference; one array of 4 tasks.
    assert names.count("train") == 2 and names.count("export") == 2 and names.count("infer") == 2, names
    array = [rec for rec in jobs.values() if rec["Name"].endswith("-bench")]
    assert len(array) == 4, jobs
    assert all(rec["JobState"] == "COMPLETED" for rec in jobs.values()), jobs
    trains = [rec for rec in jobs.values() if rec["Name"].endswith("-train")]
    assert sorted(rec["NodeList"] for rec in trains) == sorted(h.name for h in cluster.hosts)
    # Both hosts train the same configuration (one train id). A job pinned to a node names the node:
    # a start that finds its own job still queued follows it, and must never take the other host's
    # for its own (it did once in CI: scratch-10 followed scratch-9's training and failed).
    pinned = [rec for rec in jobs.values() if not rec["Name"].endswith("-bench")]
    assert all(f"-{rec['NodeList']}-" in rec["Name"] for rec in pinned), sorted(r["Name"] for r in pinned)
    print(f"\n[slurm effdet] site.yml on 2 bare hosts, stages as Slurm jobs: {took:.0f} s; array tasks on "
          + ", ".join(sorted(rec["NodeList"] for rec in array)))
    # Training progress came back as with docker exec.
    for host in cluster.hosts:
        progress = (RESULTS / RUN / host.name / "train" / "progress.jsonl").read_text().splitlines()
        assert progress and "loss" in json.loads(progress[-1]), host.name
        assert json.loads((RESULTS / RUN / host.name / "export" / "export.json").read_text())["ok"] is True
    # The sweep: every point measured twice, on the node its task ran on, and merged into one report.
    records = [r for host in cluster.hosts
               for r in json.loads((RESULTS / RUN / host.name / "benchmark" / "benchmark.json").read_text())]
    keys = sorted((r["batch"], r["threads"], r["repeat"]) for r in records if r["mode"] == "bm")
    assert keys == sorted((b, t, r) for b in (1, 2) for t in (1, 2) for r in (1, 2)), keys
    assert all(r["ok"] for r in records), [r for r in records if not r["ok"]]
    by_node = {rec["NodeList"]: rec for rec in array}
    assert {r["host"] for r in records} == set(by_node), "each record names the node whose task measured it"
    merged = json.loads((RESULTS / RUN / "benchmark.json").read_text())
    assert len(merged["rows"]) == 4, merged["rows"]
    assert (RESULTS / RUN / "benchmark.md").exists() and (RESULTS / RUN / "benchmark.png").exists()
    # No job container is left behind.
    for host in cluster.hosts:
        assert host.sh("docker ps --all --quiet --filter name=effdet-job-").stdout.strip() == "", host.name

    second = cluster.play("-e", extra, playbook="playbooks/effdet.yml")
    assert second.rc == 0, second.tail(4000)
    assert second.changed() == 0, second.recap
    assert effdet_jobs(cluster, RUN).keys() == jobs.keys(), "a run that changes nothing submits no job"


@slurm_jobs
def test_a_failed_benchmark_task_fails_the_play_naming_it(cluster: Cluster, tmp_path: Path) -> None:
    """Every measurement cut off after 1 s: each array task fails, and the play says which, with Slurm's words."""
    run = cluster.play("--tags", "benchmark", "-e", vars_file(tmp_path, effdet_tasks_stage_timeout_s=1,
                                                             effdet_tasks_benchmark_repeats=1),
                       playbook="playbooks/effdet.yml")
    assert run.rc != 0
    text = " ".join(run.output.split())
    match = re.search(r"The benchmark sweep \(Slurm array (\d+)\) is incomplete: (.*?) logs in", text)
    assert match, run.tail(4000)
    array, said = match.groups()
    for task, label in enumerate(["batch 1 threads 1", "batch 1 threads 2", "batch 2 threads 1", "batch 2 threads 2"]):
        assert re.search(rf"task {task} \(efficientdet-d0 bm {label}\): Slurm job {array}_{task} FAILED on "
                         r"scratch-(9|10) \(exit 1:0, reason NonZeroExitCode\), last lines: ", said), said
    assert "timed out" in said, said
    assert run.recap[cluster.controller.name]["failed"] == 1, run.recap


@slurm_jobs
def test_a_node_taken_down_mid_job_fails_its_host_and_the_other_finishes(cluster: Cluster, tmp_path: Path) -> None:
    ctl, node = cluster.controller, cluster.node
    # The converted data of the run above; two epochs make a training of its own (another train id).
    run = RUN
    argv, env = playbook_command("playbooks/effdet.yml", "--tags", "train", "-e",
                                 vars_file(tmp_path, effdet_tasks_num_epochs=2), inventory=cluster.inventory)
    with subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as play:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and play.poll() is None:
            running = ctl.sh(f"squeue --noheader --states=RUNNING --nodelist={node.name} --format=%j").stdout
            if f"effdet-{run}-" in running:
                break
            time.sleep(1)
        assert play.poll() is None, "the play ended before the training job ran"
        time.sleep(5)  # in the middle of the job
        ctl.sh(f"scontrol update nodename={node.name} state=down reason='power supply, test'")
        try:
            output, _ = play.communicate(timeout=900)
        finally:
            # (Slurm may have returned the node to service already: then resume is refused.)
            ctl.sh(f"scontrol update nodename={node.name} state=resume", check=False)
    result = PlaybookRun(play.returncode, output)
    assert result.rc != 0
    assert result.recap[node.name]["failed"] == 1, result.recap
    assert result.recap[ctl.name]["failed"] == 0, result.recap
    message = next(line for line in output.splitlines() if "training on " + node.name + " did not finish" in line)
    assert "NODE_FAIL" in message and f"on {node.name}" in message, message
    assert "Last lines" in message or "Runner:" in message, message
    # The other node's training finished, and the cancelled job's container is gone.
    status = json.loads((RESULTS / run / ctl.name / "train" / "train_status.json").read_text())
    assert status["state"] == "finished" and status["train_steps"] == 2 * 4, status
    deadline = time.monotonic() + 60
    while node.sh("docker ps --quiet --filter name=effdet-job-").stdout.strip() and time.monotonic() < deadline:
        time.sleep(1)
    assert node.sh("docker ps --quiet --filter name=effdet-job-").stdout.strip() == ""
    deadline = time.monotonic() + 60
    while sinfo(cluster)[node.name] != "idle" and time.monotonic() < deadline:
        time.sleep(1)
    assert sinfo(cluster)[node.name] == "idle"
