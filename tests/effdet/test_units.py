"""Unit tests: protobuf encoder vs tensorflow, TFRecord framing, image headers, VOC parsing/lookup."""
from __future__ import annotations

import io
import os
import random
import unicodedata

import pytest

from effdetlab import example_proto as ep
from effdetlab import recordio
from effdetlab.imagehdr import sniff
from effdetlab.labelmap import load as load_label_map, to_yaml
from effdetlab.synth import write_image, write_voc_xml
from effdetlab.tfrecord import ObjectOut, feature_entries_head, finish_example
from effdetlab.voc import ImageIndex, basename_any, parse_voc_xml


def _tf_example(features: dict):
    import tensorflow as tf
    f = {}
    for k, (kind, vals) in features.items():
        if kind == "b":
            f[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=vals))
        elif kind == "f":
            f[k] = tf.train.Feature(float_list=tf.train.FloatList(value=vals))
        else:
            f[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=vals))
    return tf.train.Example(features=tf.train.Features(feature=f))


@pytest.mark.parametrize("seed", range(5))
def test_example_encoder_matches_tensorflow(seed: int) -> None:
    import tensorflow as tf
    rng = random.Random(seed)
    feats = {
        "img": ("b", [os.urandom(rng.choice([0, 1, 127, 128, 300, 70000]))]),
        "names": ("b", [s.encode() for s in rng.sample(["cat", "猫", "dög", "", "x" * 200], 3)]),
        "none_b": ("b", []), "none_f": ("f", []), "none_i": ("i", []),
        "floats": ("f", [rng.uniform(-2, 2) for _ in range(rng.randint(1, 300))]),
        "ints": ("i", [rng.choice([0, 1, 127, 128, 2**31, 2**62, -1, -2**63]) for _ in range(40)]),
        "ключ/键": ("i", [7]),
    }
    enc = {"b": ep.bytes_feature, "f": ep.float_feature, "i": ep.int64_feature}
    ours = ep.example(b"".join(ep.feature_entry(k, enc[kind](v)) for k, (kind, v) in feats.items()))
    theirs = _tf_example(feats)
    parsed = tf.train.Example.FromString(ours)
    assert parsed == theirs
    # and through tensorflow's C++ parser
    spec = {"img": tf.io.FixedLenFeature((), tf.string), "ints": tf.io.VarLenFeature(tf.int64),
            "floats": tf.io.VarLenFeature(tf.float32), "none_f": tf.io.VarLenFeature(tf.float32)}
    p = tf.io.parse_single_example(ours, spec)
    assert p["img"].numpy() == feats["img"][1][0]
    assert tf.sparse.to_dense(p["ints"]).numpy().tolist() == feats["ints"][1]
    assert tf.sparse.to_dense(p["none_f"]).numpy().tolist() == []


def test_bytes_entry_header_splits_value() -> None:
    for n in (0, 1, 100, 127, 128, 16383, 16384, 2_000_000):
        v = os.urandom(n)
        assert ep.bytes_entry_header("image/encoded", n) + v == ep.feature_entry(
            "image/encoded", ep.bytes_feature([v]))


def test_record_writers_byte_identical(tmp_path, monkeypatch) -> None:
    import tensorflow as tf
    assert recordio.native_crc32c() is not None, "fast CRC-32C not found in this tensorflow build"
    recs = [b"", b"a", os.urandom(1000), os.urandom(200_000)]
    a, b = str(tmp_path / "native.tfrecord"), str(tmp_path / "tf.tfrecord")
    w = recordio.NativeRecordWriter(a, recordio.native_crc32c())
    for r in recs[:2]:
        w.write(r)
    for r in recs[2:]:
        w.write_parts([r[:10], r[10:500], r[500:]])
    w.close()
    with tf.io.TFRecordWriter(b) as tw:
        for r in recs:
            tw.write(r)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert list(tf.data.TFRecordDataset(a).as_numpy_iterator()) == recs
    monkeypatch.setattr(recordio, "_crc_loaded", False)
    monkeypatch.setenv("EFFDETLAB_RECORD_WRITER", "tf")
    assert recordio.backend() == "tf.io.TFRecordWriter"
    monkeypatch.setattr(recordio, "_crc_loaded", False)


