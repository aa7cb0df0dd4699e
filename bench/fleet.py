"""Converge times users compare, measured side by side in one run.

For each fleet size N (default 1, 4, 8): N bare simulated hosts, then
`site.yml --tags <tags>` once (first converge) and again (idempotent re-run,
must report changed=0). Writes JSON and one Markdown table.

    python bench/fleet.py --hosts 1,4,8 [--tags host] [--out bench/results/fleet]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labbox.demo import recap  # noqa: E402


def playbook(*args: str) -> tuple[float, str, int]:
    """ansible-playbook from the repo root, timed: (seconds, stdout, exit status)."""
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**__import__("os").environ, "ANSIBLE_NOCOLOR": "1"})
    return time.monotonic() - start, proc.stdout, proc.returncode


def converge(tags: str) -> tuple[float, dict[str, dict[str, int]], int]:
    seconds, out, rc = playbook("site.yml", "--tags", tags)
    return seconds, recap(out), rc


def measure(n: int, tags: str) -> dict:
    subprocess.run([sys.executable, "-m", "labbox", "up", "--hosts", str(n), "--fresh"], cwd=REPO, check=True)
    first_s, first_recap, first_rc = converge(tags)
    second_s, second_recap, second_rc = converge(tags)
    return {
        "hosts": n, "tags": tags,
        "first_s": round(first_s, 1), "first_rc": first_rc,
        "first_changed": sum(h["changed"] for h in first_recap.values()),
        "rerun_s": round(second_s, 1), "rerun_rc": second_rc,
        "rerun_changed": sum(h["changed"] for h in second_recap.values()),
        "hosts_ok": sum(1 for h in second_recap.values() if h["failed"] == 0 and h["unreachable"] == 0),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| hosts | tags | first converge (s) | changed | re-run (s) | re-run changed | hosts ok |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hosts']} | {r['tags']} | {r['first_s']} | {r['first_changed']} | {r['rerun_s']} | "
                     f"{r['rerun_changed']} | {r['hosts_ok']}/{r['hosts']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,4,8", help="comma-separated fleet sizes")
    parser.add_argument("--tags", default="host", help="site.yml tags to converge")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "fleet"))
    args = parser.parse_args()
    rows = []
    for n in [int(x) for x in args.hosts.split(",")]:
        print(f"[bench] {n} host(s): fresh, converge, re-run", flush=True)
        rows.append(measure(n, args.tags))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0 if all(r["rerun_changed"] == 0 and r["first_rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
