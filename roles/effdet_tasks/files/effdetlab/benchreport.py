"""Merge benchmark.json files from many hosts/runs into one Markdown report, one PNG and one JSON.

    python -m effdetlab.benchreport RESULTS_DIR --out REPORT_PREFIX

Reads every `benchmark.json` under RESULTS_DIR (recursively; each a list of records from
`python -m effdetlab.stages benchmark`; REPORT_PREFIX.json itself is not an input) and writes:
  REPORT_PREFIX.md    1. side by side: one row per (host, model, device, batch, threads, TF,
                         image size), one column per mode (bm, e2e, tflite, then the others
                         alphabetically), each cell "median ms ±spread% (ratio to bm)"; a cell
                         whose [min, max] overlaps another mode's in its row is marked ≈ (the
                         difference is inside the measured spread); a mode that only failed
                         there shows why ("failed: ..." / "unsupported: ...")
                      2. one row per (host, model, mode, device, batch, threads, tf_version):
                         median, min, max latency, spread, fps, images fed, measurements
                      3. the failed records, then the unsupported ones ("Not measurable here")
  REPORT_PREFIX.png   median latency per configuration, one horizontal bar per host (and TF),
                      coloured by host, min-max error bars, hatched and marked ≈ where the
                      range overlaps another mode's (log axis when latencies span over 20x)
  REPORT_PREFIX.json  the merged rows, the failed and the unsupported records
Per row: spread_pct = 100 * (max - min) / median (0.0, shown "±?", for one measurement);
fps = images_fed * 1000 / median (records without images_fed fed `batch`); ratio_to_bm =
latency per image / bm's latency per image in the same side-by-side row (null without bm).
Records with ok=false are listed, never averaged: with unsupported=true (this TF/profile
cannot run the mode) they count as "unsupported", otherwise as "failed".
Exit: 0 written, 2 no benchmark.json / no successful measurement.
"""

import argparse
import json
import os
import statistics
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

Record = Dict[str, Any]

KEY = ("host", "model", "mode", "device", "batch", "threads", "tf_version")
# one side-by-side row: KEY without the mode, plus the image size
CONFIG = ("host", "model", "device", "batch", "threads", "tf_version", "image_size")
MODE_ORDER = ("bm", "e2e", "tflite")
OVERLAP_NOTE = ("≈: its min–max range overlaps another mode's in this row; the difference is "
                "inside the measured spread.")


