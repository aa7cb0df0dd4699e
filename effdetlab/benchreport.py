"""Merge benchmark.json files from many hosts/runs into one Markdown table and one PNG plot.

    python -m effdetlab.benchreport RESULTS_DIR --out REPORT_PREFIX

Reads every `benchmark.json` under RESULTS_DIR (recursively; each a list of records from
`python -m effdetlab.stages benchmark`), and writes:
  REPORT_PREFIX.md    one row per (host, model, mode, device, batch, threads, tf_version):
                      median latency over the runs found, min/max, fps, number of runs
  REPORT_PREFIX.png   latency (ms) per configuration, one bar per host (log axis when
                      the latencies span more than 20x)
  REPORT_PREFIX.json  the merged rows (machine-readable)
Records with ok=false are counted under "failed" and listed, never averaged.
Exit: 0 written, 2 no benchmark.json / no usable record.
"""

import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List, Tuple

KEY = ("host", "model", "mode", "device", "batch", "threads", "tf_version")


def find_files(root: str) -> List[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        if "benchmark.json" in files:
            out.append(os.path.join(dirpath, "benchmark.json"))
    return sorted(out)


def load_records(paths: List[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
    recs, problems = [], []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            problems.append(f"{p}: unreadable ({e})")
            continue
        if not isinstance(data, list):
            problems.append(f"{p}: not a list of records")
            continue
        for r in data:
            if isinstance(r, dict) and all(k in r for k in ("model", "mode", "latency_ms")):
                recs.append(dict(r, source=p))
            else:
                problems.append(f"{p}: skipped a malformed record")
    return recs, problems


def _sort_key(k: Tuple) -> Tuple:
    return tuple("" if v is None else (f"{v:08d}" if isinstance(v, int) else str(v)) for v in k)


def merge(recs: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    failed = []
    for r in recs:
        lat = r.get("latency_ms")
        if r.get("ok") is False or not isinstance(lat, (int, float)) or lat <= 0:
            failed.append(r)
            continue
        groups.setdefault(tuple(r.get(k) for k in KEY), []).append(r)
    rows = []
    for k in sorted(groups, key=_sort_key):
        g = groups[k]
        lats = [float(r["latency_ms"]) for r in g]
        med = statistics.median(lats)
        batch = k[KEY.index("batch")] or 1
        rows.append(dict(zip(KEY, k), latency_ms=round(med, 3), latency_min_ms=round(min(lats), 3),
                         latency_max_ms=round(max(lats), 3), fps=round(1000.0 * batch / med, 3),
                         runs=len(g), image_size=g[0].get("image_size"),
                         last_timestamp=max(str(r.get("timestamp", "")) for r in g)))
    return rows, failed


def markdown(rows: List[Dict[str, Any]], failed: List[Dict[str, Any]], n_files: int) -> str:
    lines = [f"# EfficientDet benchmark report", "",
             f"{len(rows)} configurations from {n_files} benchmark.json file(s); latency is the "
             f"median of the runs (automl's own timer), fps = batch / latency.", "",
             "| host | model | mode | device | batch | threads | image | TF | latency ms (median) "
             "| min | max | fps | measurements |",
             "|---|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        img = "x".join(str(x) for x in r["image_size"]) if r.get("image_size") else ""
        thr = r["threads"] if r["threads"] else "default"
        lines.append(f"| {r['host']} | {r['model']} | {r['mode']} | {r['device']} | {r['batch']} | "
                     f"{thr} | {img} | {r['tf_version']} | {r['latency_ms']:.2f} | "
                     f"{r['latency_min_ms']:.2f} | {r['latency_max_ms']:.2f} | {r['fps']:.2f} | "
                     f"{r['runs']} |")
    if failed:
        lines += ["", f"## Failed measurements ({len(failed)})", ""]
        for r in failed:
            lines.append(f"- {r.get('host')} {r.get('model')} {r.get('mode')} batch {r.get('batch')} "
                         f"threads {r.get('threads')}: {r.get('error', 'no latency')} ({r['source']})")
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, Any]], path: str) -> None:
    """Horizontal bars, one per (configuration, host) measured, grouped by configuration and
    coloured by host: the figure grows in height with the rows and stays readable."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = sorted({r["host"] for r in rows})
    colours = {h: plt.get_cmap("tab10")(i % 10) for i, h in enumerate(hosts)}
    groups: Dict[Tuple, Dict[str, float]] = {}
    for r in rows:
        c = (r["model"].replace("efficientdet-", ""), r["mode"], r["device"], r["batch"], r["threads"])
        per_host = groups.setdefault(c, {})
        per_host[r["host"]] = min(r["latency_ms"], per_host.get(r["host"], r["latency_ms"]))
    ys, widths, bar_colours, ticks, labels = [], [], [], [], []
    y = 0.0
    for (m, mode, dev, b, t), per_host in groups.items():
        first = y
        for h in hosts:
            if h in per_host:
                ys.append(y)
                widths.append(per_host[h])
                bar_colours.append(colours[h])
                y += 1.0
        ticks.append((first + y - 1.0) / 2)
        labels.append(f"{m} {mode} {dev} batch {b}, {t or 'default'} thread(s)")
        y += 0.6  # a gap between configurations
    fig, ax = plt.subplots(figsize=(9.0, 1.6 + 0.26 * len(ys) + 0.12 * len(groups)))
    bars = ax.barh(ys, widths, color=bar_colours, height=0.85)
    for bar, w in zip(bars, widths):
        ax.annotate(f"{w:.0f}" if w >= 10 else f"{w:.1f}", (w, bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    lats = [r["latency_ms"] for r in rows]
    if max(lats) / min(lats) > 20:  # GPU next to CPU: only a log axis shows both
        ax.set_xscale("log")
        ax.set_xlabel("latency per batch (ms, log scale)")
    else:
        ax.set_xlim(0, max(lats) * 1.12)
        ax.set_xlabel("latency per batch (ms)")
    ax.set_title("EfficientDet latency (automl model_inspect timer)", fontsize=10)
    ax.legend(handles=[matplotlib.patches.Patch(color=colours[h], label=h) for h in hosts],
              fontsize=8, title="host", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.benchreport", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir")
    p.add_argument("--out", required=True, help="report prefix: writes PREFIX.md, .png, .json")
    a = p.parse_args(argv)
    if not os.path.isdir(a.results_dir):
        print(f"effdetlab.benchreport: error: {a.results_dir} is not a folder", file=sys.stderr)
        return 2
    own = os.path.abspath(a.out + ".json")  # this report's last output is not an input
    files = [f for f in find_files(a.results_dir) if os.path.abspath(f) != own]
    if not files:
        print(f"effdetlab.benchreport: error: no benchmark.json under {a.results_dir}", file=sys.stderr)
        return 2
    recs, problems = load_records(files)
    for pr in problems:
        print(f"effdetlab.benchreport: warning: {pr}", file=sys.stderr)
    rows, failed = merge(recs)
    if not rows:
        print(f"effdetlab.benchreport: error: no successful measurement in {len(files)} file(s)",
              file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(rows, failed, len(files)))
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"files": files, "rows": rows, "failed": failed}, f, indent=1)
    plot(rows, a.out + ".png")
    print(json.dumps({"rows": len(rows), "failed": len(failed), "files": len(files),
                      "markdown": a.out + ".md", "png": a.out + ".png"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
