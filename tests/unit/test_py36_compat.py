"""effdetlab runs inside the lab container with the container's own python3: 3.6.9 for the
tf2.1-gpu profile (tensorflow/tensorflow:2.1.0-gpu-py3), 3.11 elsewhere.

1. Static: vermin finds nothing in effdetlab/ that needs more than Python 3.6.
2. Runtime: a probe script runs under a real Python 3.6 (pyenv's, or python3.6 on PATH):
   it compiles and imports every effdetlab module, parses labelImg XML, builds label maps,
   converts a messy VOC tree to TFRecords (with a pure-Python CRC-32C standing in for
   tensorflow's, which 3.6 here does not have), loads and validates a stage config,
   detects the automl flag dialect, parses the recorded automl logs, and runs the train,
   benchmark, status and commands stages against a stand-in automl checkout that replays
   recorded output.  The same probe under this interpreter (3.11) must give the same
   results and byte-identical output files.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "effdetlab"
FIX = REPO / "tests" / "fixtures" / "automl-output"
TARGET = (3, 6)

# Pure-Python CRC-32C (Castagnoli), with the signature of tsl::crc32c::Extend that
# effdetlab.recordio binds from libtensorflow_framework.  Used by the probe (no tensorflow
# under 3.6 here) and by this file to check the records' framing.
CRC32C_SRC = '''
def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(crc, data, n):
    c = crc ^ 0xFFFFFFFF
    for b in data[:n]:
        c = _CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
'''
_ns: Dict[str, Any] = {}
exec(CRC32C_SRC, _ns)  # noqa: S102 - our own constant
crc32c = _ns["crc32c"]


# ----------------------------------------------------------------------------- 1. static

def _vermin(paths: List[str]) -> Tuple[int, str]:
    """vermin's CLI (its console script's entry point), machine-readable output."""
    code = "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "--no-config-file", "--no-tips",
                        "--eval-annotations",  # no `from __future__ import annotations` any more
                        "--format", "parsable", "-t=%d.%d-" % TARGET, *paths],
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def _py3_version(text: str) -> Optional[Tuple[int, ...]]:
    """'3.7' -> (3, 7); '!3' (incompatible) and the like -> None."""
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return None


def _check(paths: List[str]) -> Tuple[int, Optional[str], List[str], set, str]:
    """(exit status, overall minimum, offending lines with their source, files analysed, output)."""
    rc, out = _vermin(paths)
    offending, minimum, analysed = [], None, set()
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) < 6:
            continue
        path, lineno, _col, _py2, py3 = parts[:5]
        feature = ":".join(parts[5:]).strip()
        if not path:  # the last line: the overall verdict
            minimum = py3
            continue
        analysed.add(path)
        v = _py3_version(py3)
        if lineno and (v is None or v > TARGET):
            src = Path(path).read_text(encoding="utf-8").splitlines()[int(lineno) - 1].strip()
            offending.append(f"{os.path.relpath(path, REPO)}:{lineno}: needs Python {py3}: "
                             f"{feature}\n    {src}")
    return rc, minimum, offending, analysed, out


def test_vermin_min_version_of_effdetlab_is_36() -> None:
    """Every module of the package: the container ones (stages, convert and what it imports)
    and the controller's benchreport/synth, which cost nothing to keep 3.6-clean."""
    import vermin  # noqa: F401  (pinned in requirements.txt: a missing one is a failure, not a skip)
    files = sorted(str(p) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(files) >= 25
    rc, minimum, offending, analysed, out = _check(files)
    assert not offending, ("effdetlab must run on the container's Python 3.6:\n"
                           + "\n".join(offending))
    assert rc == 0 and minimum is not None, out
    assert _py3_version(minimum) is not None and _py3_version(minimum) <= TARGET, out
    assert analysed == set(files), sorted(set(files) - analysed)


def test_vermin_flags_37_constructs(tmp_path: Path) -> None:
    """The static check is live: the constructs this package used to have are caught."""
    import vermin  # noqa: F401  (pinned in requirements.txt: a missing one is a failure, not a skip)
    bad = tmp_path / "bad.py"
    bad.write_text("from __future__ import annotations\nimport dataclasses\nimport subprocess\n"
                   "r = subprocess.run(['true'], capture_output=True, text=True)\n"
                   "def f(x: list[int]) -> dict[str, int]:\n    return {}\n", encoding="utf-8")
    rc, minimum, offending, _, out = _check([str(bad)])
    assert rc != 0 and minimum == "3.9", out
    text = "\n".join(offending)
    for needle in (":1: needs Python 3.7: '__future__.annotations' member\n    from __future__",
                   ":2: needs Python 3.7: 'dataclasses' module",
                   ":4: needs Python 3.7: 'subprocess.run(capture_output)'",
                   ":4: needs Python 3.7: 'subprocess.run(text)'",
                   ":5: needs Python 3.9: builtin generic type annotation (list[..])"):
        assert needle in text, text


# ----------------------------------------------------------------------------- 2. runtime

def _find_py36() -> Optional[str]:
    cands = sorted(glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6"), reverse=True)
    on_path = shutil.which("python3.6")
    for c in cands + ([on_path] if on_path else []):
        if os.access(c, os.X_OK):
            return c
    return None


def _labelimg_xml(folder: str, filename: str, path: str, size: Tuple[int, int],
                  objects: List[Tuple[str, str, int, int, Tuple[str, str, str, str]]]) -> str:
    """Exactly the layout labelImg writes (tabs, <source>, <segmented>)."""
    objs = "".join(
        "\n\t<object>\n\t\t<name>%s</name>\n\t\t<pose>%s</pose>\n\t\t<truncated>%d</truncated>\n"
        "\t\t<difficult>%d</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>%s</xmin>\n\t\t\t<ymin>%s</ymin>\n"
        "\t\t\t<xmax>%s</xmax>\n\t\t\t<ymax>%s</ymax>\n\t\t</bndbox>\n\t</object>"
        % (name, pose, trunc, diff, *box) for name, pose, trunc, diff, box in objects)
    return ("<annotation>\n\t<folder>%s</folder>\n\t<filename>%s</filename>\n\t<path>%s</path>\n"
            "\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n\t<size>\n"
            "\t\t<width>%d</width>\n\t\t<height>%d</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            "\t<segmented>0</segmented>%s\n</annotation>\n" % (folder, filename, path, *size, objs))


W, H = 160, 120
CJK = "猫の写真"
CAFE_NFC = unicodedata.normalize("NFC", "café.jpg")
CAFE_NFD = unicodedata.normalize("NFD", "café.jpg")


def _b(*v: int) -> Tuple[str, str, str, str]:
    return tuple(str(x) for x in v)  # type: ignore[return-value]


def make_dataset(root: Path) -> Path:
    """A small labelImg tree with what goes wrong in practice.  Returns the data dir."""
    from effdetlab.synth import write_image
    data = root / "data"
    ann, img = data / "Annotations", data / "JPEGImages"
    (img / "sub").mkdir(parents=True)
    ann.mkdir()
    xmls = {
        # Windows machine paths, upper-case extension on disk, a difficult object
        "win.xml": ("C:\\Users\\lab\\Desktop\\imgs", "IMG_0001.jpg",
                    "C:\\Users\\lab\\Desktop\\imgs\\IMG_0001.jpg", (W, H),
                    [("cat", "Unspecified", 0, 0, _b(10, 20, 100, 110)),
                     ("dog", "Left", 0, 1, _b(50, 60, 150, 119))]),
        # CJK names, Windows drive folder, .jpg in the XML but .jpeg on disk; box past the edge
        CJK + ".xml": ("D:\\データ", CJK + ".jpg", "D:\\データ\\" + CJK + ".jpg", (W, H),
                       [("cat", "Unspecified", 0, 0, _b(120, 80, 200, 150))]),
        # another machine's path, PNG, space in the name, truncated
        "other machine.xml": ("x", "photo 2.png", "/home/alice/datasets/x/photo 2.png", (W, H),
                              [("cat", "Frontal", 1, 0, _b(1, 1, 159, 119))]),
        "inverted.xml": ("imgs", "inv.jpg", "/tmp/inv.jpg", (W, H),
                         [("dog", "Unspecified", 0, 0, _b(100, 90, 40, 30))]),
        "unknown.xml": ("imgs", "unk.jpg", "unk.jpg", (W, H),
                        [("zebra", "Unspecified", 0, 0, _b(10, 10, 50, 50)),
                         ("cat", "Unspecified", 0, 0, _b(60, 60, 120, 100))]),
        "badnum.xml": ("imgs", "badnum.jpg", "badnum.jpg", (W, H),
                       [("cat", "Unspecified", 0, 0, ("abc", "2", "3", "4")),
                        ("dog", "Unspecified", 0, 0, _b(5, 5, 80, 80))]),
        "missing.xml": ("imgs", "ghost.jpg", "C:\\ghost.jpg", (W, H),
                        [("cat", "Unspecified", 0, 0, _b(1, 1, 10, 10))]),
        "empty.xml": ("imgs", "empty.jpg", "E:\\empty.jpg", (0, 0), []),  # labelImg wrote 0x0
        "cafe.xml": ("imgs", CAFE_NFC, "/Users/bob/" + CAFE_NFC, (W, H),
                     [("cat", "Unspecified", 0, 0, _b(5, 5, 50, 50))]),
    }
    for name, (folder, filename, path, size, objs) in xmls.items():
        (ann / name).write_text(_labelimg_xml(folder, filename, path, size, objs), encoding="utf-8")
    # an <object> without <bndbox>, next to the others in badnum.xml
    text = (ann / "badnum.xml").read_text(encoding="utf-8")
    (ann / "badnum.xml").write_text(text.replace(
        "</annotation>", "\t<object>\n\t\t<name>cat</name>\n\t</object>\n</annotation>"), encoding="utf-8")
    (ann / "corrupt.xml").write_text("<annotation><folder>x</folder><filename>c.jpg</filename>"
                                     "<object><name>cat", encoding="utf-8")
    for i, rel in enumerate(["IMG_0001.JPG", "sub/" + CJK + ".jpeg", "photo 2.png", "inv.jpg",
                             "unk.jpg", "badnum.jpg", "empty.jpg", "sub/" + CAFE_NFD, "orphan.jpg"]):
        write_image(str(img / rel), W, H, seed=i)
    (data / "classes.txt").write_text("cat\ndog\n", encoding="utf-8")
    return data


PROBE = r'''
"""Runs under the interpreter being checked; prints one line: PROBE_RESULT <json>."""
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import traceback

REPO, DATA, WORK = sys.argv[1:4]
FIX = os.path.join(REPO, "tests", "fixtures", "automl-output")
CJK = "\u732b\u306e\u5199\u771f"
out = {"version": list(sys.version_info[:3]), "errors": {}}
''' + CRC32C_SRC + r'''

def section(name):
    def wrap(fn):
        try:
            out[name] = fn()
        except Exception:
            out["errors"][name] = traceback.format_exc()
        return fn
    return wrap


def fixture(name):
    with open(os.path.join(FIX, name), encoding="utf-8") as f:
        return f.read()


def sha256_files(folder, skip=()):
    import hashlib
    res = {}
    for f in sorted(os.listdir(folder)):
        if f not in skip:
            with open(os.path.join(folder, f), "rb") as fh:
                res[f] = hashlib.sha256(fh.read()).hexdigest()
    return res


# ------------------------------------------------------------------ compile + import
files = []
for dirpath, dirs, names in os.walk(os.path.join(REPO, "effdetlab")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".py")]
compile_errors = {}
for f in files:
    try:
        with open(f, "rb") as fh:
            compile(fh.read(), f, "exec", dont_inherit=True)
    except SyntaxError as e:
        compile_errors[os.path.relpath(f, REPO)] = "line %s: %s: %s" % (
            e.lineno, e.msg, (e.text or "").strip())
out["compiled"] = sorted(os.path.relpath(f, REPO) for f in files)
out["compile_errors"] = compile_errors
modules = []
for f in files:
    m = os.path.relpath(f, REPO)[:-3].replace(os.sep, ".")
    modules.append(m[:-len(".__init__")] if m.endswith(".__init__") else m)
import_errors = {}
for m in sorted(modules):
    try:
        importlib.import_module(m)
    except Exception:
        import_errors[m] = traceback.format_exc()
out["imported"] = sorted(modules)
out["import_errors"] = import_errors
out["tensorflow_imported"] = "tensorflow" in sys.modules


# ------------------------------------------------------------------ voc
@section("voc")
def _():
    import xml.etree.ElementTree as ET
    from effdetlab import voc
    ann_dir = os.path.join(DATA, "Annotations")

    def parsed(name):
        a = voc.parse_voc_xml(os.path.join(ann_dir, name))
        return {"filename": a.filename, "folder": a.folder, "path": a.path,
                "size": [a.width, a.height],
                "objects": [[o.name, o.xmin, o.ymin, o.xmax, o.ymax, o.difficult, o.truncated,
                             o.pose, o.problem] for o in a.objects]}
    idx = voc.ImageIndex(os.path.join(DATA, "JPEGImages"))
    resolved = {}
    for name in sorted(os.listdir(ann_dir)):
        try:
            r = idx.resolve(voc.parse_voc_xml(os.path.join(ann_dir, name)))
        except ET.ParseError as e:
            resolved[name] = ["ParseError", str(e)]
            continue
        resolved[name] = [r.how, os.path.relpath(r.path, DATA) if r.path else None, r.candidates]
    xmls, missing = voc.list_annotation_files(ann_dir, ["win", CJK, "nope  1", "nothere"])
    a1 = voc.parse_voc_xml(os.path.join(ann_dir, "win.xml"))
    a2 = voc.parse_voc_xml(os.path.join(ann_dir, "win.xml"))
    o = voc.VocObject("cat", 1.0, 2.0, 3.0, 4.0)
    try:
        hash(o)
        hashable = True
    except TypeError:
        hashable = False
    return {"win": parsed("win.xml"), "cjk": parsed(CJK + ".xml"),
            "badnum": parsed("badnum.xml"), "empty": parsed("empty.xml"),
            "index_size": len(idx), "resolved": resolved,
            "split": [[os.path.basename(x) for x in xmls], missing],
            "basename": [voc.basename_any(x) for x in (
                "C:\\Users\\a b\\" + CJK + " 1.JPG", "/home/x/y.png", "\\\\server\\share\\z.jpg", "")],
            "record": {"equal": a1 == a2, "differs": a1 != voc.VocAnnotation(a1.xml_path),
                       "repr": repr(o), "hashable": hashable,
                       "fresh_lists": voc.VocAnnotation("a").objects is not voc.VocAnnotation("b").objects}}


# ------------------------------------------------------------------ label maps, boxes
@section("labelmap")
def _():
    from effdetlab import labelmap as lm
    from effdetlab.errors import LabelMapError, NumClassesMismatchError
    d = os.path.join(WORK, "lm")
    os.makedirs(d)
    paths = lm.write({CJK: 1, 'a "quoted": name': 2, "it's": 3}, d)
    with open(paths["yaml"], encoding="utf-8") as f:
        yaml_text = f.read()
    with open(os.path.join(d, "bad.json"), "w") as f:
        f.write('{"background": 0, "cat": 0}')
    res = {"from_data": lm.from_data(["dog", "cat", "", CJK, "cat"]), "yaml_text": yaml_text,
           "yaml": lm.load(paths["yaml"]), "json": lm.load(paths["json"]),
           "txt": lm.load(os.path.join(DATA, "classes.txt")),
           "yaml_reader": "pyyaml" if importlib.util.find_spec("yaml") else "builtin"}
    try:
        lm.load(os.path.join(d, "bad.json"))
    except LabelMapError as e:
        res["bad_json"] = str(e).replace(d, "<LM>")
    try:
        lm.check_num_classes({"cat": 1, "dog": 2}, 5)
    except NumClassesMismatchError as e:
        res["mismatch"] = str(e)
    return res


@section("boxes")
def _():
    from effdetlab.boxes import check_box
    cases = [(120, 80, 200, 150, "clip"), (100, 90, 40, 30, "clip"), (100, 90, 40, 30, "drop"),
             (200, 10, 300, 50, "clip"), (None, 1, 2, 3, "clip"), (10, 20, 30, 40, "drop")]
    return [[o.box, o.actions, o.drop_reason, o.detail]
            for o in (check_box(*c[:4], 160, 120, c[4]) for c in cases)]


# ------------------------------------------------------------------ convert
@section("convert")
def _():
    from effdetlab import convert as conv
    from effdetlab import recordio
    from effdetlab.errors import ConversionError, CorruptXMLError
    assert crc32c(0, b"123456789", 9) == 0xE3069283
    recordio._crc_fn, recordio._crc_loaded = crc32c, True  # tensorflow's CRC-32C, in Python
    classes = os.path.join(DATA, "classes.txt")
    out1, out2 = os.path.join(WORK, "tfr"), os.path.join(WORK, "tfr2")
    rep = conv.convert(conv.Options(DATA, out1, label_map_from="file", label_map_path=classes,
                                    workers=1))
    conv.MIN_IMAGES_FOR_POOL = 0  # worker processes (fork) on 9 images, 2 shards
    rep2 = conv.convert(conv.Options(DATA, out2, label_map_from="file", label_map_path=classes,
                                     workers=2, num_shards=2))
    res = {"report": rep.as_dict(), "markdown": rep.to_markdown().splitlines()[:12],
           "pool_report": rep2.as_dict(), "files": sha256_files(out1, ("report.json", "report.md")),
           "pool_files": sha256_files(out2, ("report.json", "report.md"))}
    try:
        conv.convert(conv.Options(DATA, os.path.join(WORK, "strict"), strict=True))
    except CorruptXMLError as e:
        res["strict"] = str(e)
    try:
        conv.convert(conv.Options(DATA, out1))
    except ConversionError as e:
        res["stale"] = str(e)
    r = subprocess.run([sys.executable, "-m", "effdetlab.convert", "--data-dir",
                        os.path.join(WORK, "nope"), "--output-dir", os.path.join(WORK, "x")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=120)
    res["cli_missing"] = [r.returncode, r.stderr.strip()]
    return res


# ------------------------------------------------------------------ stand-in automl checkout (2020-05)
MAIN_FLAGS = ("tpu", "model_dir", "ckpt", "hparams", "training_file_pattern",
              "validation_file_pattern", "val_json_file", "mode", "model_name")
MAIN_INT_FLAGS = ("train_batch_size", "eval_batch_size", "eval_samples", "iterations_per_loop",
                  "num_examples_per_epoch", "num_epochs", "save_checkpoints_steps", "num_cores")
INSPECT_FLAGS = ("model_name", "logdir", "runmode", "ckpt_path", "hparams", "input_image",
                 "output_image_dir", "saved_model_dir")
CHECKOUT = os.path.join(WORK, "automl")
STUB = """import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
"""


def write_checkout():
    d = os.path.join(CHECKOUT, "efficientdet")
    os.makedirs(d)
    defs = ["flags.DEFINE_string('%s', None, '')" % n for n in MAIN_FLAGS]
    defs += ["flags.DEFINE_bool('use_tpu', True, 'Use TPUs')"]
    defs += ["flags.DEFINE_integer('%s', 1, '')" % n for n in MAIN_INT_FLAGS]
    main = ('"""Stand-in for automl main.py: its flag definitions, then a recorded run."""\n'
            + "".join("# " + x + "\n" for x in defs) + STUB
            + "with open(%r, encoding='utf-8') as f:\n" % os.path.join(FIX, "main-train-d0-128.log")
            + "    sys.stdout.write(f.read())\n"
            + "md = args['model_dir']\nos.makedirs(md, exist_ok=True)\n"
            + "for s in (0, 2, 4):\n"
            + "    open(os.path.join(md, 'model.ckpt-%d.index' % s), 'w').close()\n"
            + "with open(os.path.join(md, 'checkpoint'), 'w') as f:\n"
            + "    f.write('model_checkpoint_path: \"model.ckpt-4\"\\n')\n"
            + "with open(os.path.join(md, 'argv.json'), 'w') as f:\n"
            + "    json.dump(sys.argv[1:], f)\n")
    idefs = ["flags.DEFINE_string('%s', None, '')" % n for n in INSPECT_FLAGS]
    idefs += ["flags.DEFINE_integer('threads', 0, '')", "flags.DEFINE_integer('batch_size', 1, '')",
              "flags.DEFINE_float('min_score_thresh', 0.4, '')"]
    inspect = ('"""Stand-in for automl model_inspect.py: flag definitions, recorded bm output."""\n'
               + "".join("# " + x + "\n" for x in idefs) + STUB
               + "if args.get('runmode') != 'bm':\n"
               + "    sys.stderr.write('Traceback (most recent call last):\\n  File x\\n'\n"
               + "                     'ValueError: runmode %s is not recorded\\n' % args.get('runmode'))\n"
               + "    sys.exit(1)\n"
               + "with open(%r, encoding='utf-8') as f:\n" % os.path.join(FIX, "inspect-bm-d0-128-t1.log")
               + "    sys.stdout.write(f.read())\n")
    for name, text in (("main.py", main), ("model_inspect.py", inspect)):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)


CONFIG = {"run_dir": "run", "code_source": "git", "code_dir": "automl", "python": sys.executable,
          "device": "cpu", "model_name": "efficientdet-d0", "mode": "train",
          "hparams": {"image_size": 128, "moving_average_decay": 0, "label_map": "tfr/label_map.yaml"},
          "train_file_pattern": "tfr/train-*.tfrecord", "train_batch_size": 2, "num_epochs": 1,
          "num_examples_per_epoch": 8, "save_checkpoints_steps": 2, "timeout_s": 120,
          "benchmark": {"threads": [1], "bm_runs": 2, "modes": ["bm"], "host": "probe-host"}}
CONFIG_PATH = os.path.join(WORK, "config.json")


# ------------------------------------------------------------------ stage config + dialect
@section("config")
def _():
    from effdetlab.stages import config as cfgmod
    from effdetlab.stages import dialect as dl
    from effdetlab.stages.errors import StageInputError
    write_checkout()
    with open(CONFIG_PATH, "w", encoding="utf-8") as f:
        json.dump(CONFIG, f)
    c = cfgmod.load(CONFIG_PATH)
    res = {"config": {k: getattr(c, k) for k in (
        "run_dir", "code_dir", "model_dir", "saved_model_dir", "tflite_path", "hparams",
        "train_file_pattern", "train_steps", "train_batch_size", "eval_batch_size", "dialect",
        "min_score_thresh", "config_path")}, "benchmark": c.benchmark._asdict()}
    errors = []
    for bad in ({"mode": "eval"}, {"device": "tpu"}, {"train_batch_size": 0},
                {"hparams": {"a": "x,y"}}, {"benchmark": {"threads": []}},
                {"min_score_thresh": 1.5}, {"bogus": 1}, {"hparams": {"image_size": "512x"}},
                {"model_name": "efficientdet-d9"},
                {"hparams": {"num_classes": 3, "label_map": "tfr/label_map.yaml"}},
                {"code_dir": None}):
        try:
            cfgmod.from_dict(dict(CONFIG, **bad), WORK)
            errors.append(None)
        except StageInputError as e:
            errors.append(str(e))
    res["errors"] = errors
    try:
        cfgmod.load(os.path.join(WORK, "nope.json"))
    except StageInputError as e:
        res["missing_file"] = str(e)

    src = dl.locate(c)
    d = dl.resolve(c, src)
    res["dialect"] = {"name": d.name, "use_tpu_flag": d.use_tpu_flag,
                      "main_flags": sorted(d.main_flags), "inspect_flags": sorted(d.inspect_flags),
                      "cwd": src.cwd, "env": src.env(), "files": src.files}
    res["train_cmd"] = dl.train_cmd(c, src, d)
    res["export_cmd"] = list(dl.export_cmd(c, src, d, c.model_dir, "/tmp/l"))
    res["bm_cmd"] = list(dl.bm_cmd(c, src, d, "efficientdet-d1", 2, 1, "/tmp/l"))
    res["child_env"] = dl.child_env(c, src)
    res["image_size_of"] = dl.image_size_of(c, c.hparams, c.model_name)
    res["hparams_string"] = dl.hparams_string({"a": True, "b": 0.5, "c": "x"})
    cur = dl.detect("flags.DEFINE_string('train_file_pattern', None, '')\n"
                    "flags.DEFINE_string(name='val_file_pattern', default=None, help='')\n")
    try:
        cur.name = "x"
        frozen = False
    except AttributeError:
        frozen = True
    res["current"] = [cur.name, cur.val_pattern_flag, cur.use_tpu_flag,
                      cur.main_has("train_file_pattern"), cur.main_has("ckpt"),
                      dl.CURRENT.inspect_has("anything"), frozen, hash(dl.CURRENT) == hash(dl.CURRENT)]
    try:
        dl.detect("print('not automl')")
    except StageInputError as e:
        res["detect_error"] = str(e)
    try:
        dl.resolve(cfgmod.from_dict(dict(CONFIG, dialect="current"), WORK), src)
    except StageInputError as e:
        res["dialect_mismatch"] = str(e)
    return res


# ------------------------------------------------------------------ parsers on the recorded logs
@section("parsers")
def _():
    from effdetlab.stages.parsers import (last_error, parse_benchmark, parse_infer,
                                          parse_train_log)
    recs = parse_train_log(fixture("main-train-d0-128.log").splitlines(), now=1.0)
    te = parse_train_log(fixture("main-train_and_eval-d0-128.log").splitlines())
    killed = fixture("stages-train-killed-and-resumed-d0-128.log").split("=== effdetlab train attempt 2 ")
    second = parse_train_log(killed[1].splitlines())
    bm = parse_benchmark(fixture("inspect-bm-d0-128-t1.log"))
    e2e = parse_benchmark(fixture("inspect-saved_model_benchmark-d0-128.log"))
    bm512 = parse_benchmark(fixture("inspect-bm-d0-512-t2.by-hand.log"))
    nan = parse_train_log([
        "I1130 02:20:27.066856 1 basic_session_run_hooks.py:265] loss = nan, step = 7",
        "I1130 02:20:27.1 1 basic_session_run_hooks.py:716] global_step/sec: 2.5",
        "I1130 02:20:27.2 1 basic_session_run_hooks.py:265] loss = 1.5, step = 8 (0.4 sec)"])
    return {
        "train": recs,
        "train_and_eval": {"evals": [[r["step"], sorted(r["metrics"])] for r in te if r["kind"] == "eval"],
                           "steps": [r["step"] for r in te if r["kind"] == "step"],
                           "restores": [r["step"] for r in te if r["kind"] == "restore"]},
        "resumed": {"attempts": len(killed),
                    "restore": [r["step"] for r in second if r["kind"] == "restore"],
                    "steps": [r["step"] for r in second if r["kind"] == "step"]},
        "bm": dict(bm._asdict(), latency_ms=bm.latency_ms),
        "e2e_ms": e2e.latency_ms, "bm512_ms": bm512.latency_ms,
        "no_bm_in_train_log": parse_benchmark(fixture("main-train-d0-128.log")) is None,
        "infer": list(parse_infer(fixture("inspect-saved_model_infer-d0-128.log"))),
        "last_error": last_error("Traceback (most recent call last):\n  File x\n"
                                 "ValueError: Cannot find any images for pattern /x/*\n"),
        "nonfinite": nan,
    }


# ------------------------------------------------------------------ the stage CLI, end to end
@section("stages")
def _():
    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "effdetlab.stages"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, cwd=WORK, timeout=180)
        return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}

    def load(*p):
        with open(os.path.join(WORK, *p), encoding="utf-8") as f:
            return json.load(f)
    res = {"train": cli("train", "--config", CONFIG_PATH)}
    res["train_json"] = load("run", "train.json")
    with open(os.path.join(WORK, "run", "progress.jsonl"), encoding="utf-8") as f:
        res["progress"] = [json.loads(x) for x in f if x.strip()]
    res["automl_argv"] = load("run", "model", "argv.json")
    res["benchmark"] = cli("benchmark", "--config", CONFIG_PATH)
    res["benchmark_json"] = load("run", "benchmark.json")
    res["status"] = cli("status", "--config", CONFIG_PATH)
    res["commands"] = cli("commands", "--config", CONFIG_PATH)
    res["export_fails"] = cli("export", "--config", CONFIG_PATH)
    bad = os.path.join(WORK, "bad.json")
    with open(bad, "w", encoding="utf-8") as f:
        json.dump(dict(CONFIG, model_name="efficientdet-d9"), f)
    res["bad_model"] = cli("train", "--config", bad)
    res["detach_elsewhere"] = cli("status", "--config", CONFIG_PATH, "--detach")
    res["infer_no_images"] = cli("infer", "--config", CONFIG_PATH)
    return res


def norm(x):
    """Paths that differ between interpreters -> placeholders."""
    if isinstance(x, str):
        return x.replace(sys.executable, "<PY>").replace(WORK, "<WORK>").replace(DATA, "<DATA>")
    if isinstance(x, (list, tuple)):
        return [norm(v) for v in x]
    if isinstance(x, dict):
        return {norm(k): norm(v) for k, v in x.items()}
    return x


print("PROBE_RESULT " + json.dumps(norm(out)), flush=True)
'''


def run_probe(python: str, data: Path, work: Path) -> Dict[str, Any]:
    work.mkdir()
    probe = work.parent / f"probe-{work.name}.py"
    probe.write_text(PROBE, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1",
               LC_ALL="C.UTF-8",  # the lab image sets a UTF-8 LANG; 3.6 needs it for file names
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("EFFDETLAB_RECORD_WRITER", None)
    r = subprocess.run([python, str(probe), str(REPO), str(data), str(work)], cwd=str(work),
                       env=env, capture_output=True, text=True, timeout=600)
    lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE_RESULT ")]
    assert r.returncode == 0 and lines, f"probe under {python} failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1].split(" ", 1)[1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("PIL", reason="Pillow (requirements.txt) draws the test images")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return make_dataset(tmp_path_factory.mktemp("py36"))


@pytest.fixture(scope="module")
def py36(request: pytest.FixtureRequest) -> Dict[str, Any]:
    python = _find_py36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter (looked for /root/.pyenv/versions/3.6*/bin/python3.6 "
                    "and python3.6 on PATH): the runtime check of the container's Python is skipped")
    dataset: Path = request.getfixturevalue("dataset")
    res = run_probe(python, dataset, dataset.parent / "work36")
    assert tuple(res["version"][:2]) == TARGET, res["version"]
    return res


@pytest.fixture(scope="module")
def py_here(dataset: Path, py36: Dict[str, Any]) -> Dict[str, Any]:
    return run_probe(sys.executable, dataset, dataset.parent / "work-here")


def _ok(res: Dict[str, Any], section: str) -> Any:
    assert section not in res["errors"], res["errors"][section]
    return res[section]


def test_py36_compiles_and_imports_every_module(py36: Dict[str, Any]) -> None:
    expected = sorted(str(p.relative_to(REPO)) for p in PKG.rglob("*.py")
                      if "__pycache__" not in p.parts)
    assert py36["compiled"] == expected
    assert not py36["compile_errors"], py36["compile_errors"]
    assert not py36["import_errors"], "\n".join(py36["import_errors"].values())
    assert {"effdetlab", "effdetlab.convert", "effdetlab.stages.__main__", "effdetlab.stages.train",
            "effdetlab.stages.verify", "effdetlab.benchreport"} <= set(py36["imported"])
    assert py36["tensorflow_imported"] is False
    assert not py36["errors"], "\n".join(py36["errors"].values())


def test_py36_voc_parsing_and_image_lookup(py36: Dict[str, Any]) -> None:
    v = _ok(py36, "voc")
    assert v["win"] == {
        "filename": "IMG_0001.jpg", "folder": "C:\\Users\\lab\\Desktop\\imgs",
        "path": "C:\\Users\\lab\\Desktop\\imgs\\IMG_0001.jpg", "size": [W, H],
        "objects": [["cat", 10.0, 20.0, 100.0, 110.0, 0, 0, "Unspecified", None],
                    ["dog", 50.0, 60.0, 150.0, 119.0, 1, 0, "Left", None]]}
    assert v["cjk"]["filename"] == CJK + ".jpg" and v["cjk"]["folder"] == "D:\\データ"
    assert v["cjk"]["objects"] == [["cat", 120.0, 80.0, 200.0, 150.0, 0, 0, "Unspecified", None]]
    assert [o[-1] for o in v["badnum"]["objects"]] == [
        "missing or non-numeric <xmin> ('abc')", None, "missing <bndbox>"]
    assert v["empty"] == {"filename": "empty.jpg", "folder": "imgs", "path": "E:\\empty.jpg",
                          "size": [0, 0], "objects": []}
    assert v["index_size"] == 9
    r = v["resolved"]
    assert r["win.xml"] == ["filename", "JPEGImages/IMG_0001.JPG", []]
    assert r[CJK + ".xml"] == ["stem:filename", f"JPEGImages/sub/{CJK}.jpeg", []]
    assert r["cafe.xml"] == ["filename", "JPEGImages/sub/" + CAFE_NFD, []]  # NFC in XML, NFD on disk
    assert r["other machine.xml"][:2] == ["filename", "JPEGImages/photo 2.png"]
    assert r["missing.xml"] == ["missing", None, ["ghost.jpg", "missing"]]
    assert r["corrupt.xml"][0] == "ParseError"
    assert v["split"] == [["win.xml", CJK + ".xml"], ["nope", "nothere"]]
    assert v["basename"] == [CJK + " 1.JPG", "y.png", "z.jpg", ""]
    assert v["record"] == {"equal": True, "differs": True, "hashable": False, "fresh_lists": True,
                           "repr": "VocObject(name='cat', xmin=1.0, ymin=2.0, xmax=3.0, ymax=4.0, "
                                   "difficult=0, truncated=0, pose='Unspecified', problem=None)"}


def test_py36_label_maps_and_boxes(py36: Dict[str, Any]) -> None:
    lm = _ok(py36, "labelmap")
    assert lm["from_data"] == {"cat": 1, "dog": 2, CJK: 3}
    assert lm["yaml_reader"] == "builtin"  # no PyYAML under this 3.6: our own reader ran
    assert lm["yaml_text"].splitlines()[1:] == [f'1: "{CJK}"', '2: "a \\"quoted\\": name"', '3: "it\'s"']
    assert lm["yaml"] == lm["json"] == {CJK: 1, 'a "quoted": name': 2, "it's": 3}
    assert lm["txt"] == {"cat": 1, "dog": 2}
    assert "id 0" in lm["bad_json"] and "<LM>/bad.json" in lm["bad_json"]
    assert lm["mismatch"].startswith("--num-classes=5 does not match the label map")
    assert _ok(py36, "boxes") == [
        [[120.0, 80.0, 160.0, 120.0], ["clipped"], None, "(120,80,200,150) in 160x120"],
        [[40, 30, 100, 90], ["inverted_fixed"], None, "(100,90,40,30) in 160x120"],
        [None, [], "inverted", "inverted box (100,90,40,30) in 160x120"],
        [None, ["clipped"], "degenerate", "zero-area box (200,10,300,50) in 160x120 after clipped"],
        [None, [], "invalid_box", "missing or non-numeric coordinates"],
        [[10, 20, 30, 40], [], None, ""]]


def _records(path: Path) -> List[bytes]:
    """TFRecord framing, both CRC-32Cs checked."""
    def mask(c: int) -> int:
        return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    data, i, out = path.read_bytes(), 0, []
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == mask(crc32c(0, data[i:i + 8], 8))
        rec = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == mask(crc32c(0, rec, n))
        out.append(rec)
        i += 16 + n
    return out


def test_py36_convert(py36: Dict[str, Any], dataset: Path) -> None:
    c = _ok(py36, "convert")
    rep = c["report"]
    assert rep["reconciliation"]["ok"], rep["reconciliation"]
    assert rep["totals"] == {
        "xml_files": 10, "images_written": 8, "images_skipped": 2, "objects_in": 12,
        "objects_written": 8, "objects_dropped": 4, "objects_clipped": 1, "objects_inverted_fixed": 1,
        "difficult_in": 1, "difficult_written": 1, "truncated_in": 1, "truncated_written": 1,
        "empty_annotations": 1, "images_written_without_objects": 1, "split_ids_without_xml": 0,
        "images_without_annotation": 1}
    assert rep["images_skipped"] == {"corrupt_xml": 1, "missing_image": 1}
    assert rep["objects_dropped"] == {"image_missing_image": 1, "invalid_box": 2, "unknown_class": 1}
    assert rep["class_counts"] == {"cat": 5, "dog": 3} and rep["unknown_classes"] == {"zebra": 1}
    assert rep["image_lookup"] == {"filename": 7, "stem:filename": 1}
    assert rep["warnings"] == {"size_mismatch": 1}
    assert rep["images_without_annotation"] == ["orphan.jpg"]
    assert rep["label_map"] == {"cat": 1, "dog": 2}
    assert list(rep["options"]) == ["label_map_from", "label_map_path", "num_shards", "box_policy",
                                    "num_classes", "ignore_difficult", "skip_empty", "strict",
                                    "record_writer", "workers"]
    assert rep["options"]["record_writer"] == "native-crc32c" and rep["options"]["workers"] == 1
    assert rep["shards"] == [{"path": "train-00000-of-00001.tfrecord", "records": 8}]
    assert c["markdown"][0] == "# Conversion report: set `train`"
    corrupt = [i for i in rep["issues"] if i["kind"] == "corrupt_xml"]
    assert [i["xml"] for i in corrupt] == ["corrupt.xml"] and "line" in corrupt[0]["detail"]
    pool = c["pool_report"]
    assert pool["totals"] == rep["totals"] and pool["options"]["workers"] == 2
    assert [s["records"] for s in pool["shards"]] == [4, 4]
    assert "corrupt.xml" in c["strict"] and "already has 1 shard(s)" in c["stale"]
    assert c["cli_missing"][0] == 2 and "dataset folder not found" in c["cli_missing"][1]

    out = dataset.parent / "work36"
    recs = _records(out / "tfr" / "train-00000-of-00001.tfrecord")
    assert len(recs) == 8
    assert sorted(r for p in sorted((out / "tfr2").glob("*.tfrecord")) for r in _records(p)) == sorted(recs)
    images = {p.name: p.read_bytes() for p in (dataset / "JPEGImages").rglob("*.*")}
    for name in ("IMG_0001.JPG", CJK + ".jpeg", "photo 2.png", CAFE_NFD):
        assert sum(images[name] in r and name.encode() in r for r in recs) == 1, name
    coco = json.loads((out / "tfr" / "train_annotations.json").read_text(encoding="utf-8"))
    assert len(coco["images"]) == 8 and len(coco["annotations"]) == 8
    cjk_id = [i["id"] for i in coco["images"] if i["file_name"] == CJK + ".jpeg"]
    assert [a["bbox"] for a in coco["annotations"] if a["image_id"] in cjk_id] == [[120.0, 80.0, 40.0, 40.0]]
    assert (out / "tfr" / "label_map.yaml").read_text(encoding="utf-8").splitlines()[1:] == [
        '1: "cat"', '2: "dog"']


def test_py36_stage_config_and_dialect(py36: Dict[str, Any]) -> None:
    c = _ok(py36, "config")
    cfg = c["config"]
    assert cfg["run_dir"] == "<WORK>/run" and cfg["model_dir"] == "<WORK>/run/model"
    assert cfg["code_dir"] == "<WORK>/automl" and cfg["config_path"] == "<WORK>/config.json"
    assert cfg["tflite_path"] == "<WORK>/run/efficientdet-d0.tflite"
    assert cfg["hparams"] == {"image_size": 128, "moving_average_decay": 0, "num_classes": 2,
                              "label_map": "<WORK>/tfr/label_map.yaml"}  # num_classes from the map
    assert cfg["train_steps"] == 4 and cfg["eval_batch_size"] == 1 and cfg["min_score_thresh"] == 0.4
    assert c["benchmark"] == {"model_names": ["efficientdet-d0"], "batch_sizes": [1], "threads": [1],
                              "modes": ["bm"], "bm_runs": 2, "hparams": {},
                              "saved_models": {"efficientdet-d0": "<WORK>/run/saved_model"},
                              "images": None, "host": "probe-host", "repeats": 3, "fill": True,
                              "pairs": [["efficientdet-d0", 1]]}
    e = c["errors"]
    assert "mode='eval'" in e[0] and "device" in e[1] and "must be >= 1" in e[2] and "','" in e[3]
    assert "benchmark.threads" in e[4] and "min_score_thresh" in e[5] and "unknown key" in e[6]
    assert "image_size" in e[7] and "unknown model name 'efficientdet-d9'" in e[8]
    assert "num_classes=3 does not match the label map" in e[9] and "num_classes == 2" in e[9]
    assert "needs code_dir" in e[10]
    assert c["missing_file"] == "config file not found: <WORK>/nope.json"

    d = c["dialect"]
    ed = "<WORK>/automl/efficientdet"
    assert d["name"] == "2020-05" and d["use_tpu_flag"] is True
    assert "training_file_pattern" in d["main_flags"] and "train_file_pattern" not in d["main_flags"]
    assert "bm_runs" not in d["inspect_flags"] and "threads" in d["inspect_flags"]
    assert d["cwd"] == ed and d["env"] == {"PYTHONPATH": ed}
    assert d["files"] == {"main": ed + "/main.py", "model_inspect": ed + "/model_inspect.py"}
    assert c["train_cmd"] == [
        "<PY>", ed + "/main.py", "--mode=train", "--model_name=efficientdet-d0",
        "--model_dir=<WORK>/run/model", "--training_file_pattern=<WORK>/tfr/train-*.tfrecord",
        "--train_batch_size=2", "--eval_batch_size=1", "--eval_samples=100", "--num_epochs=1",
        "--num_examples_per_epoch=8", "--save_checkpoints_steps=2", "--iterations_per_loop=1",
        "--use_tpu=False",
        "--hparams=image_size=128,moving_average_decay=0,label_id_mapping=<WORK>/tfr/label_map.yaml,num_classes=2"]
    argv, dropped = c["export_cmd"]
    assert argv[2:4] == ["--runmode=saved_model", "--model_name=efficientdet-d0"]
    assert dropped == ["tflite_path"] and "--min_score_thresh=0.4" in argv
    argv, dropped = c["bm_cmd"]
    assert dropped == ["bm_runs"]
    assert argv[2:] == ["--runmode=bm", "--model_name=efficientdet-d1", "--threads=1",
                        "--batch_size=2", "--logdir=/tmp/l"]
    assert c["child_env"] == {"PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "-1",
                              "PYTHONPATH": ed}
    assert c["image_size_of"] == [128, 128] and c["hparams_string"] == "a=true,b=0.5,c=x"
    assert c["current"] == ["current", "val_file_pattern", False, True, False, True, True, True]
    assert "defines neither --train_file_pattern" in c["detect_error"]
    assert "does not match the code" in c["dialect_mismatch"]


def test_py36_parsers_on_recorded_automl_output(py36: Dict[str, Any]) -> None:
    p = _ok(py36, "parsers")
    steps = [r for r in p["train"] if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    assert steps[0]["loss"] == pytest.approx(5.7779655) and steps[3]["loss"] == pytest.approx(3.0309424)
    assert steps[1]["sec"] == pytest.approx(12.53) and steps[1]["box_loss"] == pytest.approx(0.05891017)
    assert steps[2]["steps_per_sec"] == pytest.approx(5.9442) and steps[0]["time"] == 1.0
    assert [r["step"] for r in p["train"] if r["kind"] == "checkpoint"] == [0, 2, 4]
    assert [r["loss"] for r in p["train"] if r["kind"] == "final"] == [pytest.approx(3.0309424)]
    te = p["train_and_eval"]
    assert [s for s, _ in te["evals"]] == [2, 4]
    assert {"AP", "AP50", "AP75", "AP_/cat", "AP_/dog", "ARmax100"} <= set(te["evals"][0][1])
    assert te["steps"] == [0, 1, 2, 3] and te["restores"] == [2, 2, 4]
    assert p["resumed"]["attempts"] == 3 and p["resumed"]["restore"][0] == 3
    assert p["resumed"]["steps"][0] == 3 and p["resumed"]["steps"][-1] == 39
    assert p["bm"] == {"latency_s": pytest.approx(0.0073555065), "fps": pytest.approx(135.95256832300882),
                       "threads_reported": 1, "runs": 2, "latency_ms": pytest.approx(7.3555065)}
    assert p["e2e_ms"] == pytest.approx(36.51254319997861) and 10 < p["bm512_ms"] < 5000
    assert p["no_bm_in_train_log"] is True
    assert p["infer"] == [["/tmp/ed/imgs/000001.jpg", "/tmp/ed/imgs/000000.jpg"],
                          ["/tmp/ed/out/0.jpg", "/tmp/ed/out/1.jpg"]]
    assert p["last_error"] == "ValueError: Cannot find any images for pattern /x/*"
    assert p["nonfinite"][0] == {"kind": "step", "step": 7, "time": 0.0, "loss": "nan"}
    assert p["nonfinite"][1]["steps_per_sec"] == 2.5 and p["nonfinite"][1]["sec"] == 0.4


def _json_line(text: str) -> Any:
    """The stage's JSON on stdout: the whole output, or its last line that is an object."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads([x for x in text.splitlines() if x.startswith("{")][-1])


def test_py36_stage_cli_train_benchmark_status(py36: Dict[str, Any]) -> None:
    s = _ok(py36, "stages")
    assert s["train"]["rc"] == 0, s["train"]["stderr"]
    assert _json_line(s["train"]["stdout"])["state"] == "finished"
    t = s["train_json"]
    assert t["ok"] is True and t["exit_code"] == 0 and t["attempt"] == 1
    assert t["dialect"] == "2020-05" and t["code_source"] == "git" and t["device"] == "cpu"
    assert t["global_step"] == 4 and t["checkpoint"] == "<WORK>/run/model/model.ckpt-4"
    assert t["steps_logged"] == 4 and t["first_step"] == 0 and t["last_step"] == 3
    assert t["last_loss"] == pytest.approx(3.0309424) and t["nonfinite_losses"] == 0
    assert t["train_steps"] == 4 and "--use_tpu=False" in t["command"]
    assert [(r["step"], r["attempt"]) for r in s["progress"]] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert s["automl_argv"][0] == "--mode=train" and "--use_tpu=False" in s["automl_argv"]

    assert s["benchmark"]["rc"] == 0, s["benchmark"]["stderr"]
    recs = s["benchmark_json"]
    assert [r["repeat"] for r in recs] == [1, 2, 3] and all(r["repeats"] == 3 for r in recs)  # the default
    b = recs[0]
    assert b["ok"] is True and b["latency_ms"] == pytest.approx(7.3555, abs=1e-3)
    assert b["fps"] == pytest.approx(135.953, abs=1e-3) and b["runs"] == 2
    assert (b["host"], b["mode"], b["batch"], b["threads"], b["threads_via"]) == (
        "probe-host", "bm", 1, 1, "flag")
    # bm of the configured model: its own class count and image size (hparams), as its exports
    assert b["image_size"] == [128, 128] and b["flags_not_supported"] == ["bm_runs"]
    assert "num_classes=2,image_size=128" in b["command"]
    assert b["tf_version"] is None  # no tensorflow here: the pkg_resources fallback said so

    st = _json_line(s["status"]["stdout"])
    assert s["status"]["rc"] == 0 and st["state"] == "finished" and st["global_step"] == 4
    assert st["outputs"] == {"export": None, "benchmark_records": 3, "infer": None}
    cmds = _json_line(s["commands"]["stdout"]) if s["commands"]["rc"] == 0 else s["commands"]
    assert cmds["dialect"] == "2020-05" and "--training_file_pattern=" in cmds["train"]
    assert len(cmds["benchmark"]) == 1 and "--runmode=saved_model_infer" in cmds["infer"]  # one point

    # automl fails: exit 1 and the telling line; bad input: exit 2 and one line on stderr
    assert s["export_fails"]["rc"] == 1
    assert "ValueError: runmode saved_model is not recorded" in s["export_fails"]["stderr"]
    for key, needle in (("bad_model", "unknown model name 'efficientdet-d9'"),
                        ("detach_elsewhere", "--detach is only for train"),
                        ("infer_no_images", "config infer_images is required")):
        lines = [x for x in s[key]["stderr"].splitlines() if x.strip()]
        assert s[key]["rc"] == 2 and len(lines) == 1 and needle in lines[0], s[key]


VOLATILE = {"version", "seconds", "images_per_second", "duration_s", "timestamp", "started",
            "ended", "pid", "child_pid", "time", "stdout", "stderr", "yaml_reader", "tf_version"}


def _stable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _stable(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_stable(v) for v in x]
    return x


def test_py36_and_this_python_agree(py36: Dict[str, Any], py_here: Dict[str, Any]) -> None:
    """Same results, and byte-identical TFRecords / COCO json / label maps, on 3.6 and here."""
    assert not py_here["errors"], "\n".join(py_here["errors"].values())
    a, b = _stable(py36), _stable(py_here)
    for key in sorted(set(a) | set(b)):
        assert a.get(key) == b.get(key), key
    assert py36["convert"]["files"] == py_here["convert"]["files"]
    assert py36["convert"]["pool_files"] == py_here["convert"]["pool_files"]


# ----------------------------------------------------------------------------- 3. the tf2.1-gpu profile's pins

def test_tf21_profile_pins_install_and_import_on_python36(tmp_path: Path) -> None:
    """The lab image's tf2.1-gpu profile installs what automl's EfficientDet imports into the image's
    Python 3.6 (roles/lab_image/defaults/main.yml). Here: the same pins, in the same order, into a
    fresh 3.6 venv from PyPI (or PIP_INDEX_URL), then imported. pycocotools builds from source, as
    it must in the image (no cp36 wheel)."""
    import yaml
    py36 = _find_py36()
    if py36 is None:
        pytest.skip("no Python 3.6 interpreter (looked for /root/.pyenv/versions/3.6*/bin/python3.6 "
                    "and python3.6 on PATH)")
    profile = yaml.safe_load((REPO / "roles" / "lab_image" / "defaults" / "main.yml").read_text())[
        "lab_image_profiles"]["tf2.1-gpu"]
    venv = tmp_path / "venv"
    subprocess.run([py36, "-m", "venv", str(venv)], check=True)
    # As the Dockerfile runs it (--no-cache-dir, not PIP_NO_CACHE_DIR: old pips choke on that).
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check"]
    # Only PyPI (or PIP_INDEX_URL) and the CA: not this machine's pip.conf (local wheel folders).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    for name in ("PIP_INDEX_URL", "PIP_CERT"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if "PIP_CERT" not in env and os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    # What the TF 2.1 image already has: a pip of January 2020, and numpy, which pycocotools builds with.
    steps = [["pip==20.0.2"], ["numpy==1.18.1"], profile["pip_build_packages"], profile["pip_packages"]]
    for packages in steps:
        if packages:
            proc = subprocess.run(pip + packages, capture_output=True, text=True, env=env, check=False)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    probe = ("import absl, lxml.etree, yaml, PIL, matplotlib, pycocotools.coco, pycocotools.mask, sys;"
             "print(sys.version_info[:2], pycocotools.mask.iou.__name__)")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "(3, 6) iou", out.stdout + out.stderr
