"""The main job on the lab-in-a-box: converge site.yml on N bare simulated hosts,
converge again, and prove the second run changed nothing.

Writes results/demo-<stamp>/: summary.json (machines), summary.md (people) and
the two ansible logs.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from .shell import REPO_ROOT, log

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
SHOWN = re.compile(r"^(PLAY |TASK |RUNNING HANDLER|fatal:|failed:|changed:|\S+\s*: ok=|\s*\[effdet\])")


def converge(log_path: Path, extra_args: list[str]) -> tuple[float, str, int]:
    """Run site.yml, echo the play/task lines as progress, keep the full log."""
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "site.yml", *extra_args]
    start = time.monotonic()
    lines: list[str] = []
    with log_path.open("w") as out, subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**__import__("os").environ, "ANSIBLE_NOCOLOR": "1"},
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line)
            if SHOWN.match(line):
                print("  " + line.rstrip()[:150], flush=True)
        rc = proc.wait()
    return time.monotonic() - start, "".join(lines), rc


def recap(output: str) -> dict[str, dict[str, int]]:
    return {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:])))
            for m in RECAP.findall(output)}


def run_demo(hosts: int, extra_args: list[str], executor: str = "exec") -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = REPO_ROOT / "results" / f"demo-{stamp}"
    out_dir.mkdir(parents=True)
    runs = []
    for label in ("first", "second"):
        log(f"{label} converge of site.yml on {hosts} host(s) (log: {out_dir}/{label}.log)")
        seconds, output, rc = converge(out_dir / f"{label}.log", extra_args)
        runs.append({"run": label, "seconds": round(seconds, 1), "rc": rc, "recap": recap(output)})
        if rc != 0:
            log(f"{label} converge failed (rc={rc}); see {out_dir}/{label}.log")
            break
    second_changed = sum(h["changed"] for h in runs[-1]["recap"].values()) if len(runs) == 2 else None
    summary = {"hosts": hosts, "executor": executor, "runs": runs, "second_run_changed": second_changed,
               "idempotent": second_changed == 0 and all(r["rc"] == 0 for r in runs)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = ["| run | seconds | rc | changed (all hosts) | failed |", "|---|---:|---:|---:|---:|"]
    for r in runs:
        rows.append(f"| {r['run']} | {r['seconds']} | {r['rc']} | "
                    f"{sum(h['changed'] for h in r['recap'].values())} | {sum(h['failed'] for h in r['recap'].values())} |")
    md = f"# effdet-lab demo, {hosts} simulated host(s), executor {executor}\n\n" + "\n".join(rows) + (
        f"\n\nIdempotent (second run changed=0): **{'yes' if summary['idempotent'] else 'NO'}**\n")
    (out_dir / "summary.md").write_text(md)
    print("\n" + md)
    log(f"results in {out_dir}")
    return 0 if summary["idempotent"] else 1
