"""Issue 12's targets (lab scale), measured in one run and checked against their limits.

One invocation runs, one after the other on this machine:

1. bench/site_rerun.py: the whole site on 1 fresh host, first converge, this
   tree's no-change re-run, then the --before ref's own no-change re-run;
2. bench/rerun_profile.py: the host layer (--tags host) on fresh fleets of each
   size, before and after, with re-runs, and the sizes alternated on one fleet;
3. bench/dataset_scale.py: a generated VOC tree (10,000 images by default):
   plain rsync against the data stage's first transfer, and its no-change re-run.

    .venv/bin/python bench/lab_scale.py --before 938e3cf [--hosts 1,4,8] [--reruns 3] [--images 10000]
        [--out bench/results/lab-scale]

Writes <out>.json, <out>.md (one table: each target, its figure, its limit,
whether it holds) and <out>.png, beside each part's own results
(<out>-site.*, <out>-host.*, <out>-data.*). Exits 1 when a part fails or a
target does not hold.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"


def target(what: str, value: float | None, limit: float, unit: str = "x", detail: str = "") -> dict:
    """One target: the figure measured, its limit (the figure must not exceed it) and whether it holds."""
    return {"what": what, "value": value, "limit": limit, "unit": unit, "detail": detail,
            "holds": value is not None and value <= limit}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def site_targets(site: list[dict]) -> list[dict]:
    """bench/site_rerun.py's rows: the 'before' row first, then this tree's (mitogen) row."""
    before, after = site[0], site[1]
    b, a = before["rerun"], after["rerun"]
    per_host = _ratio(a["machine_cpu_s"] / a["hosts"], b["machine_cpu_s"] / b["hosts"])
    return [
        target("whole site, 1 host: no-change re-run / first converge (image build excluded)",
               after["rerun_over_first"], 0.15,
               detail=f"{a['wall_s']} s / {after['first']['wall_without_image_build_s']} s"),
        target("whole site, 1 host: machine CPU per host-task, after / before",
               _ratio(a["machine_cpu_ms_per_host_task"], b["machine_cpu_ms_per_host_task"]), 1 / 3,
               detail=f"{a['machine_cpu_ms_per_host_task']} ms ({a['host_tasks']} tasks) / "
                      f"{b['machine_cpu_ms_per_host_task']} ms ({b['host_tasks']} tasks); per host {per_host}x"),
    ]


def host_layer_targets(results: list[dict], alternated: list[dict], after: str = "after",
                       before: str = "before") -> list[dict]:
    """bench/rerun_profile.py's rows (one per variant and fleet size) and its alternated rounds."""
    rows = {(r["label"], r["hosts"]): r for r in results}
    sizes = sorted({r["hosts"] for r in results})
    small, large = sizes[0], sizes[-1]
    out = []
    if large > small:
        a_small, a_large = rows[(after, small)]["rerun"]["wall_s"], rows[(after, large)]["rerun"]["wall_s"]
        out.append(target(f"host layer: no-change re-run, {large} hosts / {small} host (fleets of their own)",
                          _ratio(a_large, a_small), 3.0, detail=f"{a_large} s / {a_small} s"))
        for alt in alternated:
            if alt["label"] != after:
                continue
            med = {int(n): w for n, w in alt["median_s"].items()}
            out.append(target(f"host layer: no-change re-run, {large} hosts / {small} host (alternated on one fleet)",
                              _ratio(med[large], med[small]), 3.0, detail=f"{med[large]} s / {med[small]} s"))
    for n in sizes:
        if (before, n) not in rows or (after, n) not in rows:
            continue
        a, b = rows[(after, n)]["rerun"], rows[(before, n)]["rerun"]
        out.append(target(f"host layer, {n} host(s): machine CPU per host-task, after / before",
                          _ratio(a["machine_cpu_ms_per_host_task"], b["machine_cpu_ms_per_host_task"]), 1 / 3,
                          detail=f"{a['machine_cpu_ms_per_host_task']} ms / {b['machine_cpu_ms_per_host_task']} ms"))
    return out


