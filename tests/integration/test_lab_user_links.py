"""The lab user is not trusted with the host (issue #9, part 2).

The lab user (uid 1001 in the lab container) owns <host_dir>/effdet-lab through
the bind-mounted data folder. From INSIDE the container, as that user, these
tests plant links to host paths where the effdet stages work, then run the
stages through Ansible and check that root on the host followed none of them:

- a run folder that is a link to a host folder (/srv/canary-dir, root, 0755):
  refused, naming the link; the host folder keeps its owner and mode;
- a conversion report that is a link to a host file (/root/canary-shadow, 0600,
  standing in for /etc/shadow): a report only fetched to the controller is
  skipped with a warning naming the link; one the play reads is refused;
- a folder swapped for a link between two runs (the TFRecords folder, pointing
  at a host folder of well-formed fake reports): refused;

and, every time, no watched host path changes owner or mode and the canary's
text reaches nowhere in the controller's results tree. The links are removed
afterwards and a last run of the data stage changes nothing.

lab_container_volumes_nosuid and the lab_image_sudo modes are tested on a
scratch host of their own: test_nosuid_sudo_scratch_host.py.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import REPO, PlaybookRun, docker_sh, run_playbook

HOST = "labhost-1"
SIM = "effdet-lab-host-1"
RUN = f"links-{uuid.uuid4().hex[:8]}"
DATA = "/srv/effdet-lab/data"
RUNS = f"{DATA}/effdet-lab/runs"
CTR_RUNS = "/data/effdet-lab/runs"
CANARY_DIR = "/srv/canary-dir"
CANARY_SHADOW = "/root/canary-shadow"
CANARY = f"CANARY-{uuid.uuid4().hex}"
# Host paths that must keep their owner, group and mode (and the canary files their content).
WATCHED = ["/srv", "/srv/effdet-lab", DATA, CANARY_DIR, f"{CANARY_DIR}/train", f"{CANARY_DIR}/val", "/root",
           CANARY_SHADOW, "/etc/shadow"]


def as_lab_user(script: str) -> subprocess.CompletedProcess[str]:
    """A shell script run inside the lab container as the lab user (not root)."""
    return docker_sh(SIM, f"docker exec -u lcg effdet-lab sh -ec {shlex.quote(script)}")


def host_state() -> str:
    """Owner, group, mode (and size and mtime of files) of the watched host paths and of everything in
    the canary folder, listed without following links."""
    return docker_sh(SIM, f"stat -c '%n %u:%g %a %F' {' '.join(WATCHED)}; "
                          f"find {CANARY_DIR} -printf '%p %U:%G %m %y %s %T@\\n' | sort").stdout


def leaked() -> list[str]:
    """Files anywhere in the controller's results tree that hold the canary's text."""
    found = subprocess.run(["grep", "-rlF", CANARY, str(REPO / "results")], capture_output=True, text=True,
                           check=False)
    return found.stdout.split()


def flat(run: PlaybookRun) -> str:
    return " ".join(run.output.split())


def data_stage(tmp: Path, run_name: str) -> PlaybookRun:
    """The smallest play that touches the run's folders: preflight, setup and the data stage, on one host."""
    extra = tmp / f"{run_name}.json"
    extra.write_text(json.dumps({"effdet_tasks_run_name": run_name}))
    return run_playbook("playbooks/effdet.yml", "--tags", "data", "--limit", HOST, "-e", f"@{extra}", timeout=600)


@pytest.fixture(scope="module")
def links_lab(lab_deployed, tmp_path_factory):
    """The canaries on the host, and one normal run of the data stage."""
    fake_report = json.dumps({"totals": {"images_written": 1}, "label_map": {CANARY: 1}, "note": CANARY})
    docker_sh(SIM, f"""
        rm -rf {CANARY_DIR}; mkdir -p {CANARY_DIR}/train {CANARY_DIR}/val
        for s in train val; do
          printf '%s\\n' {shlex.quote(fake_report)} > {CANARY_DIR}/$s/report.json
          printf '# %s\\n' {CANARY} > {CANARY_DIR}/$s/report.md
        done
        chown -R 0:0 {CANARY_DIR}; chmod 0755 {CANARY_DIR} {CANARY_DIR}/train {CANARY_DIR}/val
        chmod 0600 {CANARY_DIR}/*/*
        printf 'root:%s:19000:0:99999:7:::\\n' {CANARY} > {CANARY_SHADOW}
        chown 0:0 {CANARY_SHADOW}; chmod 0600 {CANARY_SHADOW}
    """)
    tmp = tmp_path_factory.mktemp("links")
    first = data_stage(tmp, RUN)
    assert first.rc == 0, first.tail(4000)
    state = host_state()
    assert f"{CANARY_DIR} 0:0 755" in state and f"{CANARY_SHADOW} 0:0 600" in state, state
    try:
        yield {"tmp": tmp, "before": state, "results": REPO / "results" / "effdet" / RUN / HOST}
    finally:
        as_lab_user(f"rm -rf {CTR_RUNS}/{RUN}-a")
        docker_sh(SIM, f"rm -rf {CANARY_DIR} {CANARY_SHADOW} {RUNS}/{RUN} {RUNS}/{RUN}-a")
        for name in (RUN, f"{RUN}-a"):
            shutil.rmtree(REPO / "results" / "effdet" / name, ignore_errors=True)


