"""Where a converge's time goes: first converge and no-change re-run, per task, side by side.

For each variant (a label, an optional git ref, optional environment settings):
fresh simulated hosts, `site.yml` once (first converge) and again, --reruns
times (the no-change re-run, which must report changed=0; the median one is
reported, and every re-run's time beside it), each run profiled task by task
(bench/callback_plugins/task_profile.py) and its CPU time recorded:

- controller: the CPU time of ansible-playbook and everything it started on the
  controller (getrusage of the children);
- machine: the CPU time the whole machine spent meanwhile (/proc/stat), which
  on the lab-in-a-box is the controller plus the simulated hosts (their sshd,
  Python, dockerd and containers) plus whatever else runs: run it on a quiet
  machine.

A variant with a git ref runs that commit's site.yml from a git worktree that
shares this checkout's venvs and lab-in-a-box (the "before" of a change).

    .venv/bin/python bench/rerun_profile.py --hosts 1,8 \
        --variant before@938e3cf --variant after [--tags host] [--alternate] [--out bench/results/rerun]

--hosts takes one fleet size or several (comma-separated); each variant runs on
each size, and with several sizes the summary adds how the re-run scales: its
time on N hosts over its time on the smallest fleet, per variant, from the same
bench run.

--alternate (with several sizes) adds a second scaling figure that this
machine's slower and faster stretches cannot tilt: per variant, one fleet of
the largest size, converged once, then --reruns rounds that each re-run every
size in turn on the same fleet (`--limit` to its first N hosts). The sizes'
medians and their ratios go in a table of their own and in <out>.alternating.json.
A smaller fleet inside a larger inventory is not quite a fleet of that size
alone (the other hosts idle, their inventory read), which is why both figures
are given.

Writes <out>.json (every run, with its per-task rows), <out>.md (the summary
table, the scaling table and each run's slowest re-run tasks) and <out>.png
(the re-run's time per role, per run).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labbox.demo import recap  # noqa: E402

SHARED = [".venv", ".venv-effdet", ".labbox", "inventory/labbox/hosts.yml",
          "inventory/labbox/group_vars/gpu_hosts/generated.yml"]
# The lab image's build: excluded from "first converge without the image build".
IMAGE_BUILD_TASK = "Build the lab image ("


def machine_cpu_s() -> float:
    """CPU seconds (user, nice, system, irq, softirq, steal) the whole machine has spent since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_variant(text: str) -> dict:
    """label[@ref][:KEY=VALUE,KEY=VALUE]"""
    head, _, env_text = text.partition(":")
    label, _, ref = head.partition("@")
    env = dict(pair.split("=", 1) for pair in env_text.split(",") if pair)
    return {"label": label, "ref": ref or None, "env": env}


def worktree(ref: str) -> Path:
    """A detached worktree of ref that uses this checkout's venvs and lab-in-a-box."""
    path = Path("/tmp") / f"effdet-bench-{ref.replace('/', '_')}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(path), ref], cwd=REPO, check=True,
                       capture_output=True)
    for rel in SHARED:
        target, link = REPO / rel, path / rel
        if target.exists() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
    return path


def profiled_converge(cwd: Path, tags: str | None, env: dict[str, str], profile: Path, playbook: str = "site.yml",
                      extra: list[str] | None = None) -> dict:
    """One ansible-playbook run, profiled task by task, with its wall and CPU time."""
    profile.unlink(missing_ok=True)
    cmd = [str(REPO / ".venv" / "bin" / "ansible-playbook"), playbook, *(["--tags", tags] if tags else []),
           *(extra or [])]
    run_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", **env,
               "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "bench" / "callback_plugins"),
               "ANSIBLE_CALLBACKS_ENABLED": "task_profile", "EFFDET_TASK_PROFILE": str(profile)}
    cpu0, machine0, t0 = children_cpu_s(), machine_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    controller, machine = children_cpu_s() - cpu0, machine_cpu_s() - machine0
    rows = [json.loads(line) for line in profile.read_text().splitlines() if line.strip()] if profile.exists() else []
    if not rows:
        print(f"[bench] warning: no task profile from {' '.join(cmd)} in {cwd} (callback not loaded?)", flush=True)
    hosts = recap(proc.stdout)
    image_build = max((r["seconds"] for r in rows if r["task"].split(" : ", 1)[-1].startswith(IMAGE_BUILD_TASK)),
                      default=0.0)
    host_tasks = len(rows)
    return {
        "wall_s": round(wall, 1), "rc": proc.returncode,
        "changed": sum(h["changed"] for h in hosts.values()), "hosts": len(hosts),
        "image_build_s": round(image_build, 1), "wall_without_image_build_s": round(wall - image_build, 1),
        "controller_cpu_s": round(controller, 1), "machine_cpu_s": round(machine, 1),
        "host_tasks": host_tasks,
        "machine_cpu_ms_per_host_task": round(1000 * machine / host_tasks, 1) if host_tasks else None,
        "tail": proc.stdout[-3000:] if proc.returncode else "",
        "tasks": rows,
    }


