"""The whole site's no-change re-run against its first converge, before and after a change, in one run.

On fresh simulated hosts: the first converge of site.yml (this tree; its lab
image build is reported apart), then the no-change re-run under this tree's
settings (mitogen; with --linear also Ansible's own linear strategy), then the site of an
older git ref: one untimed converge to let it settle on the hosts this tree
converged (it writes its own stage markers), and its own no-change re-run.
Every run is profiled task by task (bench/rerun_profile.py).

    .venv/bin/python bench/site_rerun.py --before 938e3cf [--hosts 1] [--out bench/results/site]

Writes <out>.json, <out>.md and <out>.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from rerun_profile import markdown, plot, profiled_converge, worktree  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git ref of the 'before' site")
    ap.add_argument("--hosts", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "site"))
    ap.add_argument("--linear", action="store_true", help="also the re-run under Ansible's own linear strategy")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f"{out.name}-profiles"
    scratch.mkdir(exist_ok=True)
    print(f"[bench] {args.hosts} fresh host(s); first converge of this tree's site.yml", flush=True)
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "labbox", "up", "--hosts", str(args.hosts), "--fresh"],
                   cwd=REPO, check=True, capture_output=True)
    first = profiled_converge(REPO, None, {}, scratch / "after-first.jsonl")
    print(f"[bench] first {first['wall_s']} s (rc {first['rc']}, image build {first['image_build_s']} s)", flush=True)
    results = []
    base = first["wall_without_image_build_s"]
    settings = [("mitogen", "after (mitogen)", {})]
    if args.linear:
        settings.append(("linear", "after (linear)", {"ANSIBLE_STRATEGY": "linear"}))
    for slug, label, env in settings:
        rerun = profiled_converge(REPO, None, env, scratch / f"after-{slug}-rerun.jsonl")
        print(f"[bench] {label}: no-change re-run {rerun['wall_s']} s, changed={rerun['changed']}", flush=True)
        results.append({"label": label, "ref": None, "env": env, "hosts": args.hosts, "tags": "all", "first": first,
                        "rerun": rerun, "rerun_over_first": round(rerun["wall_s"] / base, 3)})
    old = worktree(args.before)
    settle = profiled_converge(old, None, {}, scratch / "before-settle.jsonl")
    print(f"[bench] before ({args.before}): settling converge {settle['wall_s']} s, changed={settle['changed']}",
          flush=True)
    rerun = profiled_converge(old, None, {}, scratch / "before-rerun.jsonl")
    print(f"[bench] before: no-change re-run {rerun['wall_s']} s, changed={rerun['changed']}", flush=True)
    results.insert(0, {"label": f"before ({args.before})", "ref": args.before, "env": {}, "hosts": args.hosts,
                       "tags": "all", "first": first, "rerun": rerun,
                       "rerun_over_first": round(rerun["wall_s"] / base, 3)})
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = ("First converge: this tree's, on fresh hosts, for every row (the 'before' row's re-run follows a "
            "settling converge of its own).\n\n" + markdown(results, 12))
    out.with_suffix(".md").write_text(text)
    plot(results, out.with_suffix(".png"))
    print(text)
    return 0 if first["rc"] == 0 and all(r["rerun"]["rc"] == 0 and r["rerun"]["changed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
