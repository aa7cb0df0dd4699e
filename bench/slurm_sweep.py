"""The benchmark sweep through the Slurm queue against today's shared-out sweep, on the same hosts, in one run.

Needs the lab-in-a-box converged as a Slurm cluster (`make demo HOSTS=2
EXECUTOR=slurm`, or `python -m labbox demo --hosts 2 --executor slurm`).
Then, on its inventory, `playbooks/effdet.yml --tags benchmark` measures the
demo's sweep (inventory/labbox/group_vars/gpu_hosts/lab.yml) by turns:

  exec   effdet_tasks_executor=exec: the (model, batch) pairs shared out over
         the hosts by our own code, each host its share in the lab container
         (docker exec, detached, followed);
  slurm  effdet_tasks_executor=slurm: one job array, a task per (model, batch,
         threads, mode), each task a docker run of the lab image on the node
         Slurm picks (--exclusive).

Each turn's config differs from the last one's (a host's share against the
whole sweep), so every turn measures the whole sweep anew; --rounds N runs
exec, slurm, then slurm, exec, ... so that neither always goes first
(--first slurm when exec measured the run last). A turn that measured
nothing (its sweep found done) stops the bench.

    .venv/bin/python bench/slurm_sweep.py [--rounds 1] [--run default] [--out bench/results/slurm-sweep]

Writes <out>.json, <out>.md and <out>.png: each turn's wall time (the
stage's play, the same preflight in both), its points and records.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "labbox"


def turn(executor: str, run: str) -> dict:
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), "playbooks/effdet.yml",
           "--tags", "benchmark", "-e", f"effdet_tasks_executor={executor}", "-e", f"effdet_tasks_run_name={run}"]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-5000:])
        raise SystemExit(f"[bench] the {executor} turn failed (rc {done.returncode})")
    if "Merge every host's records into one table and plot (controller)" not in done.stdout or \
            "skipping: [" in done.stdout.split("Merge every host's records")[1].split("TASK [")[0]:
        raise SystemExit(f"[bench] the {executor} turn measured nothing: the run's last sweep was {executor}'s "
                         "(give --first the other executor)")
    # The merged report names the hosts' benchmark.json files it read: every record of the turn.
    merged = json.loads((REPO / "results" / "effdet" / run / "benchmark.json").read_text())
    records = [r for path in merged["files"] for r in json.loads(Path(path).read_text())]
    hosts = sorted({r["host"] for r in records})
    points = {(r["model"], r["mode"], r["batch"], r["threads"]) for r in records}
    return {"executor": executor, "wall_s": round(wall, 1), "points": len(points), "records": len(records),
            "ok": sum(1 for r in records if r.get("ok")), "hosts_measuring": hosts}


def train_first(run: str) -> None:
    """The run's model, trained (by the queue) before any timed turn; the demo's run
    (`default`) has it already, and this changes nothing."""
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), "playbooks/effdet.yml",
           "--tags", "data,train,export", "-e", "effdet_tasks_executor=slurm", "-e", f"effdet_tasks_run_name={run}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-5000:])
        raise SystemExit("[bench] training the run's model failed: is the lab-in-a-box a Slurm cluster "
                         "(make demo HOSTS=2 EXECUTOR=slurm)?")


def markdown(turns: list[dict], hosts: int) -> str:
    rows = ["| turn | executor | wall (s) | points | records (ok) | hosts that measured |",
            "|---:|---|---:|---:|---:|---|"]
    for i, t in enumerate(turns, 1):
        rows.append(f"| {i} | {t['executor']} | {t['wall_s']} | {t['points']} | {t['records']} ({t['ok']}) | "
                    f"{', '.join(t['hosts_measuring'])} |")
    med = {e: statistics.median(t["wall_s"] for t in turns if t["executor"] == e) for e in ("exec", "slurm")}
    return (f"# The benchmark sweep: Slurm job array against today's shared-out sweep, {hosts} host(s)\n\n"
            + "\n".join(rows)
            + f"\n\nMedian wall time: exec {med['exec']} s, slurm {med['slurm']} s "
              f"({med['slurm'] / med['exec']:.2f}x).\n")


def plot(turns: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    labels = [f"{i}: {t['executor']}" for i, t in enumerate(turns, 1)]
    ax.barh(labels, [t["wall_s"] for t in turns], color=["tab:blue" if t["executor"] == "exec" else "tab:orange"
                                                         for t in turns])
    ax.invert_yaxis()
    ax.set_xlabel("seconds: playbooks/effdet.yml --tags benchmark")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--first", choices=("exec", "slurm"), default="exec",
                    help="the executor of the first turn: not the one that last measured this run (it would find "
                         "its sweep done and measure nothing)")
    ap.add_argument("--run", default="default", help="effdet_tasks_run_name (default: the demo's run)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "slurm-sweep"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    print("[bench] training the run's model through the queue (untimed)", flush=True)
    train_first(args.run)
    other = "exec" if args.first == "slurm" else "slurm"
    order: list[str] = []
    for r in range(args.rounds):
        order += [args.first, other] if r % 2 == 0 else [other, args.first]
    turns = []
    for executor in order:
        turns.append(turn(executor, args.run))
        print(f"[bench] {executor}: {turns[-1]['wall_s']} s, {turns[-1]['points']} points, "
              f"{turns[-1]['records']} records", flush=True)
    hosts = len({h for t in turns for h in t["hosts_measuring"]})
    out.with_suffix(".json").write_text(json.dumps({"hosts": hosts, "turns": turns}, indent=1) + "\n")
    md = markdown(turns, hosts)
    out.with_suffix(".md").write_text(md)
    plot(turns, out.with_suffix(".png"))
    print("\n" + md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
