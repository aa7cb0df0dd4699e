"""Throughput: effdetlab.convert vs automl's create_pascal_tfrecord on the same images.

    .venv-effdet/bin/python bench/converter_throughput.py [--num-images 1000] [--repeats 3]
        [--out bench/results/converter]      # writes converter.json and converter.md

Generates a clean VOC tree (JPEG 500x375, 1-4 boxes each) in automl's layout, then,
alternating the two tools after one warm-up run each (page cache hot for both):
  * end-to-end: each tool as a fresh `python -m ...` process, wall time of the process
    (what a user waits for; includes interpreter start and imports);
  * conversion only: the same work timed inside one process after the imports
    (automl: main() with tensorflow already imported; ours: convert()).
It checks that both tools wrote the same examples (all features compared per image).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from effdetlab.synth import automl_label_map_json, make_clean_voc  # noqa: E402

AUTOML = "tensorflow_examples.lite.model_maker.third_party.efficientdet.dataset.create_pascal_tfrecord"
CLASSES = ["person", "car", "dog", "bicycle"]

_AUTOML_INPROC = r"""
import sys, time
import tensorflow as tf
from absl import flags
from {mod} import main, define_flags
define_flags()
flags.FLAGS(['x'] + sys.argv[1:])
t = time.perf_counter(); main(None); print('SECONDS', time.perf_counter() - t)
"""
_OURS_INPROC = r"""
import sys, time
from effdetlab.convert import main
t = time.perf_counter(); rc = main(sys.argv[1:]); print('SECONDS', time.perf_counter() - t)
sys.exit(rc)
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2")


def _run(cmd: list) -> tuple:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    inner = [float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("SECONDS")]
    return wall, (inner[0] if inner else None)


def _compare(ours_glob: str, automl_glob: str) -> dict:
    import tensorflow as tf

    def load(pattern: str) -> dict:
        out = {}
        for rec in tf.data.TFRecordDataset(sorted(glob.glob(pattern))).as_numpy_iterator():
            ex = tf.train.Example.FromString(rec)
            out[ex.features.feature["image/filename"].bytes_list.value[0]] = ex
        return out
    a, b = load(ours_glob), load(automl_glob)
    same = sum(1 for k in b if k in a and a[k] == b[k])
    return {"ours_records": len(a), "automl_records": len(b), "identical_examples": same}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="ours: processes (default all cores)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "converter"),
                    help="output path without extension (.json and .md are written)")
    ap.add_argument("--workdir", default=None, help="where to generate data (default: a temp dir)")
    a = ap.parse_args()
    if a.num_images < 1:
        ap.error("--num-images must be >= 1")

    work = a.workdir or tempfile.mkdtemp(prefix="effdet-bench-")
    os.makedirs(work, exist_ok=True)
    data_root = os.path.join(work, "data")
    t = time.perf_counter()
    if os.path.isdir(data_root):
        shutil.rmtree(data_root)
    voc = make_clean_voc(data_root, a.num_images, CLASSES, seed=1, n_max=4)
    lm = os.path.join(work, "label_map.json")
    automl_label_map_json(lm, CLASSES)
    gen_s = time.perf_counter() - t
    data_mb = sum(os.path.getsize(p) for p in glob.glob(os.path.join(voc, "JPEGImages", "*"))) / 2**20
    print(f"generated {a.num_images} images ({data_mb:.1f} MiB) in {gen_s:.1f} s under {work}", flush=True)

    py = sys.executable
    out_automl, out_ours = os.path.join(work, "automl"), os.path.join(work, "ours")
    automl_args = [f"--data_dir={data_root}", "--year=VOC2007", "--set=train",
                   f"--output_path={os.path.join(out_automl, 'pascal')}", f"--label_map_json_path={lm}"]
    ours_args = ["--data-dir", voc, "--output-dir", out_ours, "--set", "train", "--label-map", lm,
                 "--overwrite"] + (["--workers", str(a.workers)] if a.workers else [])
    runs = {
        "automl_e2e": [py, "-m", AUTOML] + automl_args,
        "ours_e2e": [py, "-m", "effdetlab.convert"] + ours_args,
        "automl_inproc": [py, "-c", _AUTOML_INPROC.format(mod=AUTOML)] + automl_args,
        "ours_inproc": [py, "-c", _OURS_INPROC] + ours_args,
    }
    times: dict = {k: [] for k in runs}
    for rep in range(a.repeats + 1):  # round 0 is the warm-up, not counted
        for name, cmd in runs.items():
            shutil.rmtree(out_automl if name.startswith("automl") else out_ours, ignore_errors=True)
            wall, inner = _run(cmd)
            if rep:
                times[name].append(inner if name.endswith("inproc") else wall)
        if rep:
            print(f"round {rep}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)

    check = _compare(os.path.join(out_ours, "train-*.tfrecord"), os.path.join(out_automl, "pascal-*.tfrecord"))
    with open(os.path.join(out_ours, "report.json"), encoding="utf-8") as f:
        rep_ours = json.load(f)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = a.num_images
    result = {
        "num_images": n, "data_mib": round(data_mb, 1), "repeats": a.repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "ours_workers": rep_ours["options"].get("workers"),
        "ours_record_writer": rep_ours["options"].get("record_writer"),
        "ours_shards": len(rep_ours["shards"]), "automl_shards": 100,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "images_per_second": {k: round(n / v, 1) for k, v in med.items()},
        "speedup_end_to_end": round(med["automl_e2e"] / med["ours_e2e"], 2),
        "speedup_conversion_only": round(med["automl_inproc"] / med["ours_inproc"], 2),
        "output_check": check,
    }
    md = [
        f"# Converter throughput: {n} images ({data_mb:.1f} MiB JPEG, 500x375, 1-4 boxes), "
        f"{os.cpu_count()} CPUs", "",
        "| measurement | automl create_pascal_tfrecord | effdetlab.convert | speed-up |",
        "|---|---:|---:|---:|",
        f"| end-to-end process wall, s (median of {a.repeats}) | {med['automl_e2e']:.2f} | {med['ours_e2e']:.2f} "
        f"| {result['speedup_end_to_end']}x |",
        f"| end-to-end images/s | {n / med['automl_e2e']:.0f} | {n / med['ours_e2e']:.0f} | |",
        f"| conversion only (after imports), s | {med['automl_inproc']:.3f} | {med['ours_inproc']:.3f} "
        f"| {result['speedup_conversion_only']}x |",
        f"| conversion only images/s | {n / med['automl_inproc']:.0f} | {n / med['ours_inproc']:.0f} | |",
        "",
        f"- ours: {result['ours_workers']} worker process(es), record writer `{result['ours_record_writer']}`, "
        f"{result['ours_shards']} shard(s); automl: its default 100 shards, label map json.",
        f"- output check: {check['identical_examples']}/{check['automl_records']} examples identical "
        f"(all features, matched by file name).",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwrote {a.out}.json and {a.out}.md")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if check["identical_examples"] == check["automl_records"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