def dataset_targets(res: dict) -> list[dict]:
    """bench/dataset_scale.py's result."""
    return [
        target(f"data stage, {res['images']} images: no-change re-run (whole --tags data)", res["rerun"]["wall_s"],
               10.0, unit="s", detail=f"changed={res['rerun']['changed']}"),
        target(f"data stage, {res['images']} images: first transfer / plain rsync (medians)",
               _ratio(res["first"]["put_s"], res["rsync_s"]), 1.5,
               detail=f"{res['first']['put_s']} s / {res['rsync_s']} s"),
    ]


def markdown(targets: list[dict], parts: dict[str, int]) -> str:
    lines = ["| target | measured | limit | holds | figures |", "|---|---:|---:|---|---|"]
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']}{' ' if t['unit'] == 's' else ''}{t['unit']}"
        limit = f"{t['limit']:.3g}{' ' if t['unit'] == 's' else ''}{t['unit']}"
        lines.append(f"| {t['what']} | {value} | {limit} | {'yes' if t['holds'] else 'NO'} | {t['detail']} |")
    lines += ["", "Parts (exit status): " + ", ".join(f"{k} {v}" for k, v in parts.items())]
    return "\n".join(lines) + "\n"


def plot(targets: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.5 * len(targets) + 1.5))
    labels = [t["what"] for t in targets]
    shares = [(t["value"] or 0) / t["limit"] for t in targets]
    ax.barh(labels, shares, color=["tab:green" if t["holds"] else "tab:red" for t in targets])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("measured / limit (a target holds left of the dashed line)")
    fig.tight_layout()
    fig.savefig(path)


def part(script: str, out: Path, *args: str) -> int:
    """Run one bench script with --out `out`, after removing what an earlier run left there: a part that
    fails before it writes must not leave an older run's figures in this run's table."""
    for stale in (out.with_suffix(".json"), out.with_suffix(".alternating.json")):
        stale.unlink(missing_ok=True)
    print(f"[bench] {script} {' '.join(args)} --out {out}", flush=True)
    return subprocess.run([str(PYTHON), str(REPO / "bench" / script), *args, "--out", str(out)], cwd=REPO,
                          check=False).returncode


def results(out: Path, script: str, rc: int):
    path = out.with_suffix(".json")
    if not path.exists():
        raise SystemExit(f"[bench] {script} wrote no {path} (exit status {rc})")
    return json.loads(path.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git ref of the 'before' tree")
    ap.add_argument("--hosts", default="1,4,8", help="the host layer's fleet sizes (default 1,4,8)")
    ap.add_argument("--reruns", default="3", help="the host layer's re-runs per variant and size (default 3)")
    ap.add_argument("--images", default="10000", help="images in the generated VOC tree (default 10000)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "lab-scale"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    site, host, data = (out.parent / f"{out.name}-{p}" for p in ("site", "host", "data"))
    parts = {
        "site_rerun.py": part("site_rerun.py", site, "--before", args.before, "--hosts", "1"),
        "rerun_profile.py": part("rerun_profile.py", host, "--hosts", args.hosts, "--tags", "host", "--variant",
                                 f"before@{args.before}", "--variant", "after", "--reruns", args.reruns,
                                 "--alternate"),
        "dataset_scale.py": part("dataset_scale.py", data, "--images", args.images),
    }
    alternated = host.with_suffix(".alternating.json")
    targets = (site_targets(results(site, "site_rerun.py", parts["site_rerun.py"]))
               + host_layer_targets(results(host, "rerun_profile.py", parts["rerun_profile.py"]),
                                    json.loads(alternated.read_text()) if alternated.exists() else [])
               + dataset_targets(results(data, "dataset_scale.py", parts["dataset_scale.py"])))
    text = markdown(targets, parts)
    out.with_suffix(".json").write_text(json.dumps({"before": args.before, "parts": parts, "targets": targets},
                                                   indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    plot(targets, out.with_suffix(".png"))
    print(text)
    return 0 if not any(parts.values()) and all(t["holds"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
