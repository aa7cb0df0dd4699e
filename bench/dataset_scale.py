"""A lab-scale dataset through the data stage, against a plain rsync of the same tree, in one run.

On labhost-1 of the lab-in-a-box (converged up to the lab container first):

1. a labelImg-style VOC tree of --images images (labbox/demo_data.py's messy
   names, 320x240; generated once into bench/results/voc-<N>/);
2. plain rsync: `rsync -a` of the tree over ssh to the same host (rsync is
   installed on the simulated host for this, a bench-only change);
3. the data stage's first run (`playbooks/effdet.yml --tags data`) into an
   empty destination with an empty controller sha1 cache: the transfer task
   and the conversion, timed task by task;
   2 and 3 run --repeat times, one after the other (rsync, first run, rsync,
   first run, ...), each first run from an empty destination and cache again:
   how fast the simulated host writes 20,000 files varies by half from minute
   to minute on this kind of machine, for rsync and the stage alike. The
   summary gives the medians and the ratio of the medians, and every run;
4. its no-change re-run: the whole `--tags data` run, and the transfer task in it.

    .venv/bin/python bench/dataset_scale.py [--images 10000] [--repeat 3] [--out bench/results/dataset]

Writes <out>.json, <out>.md and <out>.png.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from labbox.demo_data import make_demo_dataset  # noqa: E402
from rerun_profile import profiled_converge  # noqa: E402

HOST = "labhost-1"
SIM = "effdet-lab-host-1"
HOST_DIR = "/srv/effdet-lab/data"         # effdet_tasks_host_dir's default
PUT_TASK = "Copy the VOC dataset from the controller to the host"
CONVERT_TASKS = ("Convert the training set", "Convert the validation set")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def plain_rsync(src: Path) -> float:
    sh("docker", "exec", SIM, "sh", "-c",
       "command -v rsync >/dev/null || (apt-get update -qq && apt-get install -y -qq rsync >/dev/null)")
    sh("docker", "exec", SIM, "rm", "-rf", "/srv/bench-rsync")
    inv = yaml.safe_load((REPO / "inventory" / "labbox" / "hosts.yml").read_text())["all"]["children"]["gpu_hosts"]
    port, key = inv["hosts"][HOST]["ansible_port"], inv["vars"]["ansible_ssh_private_key_file"]
    ssh = f"ssh -p {port} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    start = time.monotonic()
    sh("rsync", "-a", "--mkpath", "-e", ssh, f"{src}/", "root@127.0.0.1:/srv/bench-rsync/voc/")
    seconds = time.monotonic() - start
    sh("docker", "exec", SIM, "rm", "-rf", "/srv/bench-rsync")
    return seconds


def data_stage(src: Path, name: str, run: str, scratch: Path, label: str, cache: Path) -> dict:
    extra = scratch / "vars.json"
    extra.write_text(json.dumps({"effdet_tasks_dataset_src": str(src), "effdet_tasks_dataset_name": name,
                                 "effdet_tasks_run_name": run}))
    env = {"XDG_CACHE_HOME": str(cache)}
    # profiled_converge runs site.yml; the data stage alone is playbooks/effdet.yml --tags data.
    got = profiled_converge(REPO, "data", env, scratch / f"{label}.jsonl",
                            playbook="playbooks/effdet.yml", extra=["--limit", HOST, "-e", f"@{extra}"])
    rows = got.pop("tasks")
    got["put_s"] = round(sum(r["seconds"] for r in rows if r["task"].endswith(PUT_TASK)), 2)
    got["convert_s"] = round(sum(r["seconds"] for r in rows if any(c in r["task"] for c in CONVERT_TASKS)), 2)
    return got


def every(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def markdown(res: dict) -> str:
    f, s = res["first"], res["rerun"]
    firsts = res["firsts"]
    puts, rsyncs = [r["put_s"] for r in firsts], res["rsync_runs_s"]
    pairs = ", ".join(f"{p / r:.2f}x" for p, r in zip(puts, rsyncs))
    return "\n".join([
        f"VOC tree: {res['files']} files, {res['mib']} MiB ({res['images']} images), to {HOST}; "
        f"{len(firsts)} rsync and first runs, one after the other.", "",
        "| what | seconds (median) | ratio | every run (s) |", "|---|---:|---:|---|",
        f"| plain rsync -a over ssh (reference) | {res['rsync_s']:.1f} | 1.00x | {every(rsyncs)} |",
        f"| data stage, first run: the transfer | {f['put_s']:.1f} | {f['put_s'] / res['rsync_s']:.2f}x rsync | "
        f"{every(puts)} (each over the rsync before it: {pairs}) |",
        f"| data stage, first run: the conversion (train + val) | {f['convert_s']:.1f} | | "
        f"{every([r['convert_s'] for r in firsts])} |",
        f"| data stage, first run: whole `--tags data` (changed {f['changed']}) | {f['wall_s']:.1f} | | "
        f"{every([r['wall_s'] for r in firsts])} |",
        f"| data stage, no-change re-run: the transfer | {s['put_s']:.2f} | | |",
        f"| data stage, no-change re-run: whole `--tags data` (changed {s['changed']}) | {s['wall_s']:.1f} | | |",
    ]) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["rsync -a", "first: transfer", "first: conversion", "re-run: whole stage"]
    values = [res["rsync_s"], res["first"]["put_s"], res["first"]["convert_s"], res["rerun"]["wall_s"]]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh(labels, values)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds ({res['images']} images, {res['mib']} MiB)")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3, help="rsync and first runs, one after the other (default 3)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "dataset"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    val = max(1, args.images // 10)
    root = make_demo_dataset(out.parent / f"voc-{args.images}", train=args.images - val, val=val, infer=0)
    src = root / "voc"
    files, size = tree_size(src)
    print(f"[bench] {files} files, {size / 2**20:.1f} MiB; converging {HOST} up to the lab container", flush=True)
    sh(str(REPO / ".venv" / "bin" / "python"), "-m", "labbox", "up", "--hosts", "1", cwd=REPO)
    sh(str(REPO / ".venv" / "bin" / "ansible-playbook"), "site.yml", "--tags", "host,image,container", cwd=REPO)
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: at least 1")
    name, run = f"bench-voc-{args.images}", f"bench-dataset-{args.images}"
    rsyncs, firsts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for index in range(args.repeat):
            sh("docker", "exec", SIM, "rm", "-rf", f"{HOST_DIR}/effdet-lab/datasets/{name}",
               f"{HOST_DIR}/effdet-lab/datasets/.{name}.effdet-put.json", f"{HOST_DIR}/effdet-lab/runs/{run}")
            print(f"[bench] {index + 1}/{args.repeat}: plain rsync", flush=True)
            rsyncs.append(round(plain_rsync(src), 2))
            print(f"[bench] {index + 1}/{args.repeat}: data stage, first run", flush=True)
            cache = scratch / f"cache-{index}"      # an empty controller sha1 cache for each first run
            firsts.append(data_stage(src, name, run, scratch, f"first-{index}", cache))
            print(f"[bench] rsync {rsyncs[-1]} s, transfer {firsts[-1]['put_s']} s", flush=True)
        print("[bench] data stage, no-change re-run", flush=True)
        rerun = data_stage(src, name, run, scratch, "rerun", cache)
    first = {key: round(statistics.median([r[key] for r in firsts]), 2) for key in ("put_s", "convert_s", "wall_s")}
    first.update(changed=firsts[-1]["changed"], rc=max(r["rc"] for r in firsts))
    res = {"images": args.images, "files": files, "mib": round(size / 2**20, 1),
           "rsync_s": round(statistics.median(rsyncs), 2), "rsync_runs_s": rsyncs, "first": first, "firsts": firsts,
           "rerun": rerun}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    plot(res, out.with_suffix(".png"))
    print(markdown(res))
    sh("docker", "exec", SIM, "rm", "-rf", f"{HOST_DIR}/effdet-lab/datasets/{name}", f"{HOST_DIR}/effdet-lab/runs/{run}")
    return 0 if first["rc"] == 0 and rerun["rc"] == 0 and rerun["changed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
