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
