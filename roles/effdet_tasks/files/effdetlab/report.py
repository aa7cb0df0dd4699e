"""Validation report: every XML and every input object is accounted for.

Invariants (checked by Report.reconcile(), recorded in report.json["reconciliation"]):
  xml_files   == images_written  + sum(images_skipped.values())
  objects_in  == objects_written + sum(objects_dropped.values())
  objects_written == sum(class_counts.values())
Objects of a skipped image are dropped with reason "image_<skip reason>" (e.g.
"image_missing_image").  A corrupt XML counts as a skipped image; its objects
cannot be counted, so they are not part of objects_in (listed under issues).
"""

import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional

from effdetlab._records import Record

# Kinds of issue, by what they mean for the output.
SKIP_REASONS = ("corrupt_xml", "missing_image", "ambiguous_image", "unreadable_image",
                "unsupported_format", "duplicate_image", "empty_skipped")
DROP_REASONS = ("unknown_class", "invalid_box", "inverted", "out_of_bounds", "degenerate",
                "difficult_ignored")
MAX_ISSUES_IN_MD = 60


def _or(value: Any, factory: Any) -> Any:
    """`value`, or a new empty container when it is None (dataclass default_factory)."""
    return factory() if value is None else value


class Report(Record):
    def __init__(self, set_name: str, data_dir: str, annotations_dir: str, images_dir: str,
                 split_file: Optional[str], options: Dict[str, Any], xml_files: int = 0,
                 split_ids_without_xml: Optional[List[str]] = None, images_written: int = 0,
                 images_skipped: Optional[Counter] = None, objects_in: int = 0,
                 objects_written: int = 0, objects_dropped: Optional[Counter] = None,
                 objects_modified: Optional[Counter] = None, difficult_in: int = 0,
                 difficult_written: int = 0, truncated_in: int = 0, truncated_written: int = 0,
                 empty_annotations: int = 0, images_written_without_objects: int = 0,
                 class_counts: Optional[Counter] = None, unknown_classes: Optional[Counter] = None,
                 image_lookup: Optional[Counter] = None, warnings: Optional[Counter] = None,
                 images_without_annotation: Optional[List[str]] = None,
                 issues: Optional[List[Dict[str, Any]]] = None,
                 label_map: Optional[Dict[str, int]] = None,
                 shards: Optional[List[Dict[str, Any]]] = None,
                 outputs: Optional[Dict[str, str]] = None, seconds: float = 0.0) -> None:
        self.set_name = set_name
        self.data_dir = data_dir
        self.annotations_dir = annotations_dir
        self.images_dir = images_dir
        self.split_file = split_file
        self.options = options
        self.xml_files = xml_files
        self.split_ids_without_xml: List[str] = _or(split_ids_without_xml, list)
        self.images_written = images_written
        self.images_skipped: Counter = _or(images_skipped, Counter)
        self.objects_in = objects_in
        self.objects_written = objects_written
        self.objects_dropped: Counter = _or(objects_dropped, Counter)
        self.objects_modified: Counter = _or(objects_modified, Counter)  # clipped / inverted_fixed
        self.difficult_in = difficult_in
        self.difficult_written = difficult_written
        self.truncated_in = truncated_in
        self.truncated_written = truncated_written
        self.empty_annotations = empty_annotations  # XMLs (parsed, image found) with no <object>
        self.images_written_without_objects = images_written_without_objects
        self.class_counts: Counter = _or(class_counts, Counter)
        self.unknown_classes: Counter = _or(unknown_classes, Counter)
        self.image_lookup: Counter = _or(image_lookup, Counter)  # how each image was found
        self.warnings: Counter = _or(warnings, Counter)  # size_mismatch, ...
        self.images_without_annotation: List[str] = _or(images_without_annotation, list)
        self.issues: List[Dict[str, Any]] = _or(issues, list)
        self.label_map: Dict[str, int] = _or(label_map, dict)
        self.shards: List[Dict[str, Any]] = _or(shards, list)
        self.outputs: Dict[str, str] = _or(outputs, dict)
        self.seconds = seconds

    def issue(self, kind: str, xml: str, **kw: Any) -> None:
        self.issues.append({"kind": kind, "xml": xml, **kw})

    def reconcile(self) -> Dict[str, Any]:
        checks = {
            "xml_files == images_written + images_skipped":
                [self.xml_files, self.images_written + sum(self.images_skipped.values())],
            "objects_in == objects_written + objects_dropped":
                [self.objects_in, self.objects_written + sum(self.objects_dropped.values())],
            "objects_written == sum(class_counts)":
                [self.objects_written, sum(self.class_counts.values())],
        }
        if self.shards:
            checks["images_written == records in shards"] = [
                self.images_written, sum(s["records"] for s in self.shards)]
        ok = all(a == b for a, b in checks.values())
        return {"ok": ok, "checks": checks}

    def as_dict(self) -> Dict[str, Any]:
        return {
            "set": self.set_name, "data_dir": self.data_dir,
            "annotations_dir": self.annotations_dir, "images_dir": self.images_dir,
            "split_file": self.split_file, "options": self.options,
            "totals": {
                "xml_files": self.xml_files,
                "images_written": self.images_written,
                "images_skipped": sum(self.images_skipped.values()),
                "objects_in": self.objects_in,
                "objects_written": self.objects_written,
                "objects_dropped": sum(self.objects_dropped.values()),
                "objects_clipped": self.objects_modified.get("clipped", 0),
                "objects_inverted_fixed": self.objects_modified.get("inverted_fixed", 0),
                "difficult_in": self.difficult_in, "difficult_written": self.difficult_written,
                "truncated_in": self.truncated_in, "truncated_written": self.truncated_written,
                "empty_annotations": self.empty_annotations,  # parsed XMLs with no <object>
                "images_written_without_objects": self.images_written_without_objects,
                "split_ids_without_xml": len(self.split_ids_without_xml),
                "images_without_annotation": len(self.images_without_annotation),
            },
            "images_skipped": dict(sorted(self.images_skipped.items())),
            "objects_dropped": dict(sorted(self.objects_dropped.items())),
            "objects_modified": dict(sorted(self.objects_modified.items())),
            "class_counts": dict(sorted(self.class_counts.items())),
            "unknown_classes": dict(sorted(self.unknown_classes.items())),
            "image_lookup": dict(sorted(self.image_lookup.items())),
            "warnings": dict(sorted(self.warnings.items())),
            "label_map": self.label_map,
            "reconciliation": self.reconcile(),
            "shards": self.shards, "outputs": self.outputs,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_written / self.seconds, 1) if self.seconds else None,
            "split_ids_without_xml": self.split_ids_without_xml,
            "images_without_annotation": self.images_without_annotation,
            "issues": self.issues,
        }

    def to_markdown(self) -> str:
        d = self.as_dict()
        t = d["totals"]
        rec = d["reconciliation"]
        lines = [
            f"# Conversion report: set `{self.set_name}`", "",
            f"- data: `{self.data_dir}` (annotations `{self.annotations_dir}`, images `{self.images_dir}`)",
            f"- split file: `{self.split_file}`" if self.split_file else "- split file: none (all XML files)",
            f"- options: {', '.join(f'{k}={v}' for k, v in self.options.items())}",
            f"- reconciliation: **{'OK' if rec['ok'] else 'FAILED'}**", "",
            "| | count |", "|---|---:|",
        ]
        lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in t.items()]
        for title, key in (("Images skipped", "images_skipped"), ("Objects dropped", "objects_dropped"),
                           ("Objects modified (kept)", "objects_modified"),
                           ("Unknown classes", "unknown_classes"), ("Warnings", "warnings"),
                           ("Objects written per class", "class_counts"),
                           ("How images were found", "image_lookup")):
            if d[key]:
                lines += ["", f"## {title}", ""] + [f"- `{k}`: {v}" for k, v in d[key].items()]
        lines += ["", "## Label map (automl ids)", ""] + [
            f"- {cid}: `{name}`" for name, cid in sorted(self.label_map.items(), key=lambda kv: kv[1])]
        if self.issues:
            lines += ["", f"## Issues ({len(self.issues)}; first {MAX_ISSUES_IN_MD} shown, all in report.json)", ""]
            for i in self.issues[:MAX_ISSUES_IN_MD]:
                rest = ", ".join(f"{k}={v}" for k, v in i.items() if k not in ("kind", "xml"))
                lines.append(f"- **{i['kind']}** `{i['xml']}` {rest}")
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str) -> Dict[str, str]:
        jp, mp = os.path.join(output_dir, "report.json"), os.path.join(output_dir, "report.md")
        self.outputs.update({"report_json": jp, "report_md": mp})
        with open(jp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.as_dict(), ensure_ascii=False, indent=1))
        with open(mp, "w", encoding="utf-8") as f:
            f.write(self.to_markdown())
        return {"json": jp, "md": mp}