def by_key(rows: list[dict], key) -> list[tuple[str, float, int]]:
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for r in rows:
        total[key(r)] += r["seconds"]
        count[key(r)] += 1
    return sorted(((k, round(v, 2), count[k]) for k, v in total.items()), key=lambda x: -x[1])


def parse_hosts(text: str) -> list[int]:
    """"1" or "1,4,8": fleet sizes, each at least 1, in the order given."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"--hosts {text!r}: one or more fleet sizes of at least 1, comma-separated")
    return sizes


def lower_middle(items: list, key=None):
    """The median item by key (the lower middle one of an even count)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def median_run(runs: list[dict]) -> dict:
    """The run whose wall time is the median (the lower middle one of an even count)."""
    return lower_middle(runs, key=lambda r: r["wall_s"])


def variant_cwd(variant: dict) -> Path:
    """Where a variant's site.yml runs: its git ref's worktree, or this checkout."""
    return worktree(variant["ref"]) if variant["ref"] else REPO


def fresh_fleet(hosts: int) -> None:
    """The lab-in-a-box with `hosts` fresh simulated hosts."""
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "labbox", "up", "--hosts", str(hosts), "--fresh"],
                   cwd=REPO, check=True, capture_output=True)


def measure(variant: dict, hosts: int, tags: str | None, scratch: Path, suffix: str = "", reruns: int = 1) -> dict:
    """First converge on fresh hosts, then `reruns` no-change re-runs; "rerun" is the median one (this
    machine's wall times vary by a tenth or more from run to run), "rerun_walls" all of them."""
    cwd = variant_cwd(variant)
    print(f"[bench] {variant['label']}: {hosts} fresh host(s), first converge", flush=True)
    fresh_fleet(hosts)
    name = f"{variant['label']}{suffix}"
    first = profiled_converge(cwd, tags, variant["env"], scratch / f"{name}-first.jsonl")
    print(f"[bench] {variant['label']}: first {first['wall_s']} s (rc {first['rc']}); no-change re-run", flush=True)
    runs = []
    for index in range(reruns):
        runs.append(profiled_converge(cwd, tags, variant["env"], scratch / f"{name}-rerun-{index + 1}.jsonl"))
        print(f"[bench] {variant['label']}: re-run {runs[-1]['wall_s']} s, changed={runs[-1]['changed']}",
              flush=True)
    rerun = median_run(runs)
    base = first["wall_without_image_build_s"]
    return {**variant, "hosts": hosts, "tags": tags or "all", "first": first, "rerun": rerun,
            "rerun_walls": [r["wall_s"] for r in runs], "rerun_changed": [r["changed"] for r in runs],
            "rerun_rcs": [r["rc"] for r in runs],
            "rerun_over_first": round(rerun["wall_s"] / base, 3) if base else None}


def fleet_hosts(inventory: Path) -> list[str]:
    """The lab-in-a-box's GPU hosts, in inventory order (labbox writes labhost-1 first)."""
    import yaml

    data = yaml.safe_load(inventory.read_text())
    return list(data["all"]["children"]["gpu_hosts"]["hosts"])


