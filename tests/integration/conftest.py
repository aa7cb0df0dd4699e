"""Fixtures for tests that converge the lab-in-a-box with ansible-playbook.

The simulated hosts (labhost-1..N) are shared by the whole session and are
brought up by `python -m labbox up`; a test that needs a bare host asks for
`fresh_hosts`.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "labbox"
HOSTS = int(os.environ.get("LABBOX_TEST_HOSTS", "2"))
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.M)
FAILED_LINE = re.compile(r"^\s*(fatal|failed): \[")
PLAY_LOG_COUNT = itertools.count(1)


@dataclass
class PlaybookRun:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
                for m in RECAP.finditer(self.output)}

    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())

    def failures(self) -> list[str]:
        """Each failed task's header and its `fatal:`/`failed:` lines (up to 1,500 characters each),
        wherever they are in the output."""
        found = []
        for block in re.split(r"\n(?=TASK \[|RUNNING HANDLER \[|PLAY RECAP)", self.output):
            lines = block.splitlines()
            failed = [i for i, line in enumerate(lines) if FAILED_LINE.match(line)]
            if failed:
                found.append("\n".join([lines[0], *lines[failed[0]:]])[:1500])
        return found

    def tail(self, chars: int) -> str:
        """What an assertion shows: every failed task (a long run's failure is often far above its
        end), then the last `chars` characters of the output."""
        failures = self.failures()
        head = "failed tasks:\n" + "\n".join(failures) + "\n... the output's end:\n" if failures else ""
        return head + self.output[-chars:]


def playbook_command(playbook: str, *args: str, inventory: Path = INVENTORY) -> tuple[list[str], dict[str, str]]:
    """The ansible-playbook command line on the lab-in-a-box inventory, and its environment;
    run it from the repo root (its ansible.cfg)."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    return [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), playbook, *args], env


def run_playbook(playbook: str, *args: str, timeout: int = 1800, inventory: Path = INVENTORY) -> PlaybookRun:
    """ansible-playbook from the repo root (its ansible.cfg), output captured."""
    cmd, env = playbook_command(playbook, *args, inventory=inventory)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    run = PlaybookRun(proc.returncode, proc.stdout + proc.stderr)
    keep = os.environ.get("EFFDET_TEST_PLAY_LOGS")  # a folder: every run's whole output, for a post-mortem
    if keep:
        folder = Path(keep)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.strftime('%H%M%S')}-{os.getpid()}-{next(PLAY_LOG_COUNT):03d}-{Path(playbook).stem}-rc{run.rc}"
        (folder / f"{stamp}.log").write_text(f"$ {' '.join(cmd)}\n{run.output}", encoding="utf-8")
    return run


@dataclass
class VerifyRun:
    folder: Path  # results/verify-<stamp>/ of this run
    ran: list[str]  # the checks that ran (not skipped)


def verify_results(run: PlaybookRun) -> VerifyRun:
    """What a passed run of playbooks/verify.yml reported: its own results folder (the play names it;
    verify runs in both lanes of `make test`, so the newest folder may be another run's) and the
    checks that ran, none failed or in error."""
    assert run.rc == 0, run.tail(5000)
    found = re.search(r"details: (\S+/verify-[0-9-]+)\)", run.output)
    assert found, run.tail(3000)
    folder = Path(found.group(1))
    suite = ET.parse(folder / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    return VerifyRun(folder, [case.get("name") for case in suite.iter("testcase") if case.find("skipped") is None])


def docker_sh(container: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A shell script run as root on a simulated host, through the controller's docker."""
    return subprocess.run(["docker", "exec", container, "sh", "-ec", script], capture_output=True, text=True,
                          check=check)


def labbox(*args: str) -> None:
    """python -m labbox, one at a time across the pytest processes of tests/parallel.py (the harness
    starts and replaces shared containers)."""
    lock = REPO / ".labbox" / "harness.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "labbox", *args], cwd=REPO, check=True)


@dataclass
class ScratchHost:
    """A bare simulated host of a test's own, with an inventory of its own.

    labhost-1..N (and what other tests left on them) are not touched; the
    inventory (inventory/.scratch-<index>/) links the lab-in-a-box group_vars.
    """
    name: str
    container: str
    inventory: Path

    def play(self, playbook: str, *args: str, timeout: int = 1800) -> PlaybookRun:
        return run_playbook(playbook, *args, timeout=timeout, inventory=self.inventory)

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker_sh(self.container, script, check=check)

    def read(self, path: str) -> str:
        return self.sh(f"cat {path}").stdout


def start_scratch_host(index: int) -> ScratchHost:
    """Start (or restart, bare) scratch host <index>; the lab-in-a-box services must be up."""
    from labbox import hosts as lb_hosts
    from labbox import inventory as lb_inventory

    key = lb_hosts.ensure_ssh_key()
    host = lb_hosts.start_scratch_host(index, "effdet-lab/simhost:latest", key)
    folder = lb_inventory.write_scratch_inventory([host], key, INVENTORY.parent / f".scratch-{index}")
    return ScratchHost(host.name, host.container, folder)


def remove_scratch_host(host: ScratchHost) -> None:
    from labbox import hosts as lb_hosts

    lb_hosts.remove_host(host.container)
    shutil.rmtree(host.inventory, ignore_errors=True)


@pytest.fixture()
def scratch_host(lab_hosts: list[str], request: pytest.FixtureRequest) -> Iterator[ScratchHost]:
    """A fresh, bare simulated host for this test alone, removed afterwards.

    Its index comes from the test's marker `scratch_index` (default 1), so
    tests that run side by side can keep apart."""
    marker = request.node.get_closest_marker("scratch_index")
    host = start_scratch_host(marker.args[0] if marker else 1)
    try:
        yield host
    finally:
        remove_scratch_host(host)


@pytest.fixture(scope="session")
def lab_hosts() -> list[str]:
    """The simulated hosts, up and in the inventory (not necessarily converged)."""
    labbox("up", "--hosts", str(HOSTS))
    return [f"labhost-{i}" for i in range(1, HOSTS + 1)]


@pytest.fixture(scope="session")
def converged_hosts(lab_hosts: list[str]) -> list[str]:
    """The hosts after the host layer has converged."""
    run = run_playbook("playbooks/host.yml")
    assert run.rc == 0, run.tail(4000)
    return lab_hosts


@pytest.fixture(scope="session")
def lab_deployed(converged_hosts: list[str]) -> dict:
    """The lab image (built once per session) and the lab container on every host."""
    started = time.monotonic()
    image = run_playbook("playbooks/image.yml")
    assert image.rc == 0, image.tail(5000)
    built_s = time.monotonic() - started
    container = run_playbook("playbooks/container.yml")
    assert container.rc == 0, container.tail(5000)
    return {"hosts": converged_hosts, "image_run_s": built_s, "image": image, "container": container}
