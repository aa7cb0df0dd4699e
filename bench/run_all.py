"""The numbers users compare, measured side by side in one run, in one table.

    .venv/bin/python bench/run_all.py [--hosts 1,4,8] [--out bench/results/all]

1. fleet: first converge of the host layer vs the idempotent re-run, for each
   fleet size (bench/fleet.py, on fresh simulated hosts);
2. image: the lab image stage on converged hosts, first run vs the no-change
   re-run, and the size the image adds over its base;
3. converter: effdetlab.convert vs automl's create_pascal_tfrecord on the same
   1,000 images (bench/converter_throughput.py, in .venv-effdet).
Writes <out>.json and <out>.md (one Markdown table).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from fleet import playbook  # noqa: E402  (bench/ is this script's folder)
from labbox.demo import recap  # noqa: E402


def fleet(hosts: str) -> list[dict]:
    subprocess.run([sys.executable, str(REPO / "bench" / "fleet.py"), "--hosts", hosts, "--out",
                    str(RESULTS / "fleet")], cwd=REPO, check=True)
    return json.loads((RESULTS / "fleet.json").read_text())


def image(hosts: int) -> dict:
    """Image stage on the hosts fleet.py left converged: first run, then the no-change re-run."""
    subprocess.run([sys.executable, "-m", "labbox", "up", "--hosts", str(hosts)], cwd=REPO, check=True)
    first_s, _, first_rc = playbook("playbooks/image.yml")
    rerun_s, out, rerun_rc = playbook("playbooks/image.yml")
    changed = sum(h["changed"] for h in recap(out).values())
    sizes = sorted(set(re.findall(r"([\d.]+ MiB) over", out)))
    return {"hosts": hosts, "first_s": round(first_s, 1), "rerun_s": round(rerun_s, 1), "rerun_changed": changed,
            "size_over_base": sizes, "ok": first_rc == 0 and rerun_rc == 0 and changed == 0}


def converter() -> dict:
    python = REPO / ".venv-effdet" / "bin" / "python"
    subprocess.run([str(python), str(REPO / "bench" / "converter_throughput.py"), "--num-images", "1000",
                    "--repeats", "5", "--out", str(RESULTS / "converter")], cwd=REPO, check=True)
    return json.loads((RESULTS / "converter.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,4,8")
    ap.add_argument("--out", default=str(RESULTS / "all"))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fleet_rows = fleet(args.hosts)
    image_row = image(min(int(h) for h in args.hosts.split(",")))
    conv = converter()
    rows = [(f"host layer, {r['hosts']} host(s): first converge vs re-run (changed)",
             f"{r['first_s']} s", f"{r['rerun_s']} s ({r['rerun_changed']})") for r in fleet_rows]
    rows.append((f"lab image, {image_row['hosts']} host(s): first run vs no-change re-run (changed)",
                 f"{image_row['first_s']} s", f"{image_row['rerun_s']} s ({image_row['rerun_changed']})"))
    rows.append(("lab image size over its base", ", ".join(image_row["size_over_base"]) or "?", ""))
    ips = conv["images_per_second"]
    rows.append((f"converter, {conv['num_images']} images, whole process: automl vs effdetlab (images/s)",
                 str(ips["automl_e2e"]), f"{ips['ours_e2e']} ({conv['speedup_end_to_end']}x)"))
    rows.append((f"converter, {conv['num_images']} images, conversion only: automl vs effdetlab (images/s)",
                 str(ips["automl_inproc"]), f"{ips['ours_inproc']} ({conv['speedup_conversion_only']}x)"))
    md = ["| what | A | B |", "|---|---:|---:|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"fleet": fleet_rows, "image": image_row, "converter": conv}, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