def alternate(variant: dict, sizes: list[int], tags: str | None, scratch: Path, rounds: int) -> dict:
    """One fleet of the largest size, converged once; then `rounds` rounds, each re-running every size in
    turn on that fleet (`--limit` to its first N hosts), the order reversed every other round."""
    cwd = variant_cwd(variant)
    largest = max(sizes)
    print(f"[bench] {variant['label']}: alternating sizes {sizes} on one fleet of {largest}; first converge",
          flush=True)
    fresh_fleet(largest)
    names = fleet_hosts(REPO / "inventory" / "labbox" / "hosts.yml")
    if len(names) < largest:
        raise SystemExit(f"[bench] the lab-in-a-box lists {len(names)} host(s), not {largest}")
    first = profiled_converge(cwd, tags, variant["env"], scratch / f"{variant['label']}-alt-first.jsonl")
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for index in range(rounds):
        # Ascending, then descending: neither size always runs right after the other.
        for n in (sizes if index % 2 == 0 else sizes[::-1]):
            run = profiled_converge(cwd, tags, variant["env"],
                                    scratch / f"{variant['label']}-alt-{n}h-{index + 1}.jsonl",
                                    extra=["--limit", ",".join(names[:n])])
            runs[n].append(run)
            print(f"[bench] {variant['label']}: round {index + 1}, {n} host(s): {run['wall_s']} s, "
                  f"changed={run['changed']}", flush=True)
    walls = {n: [r["wall_s"] for r in runs[n]] for n in sizes}
    return {"label": variant["label"], "ref": variant["ref"], "tags": tags or "all", "fleet": largest,
            "first_wall_s": first["wall_s"], "first_rc": first["rc"], "walls": walls,
            "median_s": {n: lower_middle(walls[n]) for n in sizes},
            "changed": {n: [r["changed"] for r in runs[n]] for n in sizes},
            "rcs": {n: [r["rc"] for r in runs[n]] for n in sizes},
            "hosts_seen": {n: sorted({r["hosts"] for r in runs[n]}) for n in sizes}}


def alternating_table(alternated: list[dict]) -> list[str]:
    """The sizes' medians from alternating rounds on one fleet, each over the smallest size's."""
    if not alternated:
        return []
    sizes = sorted(alternated[0]["median_s"])
    lines = ["", "### How the no-change re-run scales, sizes alternated on one fleet (same bench run)", "",
             "| variant | " + " | ".join(f"{n} host(s) (s)" for n in sizes) + " | "
             + " | ".join(f"{n} / {sizes[0]}" for n in sizes[1:]) + " | every round (s) |",
             "|---|" + "---:|" * (2 * len(sizes) - 1) + "---|"]
    for alt in alternated:
        med = alt["median_s"]
        rounds = " / ".join(", ".join(str(w) for w in alt["walls"][n]) for n in sizes)
        lines.append(f"| {alt['label']} | " + " | ".join(str(med[n]) for n in sizes) + " | "
                     + " | ".join(f"{med[n] / med[sizes[0]]:.2f}x" if med[sizes[0]] else "-" for n in sizes[1:])
                     + f" | {rounds} |")
    return lines


