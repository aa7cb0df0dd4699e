"""Shared helpers for effdetlab tests: messy labelImg datasets and TFRecord decoding."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import unicodedata
from typing import Any, Dict, List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from effdetlab.synth import SynthObject as O, write_image, write_voc_xml  # noqa: E402

W, H = 500, 375


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_records(pattern: str) -> List[Dict[str, Any]]:
    """Decode every record of the matching shards with tf.data + tf.train.Example."""
    import tensorflow as tf
    files = sorted(glob.glob(pattern))
    assert files, f"no shards match {pattern}"
    out = []
    for rec in tf.data.TFRecordDataset(files).as_numpy_iterator():
        ex = tf.train.Example.FromString(rec)
        d: Dict[str, Any] = {}
        for k, f in ex.features.feature.items():
            kind = f.WhichOneof("kind")
            d[k] = list(getattr(f, kind).value) if kind else []
        out.append(d)
    return out


def parse_with_automl_decoder_spec(pattern: str) -> List[Dict[str, Any]]:
    """Parse with tf.io.parse_single_example using the spec of automl's TfExampleDecoder."""
    import tensorflow as tf
    spec = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/source_id": tf.io.FixedLenFeature((), tf.string, ""),
        "image/height": tf.io.FixedLenFeature((), tf.int64, -1),
        "image/width": tf.io.FixedLenFeature((), tf.int64, -1),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/object/area": tf.io.VarLenFeature(tf.float32),
        "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    }
    out = []
    for rec in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        p = tf.io.parse_single_example(rec, spec)
        img = tf.io.decode_image(p["image/encoded"], channels=3)  # what automl's decoder does
        out.append({"shape": tuple(img.shape), "height": int(p["image/height"]),
                    "width": int(p["image/width"]), "source_id": p["image/source_id"].numpy(),
                    "labels": tf.sparse.to_dense(p["image/object/class/label"]).numpy().tolist()})
    return out


def make_messy(root: str) -> str:
    """A labelImg-style tree with everything that goes wrong in practice.  Returns data dir.

    Expected outcome with label map [cat, dog] and --box-policy clip is spelled out in
    tests/effdet/test_convert.py::EXPECTED_CLIP.
    """
    data = os.path.join(root, "messy")
    ann = os.path.join(data, "Annotations")
    img = os.path.join(data, "JPEGImages")
    os.makedirs(ann)
    os.makedirs(os.path.join(img, "sub"))

    def case(xml_name: str, *, filename: str, path: str, folder: str = "imgs",
             disk: str = "", objects=(), size=(W, H)) -> None:
        if disk:
            write_image(os.path.join(img, disk), W, H, seed=len(disk))
        write_voc_xml(os.path.join(ann, xml_name), filename=filename, folder=folder, img_path=path,
                      width=size[0], height=size[1], objects=list(objects))

    # Windows path, upper-case extension on disk
    case("win.xml", filename="IMG_0001.jpg", path="C:\\Users\\lab\\Desktop\\imgs\\IMG_0001.jpg",
         disk="IMG_0001.JPG", objects=[O("cat", (10, 20, 200, 220)),
                                       O("dog", (50, 60, 300, 370), difficult=1)])
    # another machine's path, PNG, space in name
    case("other machine.xml", filename="photo 2.png", path="/home/alice/datasets/x/photo 2.png",
         folder="x", disk="photo 2.png", objects=[O("cat", (1, 1, 499, 374), truncated=1)])
    # CJK name, Windows folder, extension differs on disk (.jpg in XML, .jpeg on disk); box past the edge
    case("猫の写真.xml", filename="猫の写真.jpg", path="D:\\データ\\猫の写真.jpg", folder="D:\\データ",
         disk="猫の写真.jpeg", objects=[O("cat", (400, 300, 600, 400))])
    # inverted box
    case("inverted.xml", filename="inv.jpg", path="/tmp/inv.jpg", disk="inv.jpg",
         objects=[O("dog", (200, 150, 100, 50))])
    # unknown class next to a known one
    case("unknown.xml", filename="unk.jpg", path="unk.jpg", disk="unk.jpg",
         objects=[O("zebra", (10, 10, 50, 50)), O("cat", (60, 60, 120, 120))])
    # empty annotation (negative example)
    case("empty.xml", filename="empty.jpg", path="E:\\empty.jpg", disk="empty.jpg")
    # image that does not exist anywhere
    case("missing.xml", filename="ghost.jpg", path="C:\\ghost.jpg",
         objects=[O("cat", (1, 1, 10, 10)), O("dog", (1, 1, 10, 10))])
    # box entirely outside the image: zero area after clipping
    case("outside.xml", filename="outside.jpg", path="/x/outside.jpg", disk="outside.jpg",
         objects=[O("cat", (600, 10, 700, 50))])
    # non-numeric coordinate next to a good object
    case("badnum.xml", filename="badnum.jpg", path="badnum.jpg", disk="badnum.jpg",
         objects=[O("cat", (1, 2, 3, 4)), O("dog", (5, 5, 80, 80))])
    with open(os.path.join(ann, "badnum.xml"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(ann, "badnum.xml"), "w", encoding="utf-8") as f:
        f.write(text.replace("<xmin>1</xmin>", "<xmin>abc</xmin>", 1))
    # labelImg wrote size 0x0
    case("sizelies.xml", filename="sizelies.jpg", path="sizelies.jpg", disk="sizelies.jpg",
         size=(0, 0), objects=[O("dog", (10, 10, 100, 100))])
    # decomposed (NFD, as macOS writes) file name in a sub-folder; XML has NFC
    nfc = unicodedata.normalize("NFC", "café.jpg")
    case("cafe.xml", filename=nfc, path="/Users/bob/" + nfc, disk=os.path.join(
        "sub", unicodedata.normalize("NFD", "café.jpg")), objects=[O("cat", (5, 5, 50, 50))])
    # BMP: automl's decoder cannot use it
    case("bitmap.xml", filename="bitmap.bmp", path="bitmap.bmp", objects=[O("cat", (5, 5, 50, 50))])
    from PIL import Image
    Image.new("RGB", (W, H), (1, 2, 3)).save(os.path.join(img, "bitmap.bmp"))
    # <filename> without extension; the file is a PNG
    case("noext.xml", filename="sample", path="", disk="sample.png", objects=[O("dog", (3, 3, 30, 30))])
    # corrupt XML (truncated file)
    with open(os.path.join(ann, "corrupt.xml"), "w", encoding="utf-8") as f:
        f.write("<annotation><folder>x</folder><filename>corrupt.jpg</filename><object><name>cat")
    write_image(os.path.join(img, "corrupt.jpg"), W, H, seed=3)
    # an image nobody annotated
    write_image(os.path.join(img, "orphan.jpg"), W, H, seed=4)
    with open(os.path.join(data, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("cat\ndog\n")
    return data


@pytest.fixture(scope="session")
def messy_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_messy(str(tmp_path_factory.mktemp("data")))
