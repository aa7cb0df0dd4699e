"""The controller's reports, built from structured data rather than in Jinja.

- lab_verify_summary: testinfra's junit XML (playbooks/verify.yml) → per host
  passed/failed/skipped counts, the failures with pytest's message, and the
  Markdown summary for people.
- lab_status_row / lab_status_markdown: what playbooks/status.yml read on one
  host → one row (JSON), and all rows → a Markdown table.

Playbook-adjacent filter plugins: Ansible loads them for the playbooks in
this folder (site.yml imports them from here).
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# testinfra parametrizes every test by host: test_x[ansible://labhost-1]
HOST_ID = re.compile(r"\[ansible://([^\]]+)\]$")
OUTCOMES = ("passed", "failed", "error", "skipped")
TRAINING_KEYS = ("state", "global_step", "train_steps", "model_name")
BENCH_KEYS = ("model", "mode", "batch", "threads", "device", "latency_ms", "timestamp")


def _outcome(case: ET.Element) -> Tuple[str, str]:
    """(outcome, message) of one junit testcase."""
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            message = node.get("message")
            if not message:
                lines = (node.text or "").strip().splitlines()
                message = lines[-1] if lines else ""
            return ("failed" if tag == "failure" else tag), " ".join(message.split())
    return "passed", ""


def junit_cases(junit_xml: str) -> List[Dict[str, str]]:
    """Every testcase of a junit XML document: name, host ('' if none), outcome, message."""
    root = ET.fromstring(junit_xml)
    cases = []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        host = HOST_ID.search(name)
        outcome, message = _outcome(case)
        cases.append({"name": f"{case.get('classname', '')}::{name}".lstrip(":"), "host": host.group(1) if host else "",
                      "outcome": outcome, "message": message})
    return cases


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def lab_verify_summary(junit_xml: Optional[str], hosts: Sequence[str], pytest_tail: str = "") -> Dict[str, Any]:
    """Per host counts, the failures, and the Markdown summary of a testinfra run.

    junit_xml None or empty: pytest wrote no report (it failed before
    collecting); every host then counts as failed, with pytest's last line.
    """
    cases = junit_cases(junit_xml) if junit_xml else []
    rows = []
    for host in hosts:
        mine = [c for c in cases if c["host"] == host]
        counts = {outcome: sum(1 for c in mine if c["outcome"] == outcome) for outcome in OUTCOMES}
        rows.append({"host": host, **counts})
    problems = [c for c in cases if c["outcome"] in ("failed", "error")]
    totals = {outcome: sum(1 for c in cases if c["outcome"] == outcome) for outcome in OUTCOMES}
    ok = bool(cases) and not problems
    line = ", ".join(f"{totals[o]} {o}" for o in OUTCOMES if totals[o]) or "no test ran"
    md = ["# effdet-lab verify", "", "| host | passed | failed or error | skipped |", "|---|---:|---:|---:|"]
    md += [f"| {_cell(r['host'])} | {r['passed']} | {r['failed'] + r['error']} | {r['skipped']} |" for r in rows]
    md += ["", f"{'OK' if ok else 'PROBLEMS'}: {line}."]
    if not cases:
        md += ["", "pytest wrote no junit report; its last words:", "", "```", pytest_tail.strip(), "```"]
    if problems:
        md += ["", "| host | test | outcome | message |", "|---|---|---|---|"]
        md += [f"| {_cell(c['host'] or '-')} | {_cell(c['name'])} | {c['outcome']} | {_cell(c['message'])} |"
               for c in problems]
    return {"ok": ok, "hosts": rows, "totals": totals, "line": line,
            "problems": [f"{c['name']}: {c['message']}" for c in problems],
            "markdown": "\n".join(md) + "\n"}


def _json(content_b64_decoded: Any) -> Any:
    if content_b64_decoded in (None, ""):
        return None
    if isinstance(content_b64_decoded, (dict, list)):
        return content_b64_decoded
    return json.loads(content_b64_decoded)


def lab_status_row(host: str, gpus: Mapping[str, Any], container: Mapping[str, Any],
                   training: Any = None, benchmark: Any = None) -> Dict[str, Any]:
    """One host's status from what status.yml read there.

    gpus: the registered `nvidia-smi --query-gpu=...` result; container: the
    docker_container_info result; training / benchmark: the newest
    train_status.json and benchmark.json (text or parsed; None when absent).
    """
    has_smi = gpus.get("rc") == 0
    info = container.get("container") or {}
    state = info.get("State") or {}
    train = _json(training)
    bench_ok = sorted((m for m in (_json(benchmark) or []) if isinstance(m, Mapping) and m.get("ok")),
                      key=lambda m: m.get("latency_ms", float("inf")))
    return {
        "host": host,
        "gpus": list(gpus.get("stdout_lines") or []) if has_smi else [],
        "gpu_note": "" if has_smi else "no nvidia-smi",
        "image": (info.get("Config") or {}).get("Image") if container.get("exists") else None,
        "container": (f"{state.get('Status')} since {str(state.get('StartedAt', ''))[:19]}"
                      if container.get("exists") else "absent"),
        "training": {k: train[k] for k in TRAINING_KEYS if k in train} if isinstance(train, Mapping) else None,
        # The newest benchmark file's fastest successful measurement.
        "benchmark": {k: bench_ok[0][k] for k in BENCH_KEYS if k in bench_ok[0]} if bench_ok else None,
    }


def lab_status_line(row: Mapping[str, Any]) -> str:
    """The line status.yml prints for one host."""
    gpus = f"GPUs {len(row['gpus'])}" + (f" ({row['gpu_note']})" if row["gpu_note"] else "")
    t = row["training"]
    training = f"{t.get('state', 'none')} step {t.get('global_step')}/{t.get('train_steps')}" if t else "none"
    b = row["benchmark"]
    bench = (f"{b['model']} {b['mode']} batch {b['batch']}, {b['threads']} thread(s), {b['device']}: "
             f"{b['latency_ms']:.2f} ms") if b else "none"
    return (f"{row['host']}: {gpus}; image {row['image'] or 'none'}; container {row['container']}; "
            f"training {training}; last benchmark {bench}")


def lab_status_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every host's row as a Markdown table."""
    md = ["| host | GPUs | image | container | training | last benchmark (fastest) | latency (ms) |",
          "|---|---:|---|---|---|---|---:|"]
    for r in rows:
        t, b = r["training"], r["benchmark"]
        training = f"{t.get('state')} {t.get('global_step')}/{t.get('train_steps')}" if t else "-"
        bench = f"{b['model']} {b['mode']} b{b['batch']} t{b['threads']} {b['device']} | {b['latency_ms']}" if b else "- | -"
        md.append(f"| {_cell(r['host'])} | {len(r['gpus'])} | {_cell(r['image'] or '-')} | {_cell(r['container'])} "
                  f"| {_cell(training)} | {bench} |")
    return "\n".join(md) + "\n"


class FilterModule:
    def filters(self) -> Dict[str, Any]:
        return {"lab_verify_summary": lab_verify_summary, "lab_status_row": lab_status_row,
                "lab_status_line": lab_status_line, "lab_status_markdown": lab_status_markdown}
