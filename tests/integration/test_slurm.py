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
   in the play, Slurm's reason).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, PlaybookRun, ScratchHost, remove_scratch_host, run_playbook, start_scratch_host

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

    def play(self, *args: str) -> PlaybookRun:
        return run_playbook(PLAY, *args, timeout=900, inventory=self.inventory)

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
        assert message.format(controller=cluster.controller.name, node=node.name) in run.output, run.output[-3000:]
        assert run.recap[cluster.controller.name]["failed"] == 1, run.recap
        assert not installed(cluster.controller, "slurmd")
        assert not installed(cluster.controller, "munge")
    finally:
        node.sh("dpkg -r slurm-client >/dev/null")  # the test's own double; the role never removes a package
    untouched(cluster)


def test_check_mode_on_bare_hosts_changes_nothing(cluster: Cluster) -> None:
    run = cluster.play("--check", "--diff")
    assert run.rc == 0, run.output[-3000:]
    assert all(r["changed"] > 0 for r in run.recap.values()), run.recap
    untouched(cluster)


def sinfo(cluster: Cluster) -> dict[str, str]:
    out = cluster.controller.sh("sinfo --noheader --Node --format '%N %t'").stdout
    return dict(line.split() for line in out.splitlines())


def test_converges_twice(cluster: Cluster) -> None:
    first = cluster.play()
    assert first.rc == 0, first.output[-4000:]
    assert first.changed() > 0
    started = time.monotonic()
    second = cluster.play()
    took = time.monotonic() - started
    assert second.rc == 0, second.output[-4000:]
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
        assert f"{node.name} (down: disk replaced, test) in partition gpu" in run.output, run.output[-3000:]
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
