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

The last test takes a scratch host (index 6) through lab_container_volumes_nosuid
(a set-uid-root file in the data folder gives root neither in the container nor
on the host; converges twice with changed=0; back to the default) and through
every lab_image_sudo mode, each followed by playbooks/verify.yml.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

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
    assert first.rc == 0, first.output[-4000:]
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
        assert run.rc != 0, run.output[-4000:]
        assert (f"refusing {RUNS}/{run_a} (in the lab container: {CTR_RUNS}/{run_a}): it is a symlink to "
                f"'{CANARY_DIR}'; root on the host never follows a link in the lab user's folders") in flat(run), \
            run.output[-4000:]
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
        assert run.rc == 0, run.output[-4000:]
        assert (f"[WARNING]: {HOST}: not fetched to the controller: refusing {RUNS}/{RUN}/data/train/report.md "
                f"(in the lab container: {train}/report.md): it is a symlink to '{CANARY_SHADOW}'") in flat(run), \
            run.output[-4000:]
        assert (links_lab["results"] / "data" / "train-report.md").read_text() == kept
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {train}/report.md; mv {train}/report.md.real {train}/report.md")

    as_lab_user(f"mv {val}/report.json {val}/report.json.real; ln -s {CANARY_SHADOW} {val}/report.json")
    try:
        run = data_stage(links_lab["tmp"], RUN)
        assert run.rc != 0, run.output[-4000:]
        assert (f"refusing {RUNS}/{RUN}/data/val/report.json (in the lab container: {val}/report.json): it is a "
                f"symlink to '{CANARY_SHADOW}'") in flat(run), run.output[-4000:]
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
        assert run.rc != 0, run.output[-4000:]
        assert (f"refusing {RUNS}/{RUN}/data (in the lab container: {run_dir}/data): it is a symlink to "
                f"'{CANARY_DIR}'") in flat(run), run.output[-4000:]
        assert_host_untouched(links_lab)
    finally:
        as_lab_user(f"rm -f {run_dir}/data; mv {run_dir}/data.real {run_dir}/data")


def test_the_lab_is_normal_again(links_lab):
    """With the links gone, the same run goes through and changes nothing."""
    assert as_lab_user(f"find {CTR_RUNS}/{RUN} -type l").stdout == ""
    run = data_stage(links_lab["tmp"], RUN)
    assert run.rc == 0 and run.changed() == 0, run.output[-4000:]
    assert "not fetched" not in run.output
    assert_host_untouched(links_lab)


# ---------------------------------------------------------------------------
# lab_container_volumes_nosuid and every lab_image_sudo mode, on a scratch host


def verified_tests(host) -> list[str]:
    """playbooks/verify.yml on the scratch host's inventory; the names of the checks that ran."""
    run = host.play("playbooks/verify.yml", timeout=600)
    assert run.rc == 0, run.output[-5000:]
    folder = re.search(r"details: (\S+/verify-[0-9-]+)\)", run.output)
    assert folder, run.output[-3000:]
    suite = ET.parse(Path(folder.group(1)) / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    return [case.get("name") for case in suite.iter("testcase") if case.find("skipped") is None]


@pytest.mark.scratch_index(6)
def test_nosuid_data_folder_and_every_sudo_mode_pass_verify(scratch_host):
    host = scratch_host
    host_vars = host.inventory / "host_vars" / f"{host.name}.yml"
    host_vars.parent.mkdir(exist_ok=True)

    def converge(variables: dict, *playbooks: str) -> PlaybookRun:
        host_vars.write_text("---\n" + yaml.safe_dump(variables or {}))
        for playbook in playbooks:
            run = host.play(playbook, timeout=900)
            assert run.rc == 0, f"{playbook}: {run.output[-5000:]}"
        return run

    def probe(user: str) -> str:
        return host.sh(f"docker exec -u {user} effdet-lab /data/.setuid-probe -u").stdout.strip()

    assert host.play("playbooks/host.yml").rc == 0
    # The converge's daemon.json check must leave the host's bridge alone: images are built on it next.
    assert host.sh("ip link show docker0", check=False).returncode == 0, "the host layer lost docker0"

    # nosuid,nodev on: the unit mounts the folder on the host, the container inherits it.
    converge({"lab_container_volumes_nosuid": True}, "playbooks/image.yml", "playbooks/container.yml")
    again = converge({"lab_container_volumes_nosuid": True}, "playbooks/container.yml")
    assert again.changed() == 0, again.output[-4000:]
    check = host.play("playbooks/container.yml", "--check", "--diff")
    assert check.rc == 0 and check.changed() == 0, check.output[-4000:]
    ran = verified_tests(host)
    assert any("test_lab_bind_volumes_nosuid" in name for name in ran), ran
    mounted = host.sh("docker exec effdet-lab sh -c 'mount | grep \" /data \"'").stdout
    assert "nosuid" in mounted and "nodev" in mounted, mounted
    # Container root leaves a set-uid-root copy of id(1) in the data folder.
    host.sh("docker exec effdet-lab sh -ec 'cp /usr/bin/id /data/.setuid-probe; chmod 4755 /data/.setuid-probe'")
    assert host.sh("stat -c '%U %a' /srv/effdet-lab/data/.setuid-probe").stdout.split() == ["root", "4755"]
    assert probe("lcg") == "1001", "the set-uid file gave the lab user root inside the container"
    on_host = host.sh("su -s /bin/sh nobody -c '/srv/effdet-lab/data/.setuid-probe -u'").stdout.strip()
    assert on_host == "65534", "the set-uid file gave a host user root"

    # Back to the default: the mount and the unit go, the container restarts without nosuid, and the
    # same file gives root again (what the variable closes).
    try:
        off = converge({}, "playbooks/container.yml")
        assert off.changed() > 0 and "Stop and disable the nosuid unit" in off.output
        assert host.sh("test -e /etc/systemd/system/effdet-lab-nosuid-effdet-lab.service", check=False).returncode != 0
        assert probe("lcg") == "0"
        assert converge({}, "playbooks/container.yml").changed() == 0
    finally:
        host.sh("rm -f /srv/effdet-lab/data/.setuid-probe")

    # Every lab_image_sudo mode: verify expects what the inventory says.
    password_hash = subprocess.run(["openssl", "passwd", "-6", "-salt", "effdetlabsalt", "effdet-lab-test-pw"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    # (nopasswd, the default, was verified above.)
    for variables in ({"lab_image_sudo": "none"},
                      {"lab_image_sudo": "password", "lab_container_user_password_hash": password_hash}):
        converge(variables, "playbooks/image.yml", "playbooks/container.yml")
        ran = verified_tests(host)
        assert any("test_lab_user_sudo" in name for name in ran), (variables, ran)
