"""effdetlab.benchreport: merge benchmark.json files from several hosts/runs."""
from __future__ import annotations

import json
import os

from conftest import run_cli
from effdetlab import benchreport as br


def rec(host, mode, threads, lat, ok=True, model="efficientdet-d0", batch=1, **kw):
    r = {"host": host, "model": model, "mode": mode, "batch": batch, "threads": threads,
         "device": "cpu", "latency_ms": lat, "fps": (1000.0 * batch / lat) if lat else None,
         "tf_version": "2.15.1", "timestamp": "2026-11-30T02:00:00+0000", "ok": ok,
         "image_size": [512, 512]}
    r.update(kw)
    return r


def write(root, rel, records):
    d = os.path.join(str(root), rel)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "benchmark.json"), "w") as f:
        json.dump(records, f)


def test_merge_two_hosts_two_runs(tmp_path):
    write(tmp_path, "run1/lab-a", [rec("lab-a", "bm", 1, 240.0), rec("lab-a", "bm", 2, 156.0),
                                   rec("lab-a", "e2e", 1, 300.0)])
    write(tmp_path, "run2/lab-a", [rec("lab-a", "bm", 1, 250.0), rec("lab-a", "bm", 2, None, ok=False,
                                                                     error="ValueError: boom")])
    write(tmp_path, "run1/lab-b", [rec("lab-b", "bm", 1, 21.0, device="gpu")])
    with open(tmp_path / "run2" / "junk.json", "w") as f:
        f.write("{}")
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "out" / "report"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"rows": 4, "failed": 1, "files": 3, "markdown": str(tmp_path / "out" / "report.md"),
                   "png": str(tmp_path / "out" / "report.png")}
    md = (tmp_path / "out" / "report.md").read_text()
    # lab-a bm 1 thread: median of 240 and 250 over 2 runs; fps from the median
    assert "| lab-a | efficientdet-d0 | bm | cpu | 1 | 1 | 512x512 | 2.15.1 | 245.00 | 240.00 | 250.00 | 4.08 | 2 |" in md
    assert "| lab-a | efficientdet-d0 | bm | cpu | 1 | 2 | 512x512 | 2.15.1 | 156.00 |" in md
    assert "| lab-b | efficientdet-d0 | bm | gpu | 1 | 1 |" in md
    assert "## Failed measurements (1)" in md and "ValueError: boom" in md
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    merged = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(merged["rows"]) == 4 and len(merged["files"]) == 3


def test_merge_orders_and_skips():
    rows, failed = br.merge([rec("h", "bm", 2, 10.0), rec("h", "bm", 1, 20.0), rec("h", "bm", 0, 5.0),
                             rec("h", "e2e", 1, -1.0)])
    assert [r["threads"] for r in rows] == [0, 1, 2] and len(failed) == 1
    assert rows[0]["fps"] == 200.0


def test_no_results_is_exit_2(tmp_path):
    r = run_cli("-m", "effdetlab.benchreport", str(tmp_path), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "no benchmark.json" in r.stderr
    write(tmp_path, "a", [rec("h", "bm", 1, None, ok=False)])
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
    assert "2 benchmark.json file(s)" in (tmp_path / "benchmark.md").read_text()
