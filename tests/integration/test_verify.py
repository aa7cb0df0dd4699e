"""playbooks/verify.yml: testinfra from the controller against the same inventory."""
from __future__ import annotations

import json

from conftest import run_playbook, verify_results


def test_verify_passes_and_runs_the_lab_container_checks(lab_deployed):
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
    assert "\\n" not in summary and summary.count("\n") >= 4 + len(lab_deployed["hosts"]), "one line per line, not escaped"
    assert f"OK: {counts['line']}." in summary and counts["line"] in run.output