def assert_host_untouched(lab: dict) -> None:
    assert host_state() == lab["before"], "a host path changed owner, mode or content"
    assert leaked() == [], f"the canary reached the controller: {leaked()}"


def test_run_folder_planted_as_a_link_to_a_host_folder_is_refused(links_lab):
    """(a) runs/<run> is a link to /srv/canary-dir before the run's first stage: the setup refuses to
    create (and chown to the lab user) anything through it, and names the link."""
    run_a = f"{RUN}-a"
    as_lab_user(f"ln -s {CANARY_DIR} {CTR_RUNS}/{run_a}")
    try:
        run = data_stage(links_lab["tmp"], run_a)
        assert run.rc != 0, run.tail(4000)
        assert (f"refusing {RUNS}/{run_a} (in the lab container: {CTR_RUNS}/{run_a}): it is a symlink to "
                f"'{CANARY_DIR}'; root on the host never follows a link in the lab user's folders") in flat(run), \
            run.tail(4000)
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {CTR_RUNS}/{run_a}")


def test_report_planted_as_a_link_to_a_host_file_is_skipped_or_refused(links_lab):
    """(b) A conversion report replaced by a link to /root/canary-shadow. report.md is only fetched to the
    controller: skipped with a warning naming the link, the controller keeps its real copy. report.json
    is read by the play: refused, naming the link."""
    train, val = f"{CTR_RUNS}/{RUN}/data/train", f"{CTR_RUNS}/{RUN}/data/val"
    kept = (links_lab["results"] / "data" / "train-report.md").read_text()
    as_lab_user(f"mv {train}/report.md {train}/report.md.real; ln -s {CANARY_SHADOW} {train}/report.md")
    try:
        run = data_stage(links_lab["tmp"], RUN)
        assert run.rc == 0, run.tail(4000)
        assert (f"[WARNING]: {HOST}: not fetched to the controller: refusing {RUNS}/{RUN}/data/train/report.md "
                f"(in the lab container: {train}/report.md): it is a symlink to '{CANARY_SHADOW}'") in flat(run), \
            run.tail(4000)
        assert (links_lab["results"] / "data" / "train-report.md").read_text() == kept
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {train}/report.md; mv {train}/report.md.real {train}/report.md")

    as_lab_user(f"mv {val}/report.json {val}/report.json.real; ln -s {CANARY_SHADOW} {val}/report.json")
    try:
        run = data_stage(links_lab["tmp"], RUN)
        assert run.rc != 0, run.tail(4000)
        assert (f"refusing {RUNS}/{RUN}/data/val/report.json (in the lab container: {val}/report.json): it is a "
                f"symlink to '{CANARY_SHADOW}'") in flat(run), run.tail(4000)
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {val}/report.json; mv {val}/report.json.real {val}/report.json")


def test_folder_swapped_for_a_link_between_two_runs_is_refused(links_lab):
    """(c) After a good run, the run's TFRecords folder is swapped for a link to a host folder that holds
    well-formed fake reports (what root reading through it would take for the conversion's): refused at
    the first look into it, nothing of it read, checksummed or fetched."""
    run_dir = f"{CTR_RUNS}/{RUN}"
    as_lab_user(f"mv {run_dir}/data {run_dir}/data.real; ln -s {CANARY_DIR} {run_dir}/data")
    try:
        run = data_stage(links_lab["tmp"], RUN)
        assert run.rc != 0, run.tail(4000)
        assert (f"refusing {RUNS}/{RUN}/data (in the lab container: {run_dir}/data): it is a symlink to "
                f"'{CANARY_DIR}'") in flat(run), run.tail(4000)
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {run_dir}/data; mv {run_dir}/data.real {run_dir}/data")


def test_the_lab_is_normal_again(links_lab):
    """With the links gone, the same run goes through and changes nothing."""
    assert as_lab_user(f"find {CTR_RUNS}/{RUN} -type l").stdout == ""
    run = data_stage(links_lab["tmp"], RUN)
    assert run.rc == 0 and run.changed() == 0, run.tail(4000)
    assert "not fetched" not in run.output
    assert_host_untouched(links_lab)
