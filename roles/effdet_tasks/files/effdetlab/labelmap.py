"""Label maps: class name <-> integer id, ids 1..K (0 is automl's background).

automl's `label_map` hparam takes a dict {id: name} or the path of a `.yaml`
file holding that dict (keras/label_util.get_label_map).  automl's anchor
labeler does `cls_targets -= 1`, so ids must be 1..K and `num_classes` must be K
(the largest id).  We write:

  label_map.yaml   {id: "name"}   -> hparams `label_map=/path/label_map.yaml`
  label_map.json   {"name": id}   -> same shape as automl's create_pascal_tfrecord
                                     --label_map_json_path (without "background")
"""

import json
import os
import re
from typing import Dict, Iterable, Mapping

from effdetlab.errors import LabelMapError, NumClassesMismatchError

LabelMap = Dict[str, int]  # name -> id

_YAML_LINE = re.compile(r"""^\s*['"]?(?P<key>[^:'"]+?)['"]?\s*:\s*(?P<val>.+?)\s*$""")


def from_names(names: Iterable[str]) -> LabelMap:
    """Ids 1..K in the given order (duplicates rejected)."""
    out: LabelMap = {}
    for n in names:
        n = n.strip()
        if not n:
            continue
        if n in out:
            raise LabelMapError(f"class {n!r} is listed twice")
        out[n] = len(out) + 1
    if not out:
        raise LabelMapError("label map is empty")
    return out


def from_data(class_names: Iterable[str]) -> LabelMap:
    """Sorted unique class names found in the annotations -> ids 1..K (deterministic)."""
    return from_names(sorted(set(n for n in class_names if n)))


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return json.loads(v)
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    return v


def _from_mapping(d: Mapping, path: str) -> LabelMap:
    """Accept {id: name} (automl hparam yaml) or {name: id} (automl label_map_json)."""
    out: LabelMap = {}
    for k, v in d.items():
        ks, vs = str(k).strip(), str(v).strip()
        if ks.lstrip("-").isdigit() and not vs.lstrip("-").isdigit():
            name, cid = vs, int(ks)
        elif vs.lstrip("-").isdigit():
            name, cid = ks, int(vs)
        else:
            raise LabelMapError(f"{path}: entry {k!r}: {v!r} has no integer id")
        if cid == 0:
            if name.lower() == "background":
                continue  # automl's pascal map carries 'background': 0; it is implicit.
            raise LabelMapError(f"{path}: class {name!r} has id 0, which automl reserves for background")
        if cid < 0:
            raise LabelMapError(f"{path}: class {name!r} has negative id {cid}")
        if name in out:
            raise LabelMapError(f"{path}: class {name!r} appears twice")
        out[name] = cid
    ids = sorted(out.values())
    if len(set(ids)) != len(ids):
        raise LabelMapError(f"{path}: duplicate ids in label map {out}")
    if not out:
        raise LabelMapError(f"{path}: label map is empty")
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def load(path: str) -> LabelMap:
    """Read a label map: .yaml/.yml ({id: name} or {name: id}), .json (either), .txt/.pbtxt-free
    plain list (one name per line -> ids 1..K)."""
    if not os.path.isfile(path):
        raise LabelMapError(f"label map file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if ext == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelMapError(f"{path}: not valid JSON: {e}") from None
        if isinstance(d, list):
            return from_names(str(x) for x in d)
        if not isinstance(d, dict):
            raise LabelMapError(f"{path}: expected a JSON object or list")
        return _from_mapping(d, path)
    if ext in (".yaml", ".yml"):
        try:  # pyyaml if present (it is, wherever automl runs) ...
            import yaml  # type: ignore
            d = yaml.safe_load(text)
            if not isinstance(d, dict):
                raise LabelMapError(f"{path}: expected a YAML mapping")
            return _from_mapping(d, path)
        except ImportError:  # ... else the flat 'key: value' subset we write ourselves.
            d = {}
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                m = _YAML_LINE.match(line)
                if not m:
                    raise LabelMapError(f"{path}:{n}: cannot parse {line!r} (expected 'id: name')") from None
                d[m.group("key").strip()] = _unquote(m.group("val"))
            return _from_mapping(d, path)
    return from_names(text.splitlines())


def to_yaml(label_map: LabelMap) -> str:
    """{id: "name"} as YAML; names are JSON-quoted (valid YAML double-quoted scalars)."""
    lines = ["# automl EfficientDet label_map (id: name); 0 is background"]
    for name, cid in sorted(label_map.items(), key=lambda kv: kv[1]):
        lines.append(f"{cid}: {json.dumps(name, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def write(label_map: LabelMap, output_dir: str) -> Dict[str, str]:
    yaml_path = os.path.join(output_dir, "label_map.yaml")
    json_path = os.path.join(output_dir, "label_map.json")
    with open(yaml_path, "w", encoding="utf-8") as f:
        f.write(to_yaml(label_map))
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(label_map, f, ensure_ascii=False, indent=1)
    return {"yaml": yaml_path, "json": json_path}


def check_num_classes(label_map: LabelMap, num_classes: int) -> None:
    """Raise NumClassesMismatchError unless num_classes == largest id (automl's convention)."""
    if not label_map:
        raise NumClassesMismatchError("label map is empty; nothing to compare num_classes with")
    max_id = max(label_map.values())
    if num_classes != max_id:
        listing = ", ".join(f"{i}={n}" for n, i in sorted(label_map.items(), key=lambda kv: kv[1]))
        hint = (f"labels {num_classes + 1}..{max_id} would be out of range for the class head"
                if num_classes < max_id else
                f"{num_classes - max_id} class slot(s) would never be trained")
        raise NumClassesMismatchError(
            f"--num-classes={num_classes} does not match the label map: it has {len(label_map)} "
            f"classes with ids up to {max_id} ({listing}); automl needs num_classes == {max_id} "
            f"({hint})")
