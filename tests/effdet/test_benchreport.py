"""effdetlab.benchreport: merge benchmark.json files from several hosts/runs."""
from __future__ import annotations

import json
import os

from conftest import run_cli
from effdetlab import benchreport as br

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TF21_REASON = ("TF 2.1's converter cannot export this model to TFLite "
               "(tf.lite.TFLiteConverter.from_saved_model: unsupported ops NonMaxSuppressionV5)")


def rec(host, mode, threads, lat, ok=True, model="efficientdet-d0", batch=1, **kw):
    """An old-style record (no repeat, images_fed, runtime, ...): add them through **kw."""
    r = {"host": host, "model": model, "mode": mode, "batch": batch, "threads": threads,
         "device": "cpu", "latency_ms": lat, "fps": (1000.0 * batch / lat) if lat else None,
         "tf_version": "2.15.1", "timestamp": "2026-11-30T02:00:00+0000", "ok": ok,
         "image_size": [512, 512]}
    r.update(kw)
    return r


def repeats(host, mode, lats, threads=4, **kw):
    """One configuration measured len(lats) times, as the stage's repeats 1..R."""
    return [rec(host, mode, threads, lat, repeat=i + 1, repeats=len(lats), **kw)
            for i, lat in enumerate(lats)]


def write(root, rel, records):
    d = os.path.join(str(root), rel)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "benchmark.json"), "w") as f:
        json.dump(records, f)


def report(tmp_path, name="report"):
    """Run the CLI on tmp_path; (stdout summary, Markdown, merged JSON)."""
    out = tmp_path / "out" / name
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(out))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "out" / (name + ".md")).read_text(encoding="utf-8")
    merged = json.loads((tmp_path / "out" / (name + ".json")).read_text())
    return json.loads(r.stdout), md, merged


def side_by_side_lines(md):
    part = md.split("## Side by side", 1)[1].split("## Per configuration and mode", 1)[0]
    return [line for line in part.splitlines() if line.startswith("| ")]


def test_merge_two_hosts_two_runs(tmp_path):
    write(tmp_path, "run1/lab-a", [rec("lab-a", "bm", 1, 240.0), rec("lab-a", "bm", 2, 156.0),
                                   rec("lab-a", "e2e", 1, 300.0)])
    write(tmp_path, "run2/lab-a", [rec("lab-a", "bm", 1, 250.0), rec("lab-a", "bm", 2, None, ok=False,
                                                                     error="ValueError: boom")])
    write(tmp_path, "run1/lab-b", [rec("lab-b", "bm", 1, 21.0, device="gpu")])
    with open(tmp_path / "run2" / "junk.json", "w") as f:
        f.write("{}")
    out, md, merged = report(tmp_path)
    assert out == {"rows": 4, "failed": 1, "unsupported": 0, "files": 3,
                   "markdown": str(tmp_path / "out" / "report.md"),
                   "png": str(tmp_path / "out" / "report.png")}
    # lab-a bm 1 thread: median of 240 and 250 over 2 runs (old records: no repeat number);
    # spread 10/245 = 4.1 %; fps from the median and the batch (no images_fed in old records)
    assert ("| lab-a | efficientdet-d0 | bm | cpu | 1 | 1 | 512x512 | 2.15.1 | 245.00 | 240.00 | "
            "250.00 | 4.1 | 4.08 | 1 | 2 |") in md
    assert "| lab-a | efficientdet-d0 | bm | cpu | 1 | 2 | 512x512 | 2.15.1 | 156.00 |" in md
    assert "| lab-b | efficientdet-d0 | bm | cpu | 1 | 1 |" not in md
    assert "| lab-b | efficientdet-d0 | bm | gpu | 1 | 1 |" in md
    assert side_by_side_lines(md) == [
        "| host | model | device | batch | threads | TF | image | bm | e2e |",
        "| lab-a | efficientdet-d0 | cpu | 1 | 1 | 2.15.1 | 512x512 | 245.0 ms ±4.1% | "
        "300.0 ms ±? (1.22x) |",
        # one of the two 2-thread bm records failed: the other is the median, the failure is listed
        "| lab-a | efficientdet-d0 | cpu | 1 | 2 | 2.15.1 | 512x512 | 156.0 ms ±? | — |",
        "| lab-b | efficientdet-d0 | gpu | 1 | 1 | 2.15.1 | 512x512 | 21.0 ms ±? | — |"]
    assert "no record has a repeat number" in md
    assert "## Failed measurements (1)" in md and "ValueError: boom" in md
    assert "Not measurable here" not in md and "runtime |" not in md
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 5000
    assert len(merged["rows"]) == 4 and len(merged["files"]) == 3 and merged["unsupported"] == []


