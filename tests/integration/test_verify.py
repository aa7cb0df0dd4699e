"""playbooks/verify.yml: testinfra from the controller against the same inventory."""
from __future__ import annotations

import json
import re
import subprocess
import time

from conftest import run_playbook, verify_results

ACCEPTED = re.compile(r"sshd(-session)?\[\d+\]: Accepted \S+ for ")
CLOSED = re.compile(r"sshd(-session)?\[\d+\]: pam_unix\(sshd:session\): session closed for ")


def ssh_sessions(host: str, since: int) -> tuple[int, int]:
    """ssh logins sshd accepted on a simulated host from the epoch second `since` on, and the sessions
    closed since (waiting up to 10 s for the last to close)."""
    sim = f"effdet-lab-host-{host.rsplit('-', 1)[1]}"
    for _ in range(20):
        out = subprocess.run(["docker", "exec", sim, "journalctl", "--no-pager", f"--since=@{since}"],
                             capture_output=True, text=True, check=True).stdout
        logins, closed = len(ACCEPTED.findall(out)), len(CLOSED.findall(out))
        if closed >= logins:
            break
        time.sleep(0.5)
    return logins, closed


def test_verify_passes_and_runs_the_lab_container_checks(lab_deployed):
    # Start on a fresh second: journalctl --since counts from a whole second.
    since = int(time.time()) + 1
    time.sleep(since - time.time())
    run = run_playbook("playbooks/verify.yml")
    verified = verify_results(run)
    latest, ran = verified.folder, verified.ran
    for host in lab_deployed["hosts"]:
        # The no-GPU checks ran (and passed) on every host, and so did the lab container's.
        assert any("no_gpu" in name and host in name for name in ran), ran
        assert any("lab_" in name and host in name for name in ran), ran
    summary = (latest / "summary.md").read_text()
    counts = json.loads((latest / "summary.json").read_text())
    assert counts["ok"] is True and counts["problems"] == [], counts
    for host in lab_deployed["hosts"]:
        passed = sum(1 for name in ran if name.endswith(f"[ansible://{host}]"))
        assert f"| {host} | {passed} | 0 |" in summary, summary
        assert {"host": host, "passed": passed, "failed": 0, "error": 0}.items() <= next(
            r for r in counts["hosts"] if r["host"] == host).items(), counts
        # One ssh login per host for all its checks (a master connection they share), not one per check,
        # and the run closes it when it ends (ansible.cfg's ControlPersist would keep it 120 s).
        logins, closed = ssh_sessions(host, since)
        assert passed > 10 and logins == 1, (host, passed, logins)
        assert closed == 1, (host, closed)
    assert "\\n" not in summary and summary.count("\n") >= 4 + len(lab_deployed["hosts"]), "one line per line, not escaped"
    assert f"OK: {counts['line']}." in summary and counts["line"] in run.output
