"""End-to-end conversion of a messy labelImg tree: records, report, COCO json, errors."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from conftest import parse_with_automl_decoder_spec, read_records, run_cli
from effdetlab import CorruptXMLError, DatasetNotFoundError, NumClassesMismatchError
from effdetlab import convert as conv
from effdetlab.convert import Options, convert
from effdetlab.errors import ConversionError

# With label map [cat, dog] (classes.txt) and --box-policy clip:
EXPECTED_CLIP = {
    "xml_files": 14, "images_written": 11, "images_skipped": 3,
    "objects_in": 16, "objects_written": 10, "objects_dropped": 6,
    "objects_clipped": 1, "objects_inverted_fixed": 1,
    "difficult_in": 1, "difficult_written": 1, "truncated_in": 1, "truncated_written": 1,
    "empty_annotations": 1, "images_written_without_objects": 2,  # empty.xml, outside.xml
}
SKIPPED = {"corrupt_xml": 1, "missing_image": 1, "unsupported_format": 1}
DROPPED_CLIP = {"degenerate": 1, "image_missing_image": 2, "image_unsupported_format": 1,
                "invalid_box": 1, "unknown_class": 1}


@pytest.fixture(scope="module")
def clip_out(messy_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("out_clip"))
    convert(Options(messy_dir, out, label_map_from="file",
                    label_map_path=os.path.join(messy_dir, "classes.txt"), box_policy="clip"))
    return out


def _report(out: str) -> dict:
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def test_outputs_exist(clip_out: str) -> None:
    names = sorted(os.listdir(clip_out))
    assert names == ["label_map.json", "label_map.yaml", "report.json", "report.md",
                     "train-00000-of-00001.tfrecord", "train_annotations.json"]
    with open(os.path.join(clip_out, "label_map.yaml"), encoding="utf-8") as f:
        assert [line for line in f.read().splitlines() if not line.startswith("#")] == ['1: "cat"', '2: "dog"']


def test_label_map_yaml_loads_in_automl(clip_out: str) -> None:
    from tensorflow_examples.lite.model_maker.third_party.efficientdet.keras import label_util
    assert label_util.get_label_map(os.path.join(clip_out, "label_map.yaml")) == {1: "cat", 2: "dog"}


def test_totals_reconcile(clip_out: str) -> None:
    rep = _report(clip_out)
    assert rep["reconciliation"]["ok"], rep["reconciliation"]
    for k, v in EXPECTED_CLIP.items():
        assert rep["totals"][k] == v, (k, rep["totals"][k], v)
    assert rep["images_skipped"] == SKIPPED
    assert rep["objects_dropped"] == DROPPED_CLIP
    assert rep["objects_modified"] == {"clipped": 1, "inverted_fixed": 1}
    assert rep["unknown_classes"] == {"zebra": 1}
    assert rep["class_counts"] == {"cat": 5, "dog": 5}
    assert rep["warnings"] == {"size_mismatch": 1}
    assert rep["images_without_annotation"] == ["corrupt.jpg", "orphan.jpg"]
    t = rep["totals"]
    assert t["objects_in"] == t["objects_written"] + sum(rep["objects_dropped"].values())
    assert t["xml_files"] == t["images_written"] + sum(rep["images_skipped"].values())


def test_report_issues_name_files_and_reasons(clip_out: str) -> None:
    issues = _report(clip_out)["issues"]
    by_kind = {}
    for i in issues:
        by_kind.setdefault(i["kind"], []).append(i)
    assert [i["xml"] for i in by_kind["corrupt_xml"]] == ["corrupt.xml"]
    assert "line" in by_kind["corrupt_xml"][0]["detail"]  # parser position is reported
    miss = by_kind["missing_image"][0]
    assert miss["xml"] == "missing.xml" and "ghost.jpg" in miss["detail"] and "C:\\ghost.jpg" in miss["detail"]
    assert by_kind["unknown_class"][0]["cls"] == "zebra"
    assert by_kind["invalid_box"][0]["xml"] == "badnum.xml"
    assert by_kind["degenerate"][0]["xml"] == "outside.xml"
    assert by_kind["clipped"][0]["xml"] == "猫の写真.xml"
    assert by_kind["inverted_fixed"][0]["xml"] == "inverted.xml"
    assert by_kind["unsupported_format"][0]["image"] == "bitmap.bmp"
    assert by_kind["empty_annotation"][0]["xml"] == "empty.xml"
    assert "0x0" in by_kind["size_mismatch"][0]["detail"]
    md = open(os.path.join(clip_out, "report.md"), encoding="utf-8").read()
    assert "reconciliation: **OK**" in md and "corrupt.xml" in md and "`zebra`: 1" in md


def test_records_decode_and_match_sources(clip_out: str, messy_dir: str) -> None:
    recs = read_records(os.path.join(clip_out, "train-*.tfrecord"))
    assert len(recs) == 11
    by_name = {r["image/filename"][0].decode(): r for r in recs}
    assert set(by_name) == {"IMG_0001.JPG", "photo 2.png", "猫の写真.jpeg", "inv.jpg", "unk.jpg",
                            "empty.jpg", "outside.jpg", "badnum.jpg", "sizelies.jpg",
                            __import__("unicodedata").normalize("NFD", "café.jpg"), "sample.png"}
    for name, r in by_name.items():
        assert r["image/key/sha256"][0].decode() == hashlib.sha256(r["image/encoded"][0]).hexdigest()
        assert (r["image/height"], r["image/width"]) == ([375], [500])
        n = len(r["image/object/class/label"])
        for k in ("image/object/bbox/xmin", "image/object/bbox/ymax", "image/object/area",
                  "image/object/class/text", "image/object/difficult", "image/object/truncated",
                  "image/object/view"):
            assert len(r[k]) == n, (name, k)
        for x in r["image/object/bbox/xmin"] + r["image/object/bbox/ymax"]:
            assert 0.0 <= x <= 1.0
    assert by_name["photo 2.png"]["image/format"] == [b"png"]
    assert by_name["sample.png"]["image/format"] == [b"png"]
    assert by_name["IMG_0001.JPG"]["image/format"] == [b"jpeg"]
    assert by_name["IMG_0001.JPG"]["image/object/difficult"] == [0, 1]
    assert by_name["photo 2.png"]["image/object/truncated"] == [1]
    clipped = by_name["猫の写真.jpeg"]
    assert clipped["image/object/bbox/xmax"] == [pytest.approx(1.0)]
    assert clipped["image/object/bbox/ymax"] == [pytest.approx(1.0)]
    assert clipped["image/object/bbox/xmin"] == [pytest.approx(400 / 500)]
    inv = by_name["inv.jpg"]
    assert (inv["image/object/bbox/xmin"], inv["image/object/bbox/xmax"]) == (
        [pytest.approx(0.2)], [pytest.approx(0.4)])
    assert by_name["unk.jpg"]["image/object/class/text"] == [b"cat"]
    assert by_name["unk.jpg"]["image/object/class/label"] == [1]
    assert by_name["empty.jpg"]["image/object/class/label"] == []
    # the encoded bytes are the file on disk, untouched
    with open(os.path.join(messy_dir, "JPEGImages", "IMG_0001.JPG"), "rb") as f:
        assert by_name["IMG_0001.JPG"]["image/encoded"][0] == f.read()
    # id = 1-based position in the (sorted) input; the image skipped inside a worker
    # (bitmap.bmp, position 2) leaves a gap.  Ids are unique and are the COCO json's ids.
    ids = sorted(int(r["image/source_id"][0]) for r in recs)
    assert len(set(ids)) == 11 and 2 not in ids


def test_records_parse_with_automl_decoder_spec(clip_out: str) -> None:
    parsed = parse_with_automl_decoder_spec(os.path.join(clip_out, "train-*.tfrecord"))
    assert len(parsed) == 11
    for p in parsed:
        assert p["shape"] == (375, 500, 3) and (p["height"], p["width"]) == (375, 500)
        assert all(label in (1, 2) for label in p["labels"])


def test_coco_json_matches_records(clip_out: str) -> None:
    with open(os.path.join(clip_out, "train_annotations.json"), encoding="utf-8") as f:
        coco = json.load(f)
    assert coco["categories"] == [{"supercategory": "none", "id": 1, "name": "cat"},
                                  {"supercategory": "none", "id": 2, "name": "dog"}]
    recs = read_records(os.path.join(clip_out, "train-*.tfrecord"))
    assert len(coco["images"]) == len(recs) == 11
    assert len(coco["annotations"]) == EXPECTED_CLIP["objects_written"]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    img_by_id = {i["id"]: i for i in coco["images"]}
    for r in recs:
        iid = int(r["image/source_id"][0])
        img = img_by_id[iid]
        assert img["file_name"] == r["image/filename"][0].decode()
        anns = [a for a in coco["annotations"] if a["image_id"] == iid]
        assert [a["category_id"] for a in anns] == r["image/object/class/label"]
        for a, x0, y0, x1, y1 in zip(anns, r["image/object/bbox/xmin"], r["image/object/bbox/ymin"],
                                     r["image/object/bbox/xmax"], r["image/object/bbox/ymax"]):
            bx, by, bw, bh = a["bbox"]
            assert bx == pytest.approx(x0 * img["width"], abs=1e-3)
            assert by == pytest.approx(y0 * img["height"], abs=1e-3)
            assert bx + bw == pytest.approx(x1 * img["width"], abs=1e-3)
            assert by + bh == pytest.approx(y1 * img["height"], abs=1e-3)
            assert a["area"] == pytest.approx(bw * bh)
    from pycocotools.coco import COCO  # loads as automl's evaluator does
    c = COCO(os.path.join(clip_out, "train_annotations.json"))
    assert len(c.getImgIds()) == 11 and len(c.getAnnIds()) == 10


def test_drop_policy(messy_dir: str, tmp_path) -> None:
    rep = convert(Options(messy_dir, str(tmp_path), label_map_path=os.path.join(messy_dir, "classes.txt"),
                          label_map_from="file", box_policy="drop")).as_dict()
    assert rep["reconciliation"]["ok"]
    assert rep["totals"]["objects_written"] == 8
    assert rep["objects_dropped"] == {"image_missing_image": 2, "image_unsupported_format": 1, "invalid_box": 1,
                 "unknown_class": 1, "inverted": 1, "out_of_bounds": 2}
    assert rep["objects_modified"] == {}


def test_label_map_from_data_and_options(messy_dir: str, tmp_path) -> None:
    rep = convert(Options(messy_dir, str(tmp_path), ignore_difficult=True, skip_empty=True,
                          num_shards=3)).as_dict()
    assert rep["label_map"] == {"cat": 1, "dog": 2, "zebra": 3}  # sorted names from the data
    assert rep["unknown_classes"] == {}
    assert rep["objects_dropped"]["difficult_ignored"] == 1
    assert rep["images_skipped"]["empty_skipped"] == 2  # empty.xml and outside.xml (nothing left)
    assert rep["reconciliation"]["ok"]
    assert sum(s["records"] for s in rep["shards"]) == 9 and len(rep["shards"]) == 3
    assert len(read_records(os.path.join(str(tmp_path), "train-*-of-00003.tfrecord"))) == 9


def test_pool_and_inline_give_identical_files(messy_dir: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(conv, "MIN_IMAGES_FOR_POOL", 1)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ra = convert(Options(messy_dir, a, workers=1, num_shards=2))
    rb = convert(Options(messy_dir, b, workers=2, num_shards=2))
    assert ra.options["workers"] == 1 and rb.options["workers"] == 2
    for name in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                 "train_annotations.json", "label_map.yaml"):
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), name


# ----------------------------------------------------------------------------- errors

def test_missing_dataset_folder(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="dataset folder not found: .*nope"):
        convert(Options(str(tmp_path / "nope"), str(tmp_path / "out")))
    r = run_cli("-m", "effdetlab.convert", "--data-dir", str(tmp_path / "nope"), "--output-dir",
                str(tmp_path / "out"))
    assert r.returncode == 2 and "error: dataset folder not found" in r.stderr and "Traceback" not in r.stderr


def test_no_xml_files(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no annotation XML files"):
        convert(Options(str(tmp_path / "d"), str(tmp_path / "out")))


def test_corrupt_xml_strict_names_the_file(messy_dir: str, tmp_path) -> None:
    with pytest.raises(CorruptXMLError, match=r"corrupt\.xml.*line 1"):
        convert(Options(messy_dir, str(tmp_path), strict=True))
    r = run_cli("-m", "effdetlab.convert", "--data-dir", messy_dir, "--output-dir", str(tmp_path / "o"),
                "--strict")
    assert r.returncode == 2 and "corrupt annotation XML" in r.stderr and "corrupt.xml" in r.stderr


def test_num_classes_check(messy_dir: str, tmp_path) -> None:
    from effdetlab.labelmap import check_num_classes
    check_num_classes({"cat": 1, "dog": 2}, 2)
    with pytest.raises(NumClassesMismatchError, match="--num-classes=3 does not match.*ids up to 2"):
        check_num_classes({"cat": 1, "dog": 2}, 3)
    with pytest.raises(NumClassesMismatchError, match="out of range"):
        check_num_classes({"cat": 1, "dog": 2}, 1)
    # from the data (cat, dog, zebra): checked before anything is written
    with pytest.raises(NumClassesMismatchError, match="3 classes"):
        convert(Options(messy_dir, str(tmp_path / "x"), num_classes=2))
    assert not os.path.exists(tmp_path / "x" / "report.json")
    r = run_cli("-m", "effdetlab.convert", "--data-dir", messy_dir, "--output-dir", str(tmp_path / "y"),
                "--label-map", os.path.join(messy_dir, "classes.txt"), "--num-classes", "20")
    assert r.returncode == 2 and "--num-classes=20 does not match the label map" in r.stderr
    r = run_cli("-m", "effdetlab.convert", "--data-dir", messy_dir, "--output-dir", str(tmp_path / "z"),
                "--label-map", os.path.join(messy_dir, "classes.txt"), "--num-classes", "2")
    assert r.returncode == 0, r.stderr
    assert "11/14 images, 10/16 objects" in r.stdout
    assert "corrupt annotation XML skipped" in r.stderr  # default policy: reported, named on stderr


def test_bad_label_map_and_existing_output(messy_dir: str, tmp_path) -> None:
    bad = tmp_path / "lm.json"
    bad.write_text('{"cat": 1, "dog": 1}')
    from effdetlab import LabelMapError
    with pytest.raises(LabelMapError, match="duplicate ids"):
        convert(Options(messy_dir, str(tmp_path / "o"), label_map_from="file", label_map_path=str(bad)))
    out = str(tmp_path / "o2")
    convert(Options(messy_dir, out))
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(Options(messy_dir, out, num_shards=2))
    convert(Options(messy_dir, out, num_shards=2, overwrite=True))
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


def test_missing_split_file(messy_dir: str, tmp_path) -> None:
    d = str(tmp_path / "d")
    shutil.copytree(messy_dir, d)
    os.makedirs(os.path.join(d, "ImageSets", "Main"))
    with open(os.path.join(d, "ImageSets", "Main", "train.txt"), "w") as f:
        f.write("win\ncafe\nnot_there\n")
    with pytest.raises(DatasetNotFoundError, match="no val.txt .*found: train"):
        convert(Options(d, str(tmp_path / "o"), set_name="val"))
    rep = convert(Options(d, str(tmp_path / "o"), set_name="train")).as_dict()
    assert rep["totals"]["xml_files"] == 2 and rep["split_ids_without_xml"] == ["not_there"]
    assert os.path.exists(tmp_path / "o" / "train_annotations.json")