def test_merge_orders_and_skips():
    rows, failed, unsupported = br.merge([rec("h", "bm", 2, 10.0), rec("h", "bm", 1, 20.0),
                                          rec("h", "bm", 0, 5.0), rec("h", "e2e", 1, -1.0)])
    assert [r["threads"] for r in rows] == [0, 1, 2] and len(failed) == 1 and unsupported == []
    assert rows[0]["fps"] == 200.0


def test_repeats_give_median_min_max_spread(tmp_path):
    write(tmp_path, "lab-a", repeats("lab-a", "bm", [110.0, 100.0, 104.0]))
    out, md, merged = report(tmp_path)
    assert out["rows"] == 1
    row = merged["rows"][0]
    assert (row["latency_ms"], row["latency_min_ms"], row["latency_max_ms"]) == (104.0, 100.0, 110.0)
    assert row["spread_pct"] == 9.615  # 100 * (110 - 100) / 104
    assert row["runs"] == 3 and row["repeats"] == 3 and row["images_fed"] == 1
    assert row["fps"] == 9.615 and row["ratio_to_bm"] == 1.0 and row["overlaps_with"] == []
    assert ("| lab-a | efficientdet-d0 | bm | cpu | 1 | 4 | 512x512 | 2.15.1 | 104.00 | 100.00 | "
            "110.00 | 9.6 | 9.62 | 1 | 3 |") in md
    assert side_by_side_lines(md)[1].endswith("| 104.0 ms ±9.6% |")
    assert "median of R = 3 repeats of its configuration per run, measured in interleaved order" in md


def test_fps_from_images_fed(tmp_path):
    """fps = images_fed * 1000 / median; an old record without images_fed fed its batch."""
    write(tmp_path, "new", [rec("new", "bm", 1, 400.0, batch=8, images_fed=8, repeat=1, repeats=1)])
    write(tmp_path, "old", [rec("old", "bm", 1, 400.0, batch=8)])
    # a runtime that fed 2 images per timed run at batch 8 (fps from what it fed, not the batch)
    write(tmp_path, "two", [rec("two", "bm", 1, 400.0, batch=8, images_fed=2)])
    _out, md, merged = report(tmp_path)
    by_host = {r["host"]: r for r in merged["rows"]}
    assert {h: (r["images_fed"], r["fps"]) for h, r in by_host.items()} == {
        "new": (8, 20.0), "old": (8, 20.0), "two": (2, 5.0)}
    assert "| 400.00 | 400.00 | 400.00 | ? | 20.00 | 8 | 1 |" in md
    assert "| 400.00 | 400.00 | 400.00 | ? | 5.00 | 2 | 1 |" in md
    # R = 1 for the new records; the old ones have no repeat number and say so
    assert "median of R = 1 repeats" in md and "records without a repeat number" in md


def test_side_by_side_modes_and_ratios(tmp_path):
    tfl = {"runtime": "TFLite interpreter", "delegate": "XNNPACK (TF 2.15.1 default)"}
    write(tmp_path, "lab-a", repeats("lab-a", "tflite-fp16", [80.0, 81.0, 82.0], **tfl)
          + repeats("lab-a", "tflite-drq", [51.0, 50.0, 53.0], quantization="dynamic-range", **tfl)
          + repeats("lab-a", "tflite", [102.0, 100.0, 104.0], **tfl)
          + repeats("lab-a", "e2e", [300.0, 306.0, 312.0])
          + repeats("lab-a", "bm", [200.0, 204.0, 210.0]))
    _out, md, merged = report(tmp_path)
    assert side_by_side_lines(md) == [
        "| host | model | device | batch | threads | TF | image | bm | e2e | tflite | tflite-drq "
        "| tflite-fp16 |",
        "| lab-a | efficientdet-d0 | cpu | 1 | 4 | 2.15.1 | 512x512 | 204.0 ms ±4.9% | "
        "306.0 ms ±3.9% (1.50x) | 102.0 ms ±3.9% (0.50x) | 51.0 ms ±5.9% (0.25x) | "
        "81.0 ms ±2.5% (0.40x) |"]
    assert "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|" in md
    ratios = {r["mode"]: r["ratio_to_bm"] for r in merged["rows"]}
    assert ratios == {"bm": 1.0, "e2e": 1.5, "tflite": 0.5, "tflite-drq": 0.25, "tflite-fp16": 0.397}
    drq = [r for r in merged["rows"] if r["mode"] == "tflite-drq"][0]
    assert (drq["runtime"], drq["delegate"], drq["quantization"]) == (
        "TFLite interpreter", "XNNPACK (TF 2.15.1 default)", "dynamic-range")
    assert ("| 51.00 | 50.00 | 53.00 | 5.9 | 19.61 | 1 | 3 | TFLite interpreter, "
            "XNNPACK (TF 2.15.1 default), dynamic-range quantized |") in md
    assert "≈" not in md  # no range overlaps another here
    # per-row table: modes in the same order, under each configuration
    modes = [line.split(" | ")[2] for line in md.splitlines()
             if line.startswith("| lab-a | efficientdet-d0 | ") and " ms " not in line]
    assert modes == ["bm", "e2e", "tflite", "tflite-drq", "tflite-fp16"]


