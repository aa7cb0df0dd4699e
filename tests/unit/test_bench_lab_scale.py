"""bench/lab_scale.py: issue 12's targets read from its three parts' results."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lab_scale", REPO / "bench" / "lab_scale.py")
lab_scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_scale)


def rerun(wall: float, cpu_s: float, tasks: int, hosts: int = 1) -> dict:
    return {"wall_s": wall, "machine_cpu_s": cpu_s, "hosts": hosts, "host_tasks": tasks,
            "machine_cpu_ms_per_host_task": round(1000 * cpu_s / tasks, 1)}


def site_rows(after_cpu_s: float) -> list[dict]:
    first = {"wall_s": 568.4, "wall_without_image_build_s": 550.0}
    return [
        {"label": "before (938e3cf)", "first": first, "rerun": rerun(80.0, 82.0, 288), "rerun_over_first": 0.145},
        {"label": "after (mitogen)", "first": first, "rerun": rerun(16.8, after_cpu_s, 248),
         "rerun_over_first": 0.031},
    ]


def by_what(targets: list[dict]) -> dict[str, dict]:
    return {t["what"]: t for t in targets}


def test_the_whole_site_targets_divide_after_by_before_per_host_task():
    targets = by_what(lab_scale.site_targets(site_rows(17.5)))
    share = targets["whole site, 1 host: no-change re-run / first converge (image build excluded)"]
    assert share["value"] == 0.031 and share["limit"] == 0.15 and share["holds"]
    cpu = targets["whole site, 1 host: machine CPU per host-task, after / before"]
    # 17.5 s / 248 tasks = 70.6 ms against 82.0 s / 288 tasks = 284.7 ms
    assert cpu["value"] == round(70.6 / 284.7, 3) and cpu["holds"]
    assert "per host 0.213x" in cpu["detail"]
    # The same CPU spread over fewer tasks is more per task: 24 s of 248 tasks is 96.8 ms, 0.34x: not a third.
    assert not lab_scale.site_targets(site_rows(24.0))[1]["holds"]


def host_rows() -> list[dict]:
    rows = []
    for label, walls, cpus in (("before", (16.8, 74.7), (140.0, 146.0)), ("after", (2.7, 7.5), (38.5, 23.6))):
        for n, wall, cpu in zip((1, 8), walls, cpus):
            rows.append({"label": label, "hosts": n, "rerun": {"wall_s": wall, "machine_cpu_ms_per_host_task": cpu}})
    return rows


def test_the_host_layer_targets_scale_each_variant_by_its_own_smallest_fleet():
    alternated = json.loads(json.dumps([{"label": "after", "median_s": {1: 3.4, 8: 10.0}},
                                        {"label": "before", "median_s": {1: 17.0, 8: 70.0}}]))  # keys as JSON has them
    targets = lab_scale.host_layer_targets(host_rows(), alternated)
    found = by_what(targets)
    own = found["host layer: no-change re-run, 8 hosts / 1 host (fleets of their own)"]
    assert own["value"] == round(7.5 / 2.7, 3) and own["holds"]
    alt = found["host layer: no-change re-run, 8 hosts / 1 host (alternated on one fleet)"]
    assert alt["value"] == round(10.0 / 3.4, 3) and alt["holds"]
    assert len([t for t in targets if "alternated" in t["what"]]) == 1, "only the 'after' variant is a target"
    assert found["host layer, 1 host(s): machine CPU per host-task, after / before"]["value"] == 0.275
    assert found["host layer, 8 host(s): machine CPU per host-task, after / before"]["value"] == round(23.6 / 146, 3)


def test_a_slow_large_fleet_fails_the_scaling_target():
    rows = host_rows()
    rows[3]["rerun"]["wall_s"] = 9.0
    own = lab_scale.host_layer_targets(rows, [])[0]
    assert own["value"] == round(9.0 / 2.7, 3) and not own["holds"]


def test_the_dataset_targets_and_the_table():
    res = {"images": 10000, "rsync_s": 7.2, "first": {"put_s": 7.7}, "rerun": {"wall_s": 4.3, "changed": 0}}
    targets = lab_scale.dataset_targets(res)
    assert [t["holds"] for t in targets] == [True, True]
    assert targets[1]["value"] == round(7.7 / 7.2, 3)
    res["rerun"]["wall_s"] = 10.5
    targets = lab_scale.dataset_targets(res)
    assert not targets[0]["holds"]
    table = lab_scale.markdown(targets, {"dataset_scale": 0})
    assert "| data stage, 10000 images: no-change re-run (whole --tags data) | 10.5 s | 10 s | NO | changed=0 |" in table
    assert "Parts (exit status): dataset_scale 0" in table


def test_a_missing_figure_does_not_hold():
    assert not lab_scale.target("x", None, 1.0)["holds"]
    assert lab_scale.target("x", 1.0, 1.0)["holds"]


def test_the_plot_is_written(tmp_path):
    targets = [lab_scale.target("a", 0.5, 1.0), lab_scale.target("b", 2.0, 1.0)]
    lab_scale.plot(targets, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_part_that_fails_before_writing_leaves_no_older_figures(tmp_path):
    out = tmp_path / "lab-scale-site"
    for old in (out.with_suffix(".json"), out.with_suffix(".alternating.json")):
        old.write_text("[]\n")  # an earlier run's results
    rc = lab_scale.part("site_rerun.py", out)  # no --before: argparse refuses before any bench runs
    assert rc == 2
    assert not out.with_suffix(".json").exists() and not out.with_suffix(".alternating.json").exists()
    with pytest.raises(SystemExit, match=f"site_rerun.py wrote no {out}.json \\(exit status 2\\)"):
        lab_scale.results(out, "site_rerun.py", rc)