def find_files(root: str) -> List[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        if "benchmark.json" in files:
            out.append(os.path.join(dirpath, "benchmark.json"))
    return sorted(out)


def load_records(paths: List[str]) -> Tuple[List[Record], List[str]]:
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
            if (isinstance(r, dict) and "model" in r and "mode" in r
                    and ("latency_ms" in r or r.get("ok") is False)):
                recs.append(dict(r, source=p))
            else:
                problems.append(f"{p}: skipped a malformed record")
    return recs, problems


def mode_rank(mode: Any) -> Tuple[int, str]:
    """bm, e2e, tflite first, then any other mode alphabetically."""
    return (MODE_ORDER.index(mode), "") if mode in MODE_ORDER else (len(MODE_ORDER), str(mode))


def _sortable(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:08d}"
    if isinstance(v, (list, tuple)):
        return "x".join(_sortable(x) for x in v)
    return str(v)


def _row_order(r: Record) -> Tuple[str, ...]:
    return tuple(_sortable(mode_rank(r["mode"]) if k == "mode" else r.get(k)) for k in KEY)


def config_of(r: Record) -> Tuple[Any, ...]:
    img = r.get("image_size")
    return tuple((tuple(img) if isinstance(img, list) else img) if k == "image_size" else r.get(k)
                 for k in CONFIG)


def _measured(r: Record) -> bool:
    lat = r.get("latency_ms")
    return (r.get("ok") is not False and isinstance(lat, (int, float))
            and not isinstance(lat, bool) and lat > 0)


def _images_fed(r: Record) -> int:
    for v in (r.get("images_fed"), r.get("batch")):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 1


def _most_common(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present, key=present.count) if present else None


def _row(key: Tuple[Any, ...], group: List[Record]) -> Record:
    lats = [float(r["latency_ms"]) for r in group]
    med, lo, hi = statistics.median(lats), min(lats), max(lats)
    fed = _most_common([_images_fed(r) for r in group])
    row = dict(zip(KEY, key))
    row.update(latency_ms=round(med, 3), latency_min_ms=round(lo, 3), latency_max_ms=round(hi, 3),
               spread_pct=round(100.0 * (hi - lo) / med, 3), fps=round(1000.0 * fed / med, 3),
               images_fed=fed, runs=len(group),
               repeats=_most_common([r.get("repeats") for r in group]),
               image_size=group[0].get("image_size"),
               runtime=_most_common([r.get("runtime") for r in group]),
               delegate=_most_common([r.get("delegate") for r in group]),
               quantization=_most_common([r.get("quantization") for r in group]),
               ratio_to_bm=None, overlaps_with=[],
               last_timestamp=max(str(r.get("timestamp", "")) for r in group))
    return row


def overlap(a: Record, b: Record) -> bool:
    """The [min, max] latency ranges of two rows share at least one point."""
    return a["latency_min_ms"] <= b["latency_max_ms"] and b["latency_min_ms"] <= a["latency_max_ms"]


def _compare(rows: List[Record]) -> None:
    """ratio_to_bm and overlaps_with, within each side-by-side row (same config_of)."""
    same_config: Dict[Tuple[Any, ...], List[Record]] = {}
    for r in rows:
        same_config.setdefault(config_of(r), []).append(r)
    for group in same_config.values():
        bm = next((r for r in group if r["mode"] == "bm"), None)
        for r in group:
            if bm is not None:
                r["ratio_to_bm"] = round((r["latency_ms"] / r["images_fed"])
                                         / (bm["latency_ms"] / bm["images_fed"]), 3)
            r["overlaps_with"] = sorted((o["mode"] for o in group if o is not r and overlap(r, o)),
                                        key=mode_rank)


def merge(recs: List[Record]) -> Tuple[List[Record], List[Record], List[Record]]:
    """(rows, failed, unsupported): successful records grouped by KEY; the others, as read."""
    groups: Dict[Tuple[Any, ...], List[Record]] = {}
    failed, unsupported = [], []
    for r in recs:
        if _measured(r):
            groups.setdefault(tuple(r.get(k) for k in KEY), []).append(r)
        elif r.get("unsupported") is True:
            unsupported.append(r)
        else:
            failed.append(r)
    rows = sorted((_row(k, g) for k, g in groups.items()), key=_row_order)
    _compare(rows)
    return rows, failed, unsupported


# ----------------------------------------------------------------------------- Markdown

def _ms(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _spread(r: Record) -> str:
    return "?" if r["runs"] < 2 else f"{r['spread_pct']:.1f}%"


def _reason(r: Record, limit: Optional[int] = None) -> str:
    text = " ".join(str(r.get("error") or "no latency").split()).replace("|", "\\|")
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:  # at a word's end
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip() + "…"


def _threads(t: Any) -> Any:
    return t if t else "default"


def _image(img: Any) -> str:
    return "x".join(str(x) for x in img) if img else ""


def cell(r: Record) -> str:
    """'122.4 ms ±3.1% (0.51x)', '±?' for one measurement, a trailing ≈ for an overlap."""
    text = f"{_ms(r['latency_ms'])} ms ±{_spread(r)}"
    if r["mode"] != "bm" and r["ratio_to_bm"] is not None:
        text += f" ({r['ratio_to_bm']:.2f}x)"
    return text + (" ≈" if r["overlaps_with"] else "")


def side_by_side(rows: List[Record], failed: List[Record], unsupported: List[Record]
                 ) -> Tuple[List[str], List[Tuple[Tuple[Any, ...], Dict[str, str]]]]:
    """(modes in column order, [(config, {mode: cell text})] in row order)."""
    cells: Dict[Tuple[Any, ...], Dict[str, str]] = {}
    for r in rows:
        cells.setdefault(config_of(r), {})[r["mode"]] = cell(r)
    bad: Dict[Tuple[Any, ...], str] = {}  # a real failure's reason wins over "unsupported"
    for r in failed:
        bad.setdefault(config_of(r) + (r["mode"],), "failed: " + _reason(r, 60))
    for r in unsupported:
        bad.setdefault(config_of(r) + (r["mode"],), "unsupported: " + _reason(r, 60))
    for k, text in bad.items():
        cells.setdefault(k[:-1], {}).setdefault(k[-1], text)
    modes = sorted({m for c in cells.values() for m in c}, key=mode_rank)
    return modes, sorted(cells.items(), key=lambda kv: tuple(_sortable(v) for v in kv[0]))


def repeats_note(rows: List[Record]) -> str:
    seen = sorted({r["repeats"] for r in rows if isinstance(r.get("repeats"), int)})
    if seen:
        text = (f"Each cell is the median of R = {', '.join(str(n) for n in seen)} repeats of its "
                f"configuration per run, measured in interleaved order")
        if any(r.get("repeats") is None for r in rows):
            text += " (records without a repeat number: the median of the separate runs found)"
    else:
        text = "Each cell is the median of the separate runs found (no record has a repeat number)"
    return (text + "; ±: (max − min) / median; ±? where there is a single measurement (its spread "
            "is unknown); (N.NNx): latency per image relative to bm's in the same row.")


def _runtime(r: Record) -> str:
    q = r.get("quantization")
    return ", ".join(str(x) for x in (r.get("runtime"), r.get("delegate"),
                                       f"{q} quantized" if q else None) if x)


def _unsupported_lines(unsupported: List[Record]) -> List[str]:
    """One line per (host, model, mode, device, TF, reason): the batches and threads it covers."""
    groups: Dict[Tuple[Any, ...], List[Record]] = {}
    for r in unsupported:
        k = tuple(r.get(f) for f in ("host", "model", "mode", "device", "tf_version")) + (_reason(r),)
        groups.setdefault(k, []).append(r)
    lines = []
    for (host, model, mode, device, tf, reason), g in groups.items():
        batches = ", ".join(str(b) for b in sorted({r.get("batch") for r in g}, key=_sortable))
        threads = ", ".join(str(_threads(t)) for t in sorted({r.get("threads") for r in g},
                                                              key=_sortable))
        lines.append(f"- {host} {model} {mode} ({device}, TF {tf}), batch {batches}, threads "
                     f"{threads} ({len(g)} record(s)): {reason}")
    return lines


def markdown(rows: List[Record], failed: List[Record], unsupported: List[Record],
             n_files: int) -> str:
    modes, table = side_by_side(rows, failed, unsupported)
    lines = ["# EfficientDet benchmark report", "",
             f"{len(rows)} configurations from {n_files} benchmark.json file(s); latency is the "
             f"median of the measurements (per batch, as the stage timed it), fps = images fed "
             f"per timed run / median latency.", "",
             "## Side by side", "",
             "| host | model | device | batch | threads | TF | image | " + " | ".join(modes) + " |",
             "|---|---|---|---:|---:|---|---|" + "---:|" * len(modes)]
    for (host, model, device, batch, threads, tf, img), by_mode in table:
        lines.append(f"| {host} | {model} | {device} | {batch} | {_threads(threads)} | {tf} | "
                     f"{_image(img)} | " + " | ".join(by_mode.get(m, "—") for m in modes) + " |")
    lines += ["", repeats_note(rows)]
    if any(r["overlaps_with"] for r in rows):
        lines += ["", OVERLAP_NOTE]
    runtime = any(_runtime(r) for r in rows)
    lines += ["", "## Per configuration and mode", "",
              "| host | model | mode | device | batch | threads | image | TF | latency ms (median) "
              "| min | max | spread % | fps | images fed | measurements |"
              + (" runtime |" if runtime else ""),
              "|---|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
              + ("---|" if runtime else "")]
    for r in rows:
        spread = _spread(r).rstrip("%")
        lines.append(f"| {r['host']} | {r['model']} | {r['mode']} | {r['device']} | {r['batch']} | "
                     f"{_threads(r['threads'])} | {_image(r.get('image_size'))} | {r['tf_version']} | "
                     f"{r['latency_ms']:.2f} | {r['latency_min_ms']:.2f} | {r['latency_max_ms']:.2f} | "
                     f"{spread} | {r['fps']:.2f} | {r['images_fed']} | {r['runs']} |"
                     + (f" {_runtime(r)} |" if runtime else ""))
    if failed:
        lines += ["", f"## Failed measurements ({len(failed)})", ""]
        for r in failed:
            rep = f" repeat {r['repeat']}/{r.get('repeats')}" if r.get("repeat") else ""
            lines.append(f"- {r.get('host')} {r.get('model')} {r.get('mode')} batch {r.get('batch')} "
                         f"threads {r.get('threads')}{rep}: {_reason(r)} ({r['source']})")
    if unsupported:
        lines += ["", f"## Not measurable here ({len(unsupported)})", ""]
        lines += _unsupported_lines(unsupported)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- PNG

class Bar(NamedTuple):
    y: float
    median: float
    low: float
    high: float
    host: str
    text: str         # the annotation: the median, TF where the group mixes them, ≈ modes
    overlapped: bool  # its range overlaps another mode's in its side-by-side row


def bar_layout(rows: List[Record]) -> Tuple[List[Bar], List[float], List[str]]:
    """(bars, y of each group's tick, group labels): what `figure` plots, one group per (model,
    device, batch, threads, mode) in that order, one bar per row (host, TF, image) in it."""
    groups: Dict[Tuple[Any, ...], List[Record]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["device"], r["batch"], r["threads"], mode_rank(r["mode"])),
                          []).append(r)
    bars: List[Bar] = []
    ticks: List[float] = []
    labels: List[str] = []
    y = 0.0
    for k in sorted(groups, key=lambda k: tuple(_sortable(v) for v in k)):
        g = sorted(groups[k], key=lambda r: (str(r["host"]), _sortable(r["tf_version"]),
                                            _sortable(r.get("image_size"))))
        mixed_tf = len({r["tf_version"] for r in g}) > 1
        first = y
        for r in g:
            text = _ms(r["latency_ms"]) + (f" TF {r['tf_version']}" if mixed_tf else "")
            if r["overlaps_with"]:
                text += " ≈ " + ", ".join(r["overlaps_with"])
            bars.append(Bar(y, r["latency_ms"], r["latency_min_ms"], r["latency_max_ms"],
                            str(r["host"]), text, bool(r["overlaps_with"])))
            y += 1.0
        r = g[0]
        ticks.append((first + y - 1.0) / 2)
        labels.append(f"{str(r['model']).replace('efficientdet-', '')} {r['mode']} {r['device']} "
                      f"batch {r['batch']}, {_threads(r['threads'])} thread(s)")
        y += 0.6  # a gap between groups
    return bars, ticks, labels


def figure(rows: List[Record]) -> Any:
    """The matplotlib Figure (Agg) of `bar_layout(rows)`: the caller saves and closes it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    bars, ticks, labels = bar_layout(rows)
    hosts = sorted({b.host for b in bars})
    colours = {h: plt.get_cmap("tab10")(i % 10) for i, h in enumerate(hosts)}
    fig, ax = plt.subplots(figsize=(10.5, 1.8 + 0.26 * len(bars) + 0.12 * len(ticks)))
    drawn = ax.barh([b.y for b in bars], [b.median for b in bars], height=0.85,
                    color=[colours[b.host] for b in bars],
                    xerr=[[b.median - b.low for b in bars], [b.high - b.median for b in bars]],
                    error_kw={"ecolor": "black", "elinewidth": 0.9, "capsize": 2.5})
    for patch, b in zip(drawn.patches, bars):
        if b.overlapped:
            patch.set_hatch("///")
            patch.set_edgecolor("0.2")
        ax.annotate(b.text, (b.high, b.y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    lows, highs = [b.low for b in bars], [b.high for b in bars]
    what = "latency per batch (ms; bar: median, error bar: min–max"
    if max(highs) / min(lows) > 20:  # GPU next to CPU: only a log axis shows both
        ax.set_xscale("log")
        ax.set_xlim(right=max(highs) * 2.0)  # room for the annotations
        ax.set_xlabel(what + "; log scale)")
    else:
        ax.set_xlim(0, max(highs) * 1.25)
        ax.set_xlabel(what + ")")
    ax.set_title("EfficientDet latency (median of the measurements)", fontsize=10)
    handles = [Patch(color=colours[h], label=h) for h in hosts]
    if any(b.overlapped for b in bars):
        handles.append(Patch(facecolor="white", edgecolor="0.2", hatch="///",
                             label="≈ min–max overlaps\nanother mode's\n(same host, model,\n"
                                   "device, batch,\nthreads, TF)"))
    ax.legend(handles=handles, fontsize=7, title="host", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot(rows: List[Record], path: str) -> None:
    import matplotlib.pyplot as plt
    fig = figure(rows)
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
    rows, failed, unsupported = merge(recs)
    if not rows:
        print(f"effdetlab.benchreport: error: no successful measurement in {len(files)} file(s)",
              file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(rows, failed, unsupported, len(files)))
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"files": files, "rows": rows, "failed": failed, "unsupported": unsupported},
                  f, indent=1)
    plot(rows, a.out + ".png")
    print(json.dumps({"rows": len(rows), "failed": len(failed), "unsupported": len(unsupported),
                      "files": len(files), "markdown": a.out + ".md", "png": a.out + ".png"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
