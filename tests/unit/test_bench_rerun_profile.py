"""bench/rerun_profile.py: the fleet sizes it takes and the scaling table it writes."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("rerun_profile", REPO / "bench" / "rerun_profile.py")
rerun_profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rerun_profile)


def run(label: str, hosts: int, wall: float) -> dict:
    return {"label": label, "hosts": hosts, "rerun": {"wall_s": wall}}


def test_fleet_sizes_are_one_or_several():
    assert rerun_profile.parse_hosts("1") == [1]
    assert rerun_profile.parse_hosts("1,4,8") == [1, 4, 8]
    for bad in ("", "0", "1,-2"):
        with pytest.raises(argparse.ArgumentTypeError, match="fleet sizes"):
            rerun_profile.parse_hosts(bad)


def test_the_scaling_table_divides_each_variant_by_its_own_smallest_fleet():
    results = [run("before", 1, 20.0), run("after", 1, 8.0), run("before", 8, 100.0), run("after", 8, 22.0)]
    table = rerun_profile.scaling(results)
    assert "| variant | 1 host(s) (s) | 8 host(s) (s) | 8 / 1 |" in table
    assert "| before | 20.0 | 100.0 | 5.00x |" in table
    assert "| after | 8.0 | 22.0 | 2.75x |" in table
    # one fleet size: nothing to compare
    assert rerun_profile.scaling(results[:2]) == []


def test_the_median_re_run_is_reported():
    runs = [{"wall_s": 14.5}, {"wall_s": 11.0}, {"wall_s": 12.2}]
    assert rerun_profile.median_run(runs) == {"wall_s": 12.2}
    assert rerun_profile.median_run(runs[:2]) == {"wall_s": 11.0}    # an even count: the lower middle one
    assert rerun_profile.median_run(runs[:1]) == {"wall_s": 14.5}


def test_the_fleet_hosts_come_from_the_generated_inventory_in_order(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    gpu_hosts:\n      hosts:\n"
                         + "".join(f"        labhost-{i}:\n          ansible_port: {2220 + i}\n" for i in (1, 2, 10))
                         + "      vars:\n        ansible_user: root\n")
    assert rerun_profile.fleet_hosts(inventory) == ["labhost-1", "labhost-2", "labhost-10"]


def test_alternating_rounds_limit_one_fleet_to_each_size_in_turn(tmp_path, monkeypatch):
    inventory = REPO / "inventory" / "labbox" / "hosts.yml"
    calls = []
    monkeypatch.setattr(rerun_profile.subprocess, "run", lambda *a, **k: calls.append(("labbox", a[0])))
    monkeypatch.setattr(rerun_profile, "fleet_hosts", lambda path: [f"labhost-{i}" for i in range(1, 9)]
                        if path == inventory else [])
    walls = iter([100.0, 4.0, 12.0, 13.0, 4.2, 3.9, 11.5])

    def converge(cwd, tags, env, profile, playbook="site.yml", extra=None):
        limit = extra[extra.index("--limit") + 1].split(",") if extra else None
        calls.append(("converge", limit))
        return {"wall_s": next(walls), "rc": 0, "changed": 0, "hosts": len(limit) if limit else 8}

    monkeypatch.setattr(rerun_profile, "profiled_converge", converge)
    alt = rerun_profile.alternate({"label": "after", "ref": None, "env": {}}, [1, 8], "host", tmp_path, 3)
    assert calls[0][0] == "labbox" and calls[0][1][-3:] == ["--hosts", "8", "--fresh"]   # fresh, the largest size
    limits = [c[1] for c in calls if c[0] == "converge"]
    assert limits[0] is None                      # the first converge: the whole fleet
    one, eight = ["labhost-1"], [f"labhost-{i}" for i in range(1, 9)]
    assert limits[1:] == [one, eight, eight, one, one, eight]    # ascending, descending, ascending
    assert alt["walls"] == {1: [4.0, 4.2, 3.9], 8: [12.0, 13.0, 11.5]}
    assert alt["median_s"] == {1: 4.0, 8: 12.0}
    assert alt["hosts_seen"] == {1: [1], 8: [8]}
    table = rerun_profile.alternating_table([alt])
    assert "| variant | 1 host(s) (s) | 8 host(s) (s) | 8 / 1 | every round (s) |" in table
    assert "| after | 4.0 | 12.0 | 3.00x | 4.0, 4.2, 3.9 / 12.0, 13.0, 11.5 |" in table
    assert rerun_profile.alternating_table([]) == []