def test_image_header_matches_pil(tmp_path) -> None:
    from PIL import Image
    cases = []
    for i, (mode, fmt, kw) in enumerate([("RGB", "JPEG", {}), ("L", "JPEG", {}),
                                          ("RGB", "JPEG", {"progressive": True}),
                                          ("RGB", "JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 64}),
                                          ("RGB", "PNG", {}), ("RGBA", "PNG", {}), ("P", "PNG", {})]):
        im = Image.new(mode, (31 + i, 17 + 2 * i))
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        cases.append((buf.getvalue(), fmt.lower(), im.size))
    for data, fmt, (w, h) in cases:
        assert sniff(data) == (fmt, w, h)
    buf = io.BytesIO()
    Image.new("RGB", (5, 5)).save(buf, format="BMP")
    assert sniff(buf.getvalue()) is None
    assert sniff(b"\xff\xd8\xff\xe0\x00") is None and sniff(b"") is None


def test_basename_any() -> None:
    assert basename_any("C:\\Users\\a b\\猫 1.JPG") == "猫 1.JPG"
    assert basename_any("/home/x/y.png") == "y.png"
    assert basename_any("\\\\server\\share\\z.jpg") == "z.jpg"
    assert basename_any("plain.jpg") == "plain.jpg" and basename_any("") == ""


def test_parse_tolerates_missing_fields(tmp_path) -> None:
    p = tmp_path / "a.xml"
    p.write_text("<annotation><filename> x.jpg </filename><object><name> cat </name>"
                 "<bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20.0</ymax></bndbox>"
                 "<difficult>Unspecified</difficult></object><object><name>dog</name></object></annotation>",
                 encoding="utf-8")
    a = parse_voc_xml(str(p))
    assert a.filename == "x.jpg" and (a.width, a.height) == (0, 0)
    o, o2 = a.objects
    assert (o.name, o.xmin, o.ymax, o.difficult, o.truncated, o.pose, o.problem) == (
        "cat", 1.5, 20.0, 0, 0, "Unspecified", None)
    assert o2.problem == "missing <bndbox>"


def test_image_index_resolution(tmp_path) -> None:
    img = tmp_path / "imgs"
    (img / "a" / "b").mkdir(parents=True)
    for rel in ("X.JPG", "a/one two.png", "a/b/" + unicodedata.normalize("NFD", "é.jpg"), "dup.jpg",
                "dup.png", "same.jpg", "a/same.jpg"):
        (img / rel).write_bytes(b"x")
    idx = ImageIndex(str(img))
    ann_dir = tmp_path / "ann"
    ann_dir.mkdir()

    def res(filename: str, path: str = "", xml: str = "q.xml"):
        write_voc_xml(str(ann_dir / xml), filename=filename, folder="f", img_path=path, width=1,
                      height=1, objects=[])
        return idx.resolve(parse_voc_xml(str(ann_dir / xml)))

    assert res("x.jpg").how == "filename" and res("x.jpg").path.endswith("X.JPG")
    assert res("nothing.jpg", "C:\\u\\one two.png").how == "path"
    assert res("é.jpg").path.endswith(unicodedata.normalize("NFD", "é.jpg"))
    assert res("", "", xml="X.xml").how == "stem:xml_stem"  # XML stem + any image extension
    assert res("x.jpeg").how == "stem:filename"
    assert res("dup.jpg").how == "filename"          # exact name wins over stem clash
    assert res("dup.jpeg").how == "ambiguous"        # dup.jpg vs dup.png
    r = res("same.jpg")
    assert r.how == "ambiguous" and len(r.candidates) == 2
    assert res("ghost.jpg", "/x/ghost.jpg").how == "missing"


def test_label_map_formats(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("cat\ndog\n\n")
    assert load_label_map(str(tmp_path / "a.txt")) == {"cat": 1, "dog": 2}
    (tmp_path / "b.json").write_text('{"background": 0, "dog": 2, "cat": 1}')
    assert load_label_map(str(tmp_path / "b.json")) == {"cat": 1, "dog": 2}
    (tmp_path / "c.yaml").write_text(to_yaml({"猫": 1, 'a "quoted": name': 2}), encoding="utf-8")
    assert load_label_map(str(tmp_path / "c.yaml")) == {"猫": 1, 'a "quoted": name': 2}
    (tmp_path / "d.json").write_text('{"cat": 0}')
    from effdetlab import LabelMapError
    with pytest.raises(LabelMapError, match="id 0"):
        load_label_map(str(tmp_path / "d.json"))
    with pytest.raises(LabelMapError, match="not found"):
        load_label_map(str(tmp_path / "nope.yaml"))


def test_finish_example_roundtrip(tmp_path) -> None:
    import tensorflow as tf
    p = str(tmp_path / "i.jpg")
    write_image(p, 40, 30, seed=1)
    data = open(p, "rb").read()
    objs = [ObjectOut("猫", 1, (1.0, 2.0, 20.0, 29.0), 1, 0, "Left")]
    ex = tf.train.Example.FromString(finish_example(feature_entries_head(data, "jpeg", "i.jpg", 40, 30, objs), data, 7))
    f = ex.features.feature
    assert f["image/encoded"].bytes_list.value == [data]
    assert f["image/source_id"].bytes_list.value == [b"7"]
    assert f["image/object/class/text"].bytes_list.value == ["猫".encode()]
    assert f["image/object/view"].bytes_list.value == [b"Left"]
    assert list(f["image/object/bbox/xmax"].float_list.value) == [pytest.approx(0.5)]
    from effdetlab.tfrecord import FEATURE_KEYS
    assert sorted(f.keys()) == sorted(FEATURE_KEYS)


def test_pid_alive_tells_a_reused_pid_from_the_recorded_process():
    """A training supervisor is recorded with its pid and start time: after the lab container restarts,
    a new process that got the same pid is not taken for the old training."""
    import subprocess
    import sys
    from effdetlab.stages.runner import pid_alive, proc_start
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = proc_start(child.pid)
        assert start is not None and start.isdigit()
        assert pid_alive(child.pid) and pid_alive(child.pid, start)
        assert not pid_alive(child.pid, str(int(start) - 1)), "same pid, another start time: another process"
        assert proc_start(os.getpid()) != start
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid) and not pid_alive(child.pid, start)
    assert proc_start(child.pid) is None and not pid_alive(None)