def markdown(results: list[dict], top: int, alternated: list[dict] | None = None) -> str:
    lines = ["| variant | hosts | tags | first (s) | image build (s) | first w/o build (s) | re-run (s) | "
             "re-runs (s) | re-run / first w/o build | re-run changed | re-run tasks | controller CPU (s) | "
             "machine CPU (s) | CPU ms per host-task |",
             "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        f, s = r["first"], r["rerun"]
        walls = ", ".join(str(w) for w in r.get("rerun_walls", [s["wall_s"]]))
        lines.append(f"| {r['label']} | {r['hosts']} | {r['tags']} | {f['wall_s']} | {f['image_build_s']} | "
                     f"{f['wall_without_image_build_s']} | {s['wall_s']} | {walls} | {r['rerun_over_first']} | "
                     f"{s['changed']} | "
                     f"{s['host_tasks']} | {s['controller_cpu_s']} | {s['machine_cpu_s']} | "
                     f"{s['machine_cpu_ms_per_host_task']} |")
    lines += scaling(results)
    lines += alternating_table(alternated or [])
    for r in results:
        lines += ["", f"### {r['label']}, {r['hosts']} host(s): the re-run's slowest tasks (all hosts)", "",
                  "| role | task | action | results | seconds |", "|---|---|---|---:|---:|"]
        rows = r["rerun"]["tasks"]
        for key, seconds, count in by_key(rows, lambda x: "\x00".join((x["role"], x["task"], x["action"])))[:top]:
            role, task, action = key.split("\x00")
            lines.append(f"| {role or '-'} | {task.replace('|', '/')} | {action} | {count} | {seconds} |")
    return "\n".join(lines) + "\n"


def scaling(results: list[dict]) -> list[str]:
    """Each variant's re-run on every fleet size over its re-run on the smallest (several sizes only)."""
    sizes = sorted({r["hosts"] for r in results})
    if len(sizes) < 2:
        return []
    lines = ["", "### How the no-change re-run scales (same bench run)", "",
             "| variant | " + " | ".join(f"{n} host(s) (s)" for n in sizes) + " | "
             + " | ".join(f"{n} / {sizes[0]}" for n in sizes[1:]) + " |",
             "|---|" + "---:|" * (2 * len(sizes) - 1)]
    for label in dict.fromkeys(r["label"] for r in results):
        wall = {r["hosts"]: r["rerun"]["wall_s"] for r in results if r["label"] == label}
        base = wall.get(sizes[0])
        lines.append(f"| {label} | " + " | ".join(str(wall.get(n, "-")) for n in sizes) + " | "
                     + " | ".join(f"{wall[n] / base:.2f}x" if base and n in wall else "-" for n in sizes[1:]) + " |")
    return lines


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = sorted({r["role"] or "(play)" for res in results for r in res["rerun"]["tasks"]})
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(roles) + 2))
    height = 0.8 / max(len(results), 1)
    for i, res in enumerate(results):
        per_role = dict((k, v) for k, v, _ in by_key(res["rerun"]["tasks"], lambda x: x["role"] or "(play)"))
        ax.barh([j + i * height for j in range(len(roles))], [per_role.get(role, 0) for role in roles],
                height=height, label=f"{res['label']}, {res['hosts']} host(s) ({res['rerun']['wall_s']} s)")
    ax.set_yticks([j + height * (len(results) - 1) / 2 for j in range(len(roles))], roles)
    ax.set_xlabel("seconds in the no-change re-run (summed over hosts)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[],
                    help="label[@git-ref][:ENV=VALUE,...]; repeat for side-by-side variants (default: one, 'now')")
    ap.add_argument("--hosts", type=parse_hosts, default=[1], help="fleet size(s): 1, or 1,8 (default 1)")
    ap.add_argument("--tags", default=None, help="site.yml --tags (default: the whole site)")
    ap.add_argument("--reruns", type=int, default=3,
                    help="no-change re-runs per variant and fleet size; the median one is reported (default 3)")
    ap.add_argument("--alternate", action="store_true",
                    help="also re-run the sizes alternately on one fleet of the largest (several sizes only)")
    ap.add_argument("--top", type=int, default=15, help="slowest re-run tasks listed per variant")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "rerun"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f"{out.name}-profiles"
    scratch.mkdir(exist_ok=True)
    several = len(args.hosts) > 1
    if args.reruns < 1:
        ap.error(f"--reruns {args.reruns}: at least 1")
    if args.alternate and not several:
        ap.error("--alternate needs several fleet sizes (--hosts 1,8)")
    variants = [parse_variant(v) for v in args.variant or ["now"]]
    results = [measure(v, n, args.tags, scratch, f"-{n}h" if several else "", args.reruns)
               for n in args.hosts for v in variants]
    alternated = [alternate(v, args.hosts, args.tags, scratch, args.reruns) for v in variants] if args.alternate else []
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    if alternated:
        out.with_suffix(".alternating.json").write_text(json.dumps(alternated, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results, args.top, alternated))
    plot(results, out.with_suffix(".png"))
    print(markdown(results, args.top, alternated))
    sound = all(r["first"]["rc"] == 0 and not any(r["rerun_rcs"]) and not any(r["rerun_changed"]) for r in results)
    sound_alt = all(a["first_rc"] == 0 and not any(any(rcs) for rcs in a["rcs"].values())
                    and not any(any(ch) for ch in a["changed"].values())
                    and all(a["hosts_seen"][n] == [n] for n in a["hosts_seen"]) for a in alternated)
    return 0 if sound and sound_alt else 1


if __name__ == "__main__":
    sys.exit(main())