def test_ratio_is_per_image_when_the_runtimes_fed_different_counts():
    rows, _f, _u = br.merge([rec("h", "bm", 1, 100.0, batch=4, images_fed=4),
                             rec("h", "tflite", 1, 50.0, batch=4, images_fed=1)])
    assert [(r["mode"], r["ratio_to_bm"]) for r in rows] == [("bm", 1.0), ("tflite", 2.0)]


def test_overlapping_ranges_are_marked(tmp_path):
    write(tmp_path, "lab-a", repeats("lab-a", "bm", [100.0, 104.0, 110.0])
          + repeats("lab-a", "tflite", [112.0, 106.0, 120.0])     # 106..120 overlaps 100..110
          + repeats("lab-a", "e2e", [200.0, 210.0, 205.0]))       # apart from both
    _out, md, merged = report(tmp_path)
    assert side_by_side_lines(md)[1] == (
        "| lab-a | efficientdet-d0 | cpu | 1 | 4 | 2.15.1 | 512x512 | 104.0 ms ±9.6% ≈ | "
        "205.0 ms ±4.9% (1.97x) | 112.0 ms ±12.5% (1.08x) ≈ |")
    assert br.OVERLAP_NOTE in md
    assert md.index(br.OVERLAP_NOTE) < md.index("## Per configuration and mode")
    assert {r["mode"]: r["overlaps_with"] for r in merged["rows"]} == {
        "bm": ["tflite"], "e2e": [], "tflite": ["bm"]}


def test_overlap_only_within_one_row_and_touching_counts():
    rows, _f, _u = br.merge(
        repeats("a", "bm", [100.0, 110.0]) + repeats("a", "tflite", [110.0, 120.0])  # touch at 110
        + repeats("a", "bm", [100.0, 110.0], threads=8)
        + repeats("a", "tflite", [110.5, 120.0], threads=8)                  # just apart
        + repeats("b", "e2e", [100.0, 110.0]))   # same range on another host: another row
    got = {(r["host"], r["mode"], r["threads"]): r["overlaps_with"] for r in rows}
    assert got == {("a", "bm", 4): ["tflite"], ("a", "tflite", 4): ["bm"],
                   ("a", "bm", 8): [], ("a", "tflite", 8): [], ("b", "e2e", 4): []}
    assert br.overlap(rows[0], rows[0])
    assert br.cell(rows[0]) == "105.0 ms ±9.5% ≈"


def test_single_measurement_spread_is_unknown(tmp_path):
    write(tmp_path, "lab-a", repeats("lab-a", "bm", [50.0]) + repeats("lab-a", "e2e", [75.0]))
    _out, md, merged = report(tmp_path)
    assert side_by_side_lines(md)[1].endswith("| 50.0 ms ±? | 75.0 ms ±? (1.50x) |")
    assert "±0.0%" not in md and "±?" in md
    assert "| 50.00 | 50.00 | 50.00 | ? | 20.00 | 1 | 1 |" in md
    assert [r["spread_pct"] for r in merged["rows"]] == [0.0, 0.0]


def test_unsupported_mode_keeps_its_cell_and_is_not_a_failure(tmp_path):
    bad = dict(ok=False, unsupported=True, error=TF21_REASON, tf_version="2.1.0")
    write(tmp_path, "lab-21", repeats("lab-21", "bm", [300.0, 310.0], tf_version="2.1.0")
          + repeats("lab-21", "tflite", [None, None], **bad)
          + repeats("lab-21", "tflite", [None, None], batch=8, **bad)
          + repeats("lab-21", "e2e", [None], ok=False, error="OSError: saved_model.pb | missing",
                    tf_version="2.1.0"))
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["failed"] == 1 and json.loads(r.stdout)["unsupported"] == 4
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    lines = side_by_side_lines(md)
    assert lines[0] == "| host | model | device | batch | threads | TF | image | bm | e2e | tflite |"
    assert lines[1] == (
        "| lab-21 | efficientdet-d0 | cpu | 1 | 4 | 2.1.0 | 512x512 | 305.0 ms ±3.3% | "
        "failed: OSError: saved_model.pb \\| missing | "
        "unsupported: TF 2.1's converter cannot export this model to TFLite… |")
    # the configuration with nothing measured still has its row
    assert lines[2] == ("| lab-21 | efficientdet-d0 | cpu | 8 | 4 | 2.1.0 | 512x512 | — | — | "
                        "unsupported: TF 2.1's converter cannot export this model to TFLite… |")
    assert "## Failed measurements (1)" in md and "## Not measurable here (4)" in md
    not_here = md.split("## Not measurable here (4)", 1)[1]
    assert (f"- lab-21 efficientdet-d0 tflite (cpu, TF 2.1.0), batch 1, 8, threads 4 (4 record(s)): "
            f"{TF21_REASON}") in not_here
    assert TF21_REASON not in md.split("## Failed measurements", 1)[1].split("## Not measurable")[0]
    merged = json.loads((tmp_path / "r.json").read_text())
    assert len(merged["failed"]) == 1 and len(merged["unsupported"]) == 4


def test_png_bars_carry_min_max_error_bars(tmp_path):
    import matplotlib.pyplot as plt
    import pytest
    from matplotlib.container import BarContainer
    rows, _f, _u = br.merge(
        repeats("lab-a", "bm", [100.0, 104.0, 110.0]) + repeats("lab-a", "tflite", [106.0, 112.0, 120.0])
        + repeats("lab-b", "bm", [9.0, 10.0, 12.0], device="gpu"))
    bars, ticks, labels = br.bar_layout(rows)
    assert [(b.host, b.median, b.low, b.high, b.overlapped, b.text) for b in bars] == [
        ("lab-a", 104.0, 100.0, 110.0, True, "104.0 ≈ tflite"),
        ("lab-a", 112.0, 106.0, 120.0, True, "112.0 ≈ bm"),
        ("lab-b", 10.0, 9.0, 12.0, False, "10.0")]
    assert labels == ["d0 bm cpu batch 1, 4 thread(s)", "d0 tflite cpu batch 1, 4 thread(s)",
                      "d0 bm gpu batch 1, 4 thread(s)"]
    assert ticks == pytest.approx([0.0, 1.6, 3.2])
    fig = br.figure(rows)
    try:
        ax = fig.axes[0]
        (drawn,) = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert [p.get_width() for p in drawn.patches] == [104.0, 112.0, 10.0]
        assert [p.get_hatch() for p in drawn.patches] == ["///", "///", None]
        segments = drawn.errorbar.lines[2][0].get_segments()
        assert [(s[0][0], s[1][0], s[0][1]) for s in segments] == [
            (100.0, 110.0, 0.0), (106.0, 120.0, 1.6), (9.0, 12.0, 3.2)]
        assert [t.get_text() for t in ax.texts] == ["104.0 ≈ tflite", "112.0 ≈ bm", "10.0"]
        assert ax.get_xscale() == "linear"  # 120 / 9 is under 20x
        assert "≈ min–max overlaps" in ax.get_legend().get_texts()[-1].get_text()
    finally:
        plt.close(fig)
    fig = br.figure(rows + br.merge(repeats("lab-b", "bm", [1.5, 2.0, 2.5], device="gpu",
                                            batch=2))[0])
    try:
        assert fig.axes[0].get_xscale() == "log"  # 120 / 1.5: a log axis shows both
    finally:
        plt.close(fig)
    path = tmp_path / "p.png"
    br.plot(rows, str(path))
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000


def test_no_results_is_exit_2(tmp_path):
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "no benchmark.json" in r.stderr
    write(tmp_path, "a", [rec("h", "bm", 1, None, ok=False)])
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "no successful measurement" in r.stderr
    write(tmp_path, "a", [rec("h", "tflite", 1, None, ok=False, unsupported=True, error="no")])
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "no successful measurement" in r.stderr


def test_report_written_inside_the_results_folder_is_not_read_back(tmp_path):
    """effdet_tasks writes the report as <results>/<run>/benchmark.{md,png,json}, inside the folder it
    reads: a second merge must see the hosts' files only, with no warning about its own output."""
    write(tmp_path, "lab-a/benchmark/d0-b1", [rec("lab-a", "bm", 1, 20.0)])
    write(tmp_path, "lab-b/benchmark/d0-b2", [rec("lab-b", "bm", 1, 30.0, batch=2)])
    for _ in range(2):
        r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "benchmark"))
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        assert json.loads(r.stdout)["files"] == 2
    merged = json.loads((tmp_path / "benchmark.json").read_text())
    assert len(merged["files"]) == 2 and {row["host"] for row in merged["rows"]} == {"lab-a", "lab-b"}
    assert "2 benchmark.json file(s)" in (tmp_path / "benchmark.md").read_text(encoding="utf-8")
