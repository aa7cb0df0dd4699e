"""On a clean dataset, our records decode to the same examples as automl's create_pascal_tfrecord.

automl's script runs from the copy vendored in the tflite-model-maker wheel (a dependency,
not copied here), as a subprocess, exactly as a user would run it.
"""
from __future__ import annotations

import json
import os

import pytest

from conftest import read_records, run_cli
from effdetlab.synth import automl_label_map_json, make_clean_voc
from effdetlab.tfrecord import FEATURE_KEYS

AUTOML = "tensorflow_examples.lite.model_maker.third_party.efficientdet.dataset.create_pascal_tfrecord"
CLASSES = ["person", "car", "bicycle"]  # deliberately not sorted: the label map must be honoured


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):
    root = str(tmp_path_factory.mktemp("clean"))
    voc = make_clean_voc(os.path.join(root, "data"), 40, CLASSES, seed=7)
    lm = os.path.join(root, "label_map.json")
    automl_label_map_json(lm, CLASSES)
    r = run_cli("-m", AUTOML, f"--data_dir={os.path.join(root, 'data')}", "--year=VOC2007", "--set=train",
                f"--output_path={os.path.join(root, 'automl', 'pascal')}", f"--label_map_json_path={lm}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("-m", "effdetlab.convert", "--data-dir", voc, "--output-dir", os.path.join(root, "ours"),
                "--set", "train", "--label-map", lm, "--num-classes", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_same_examples(both: str) -> None:
    ours = read_records(os.path.join(both, "ours", "train-*-of-*.tfrecord"))
    theirs = read_records(os.path.join(both, "automl", "pascal-*-of-00100.tfrecord"))
    assert len(ours) == len(theirs) == 40
    o = {r["image/filename"][0]: r for r in ours}
    t = {r["image/filename"][0]: r for r in theirs}
    assert o.keys() == t.keys()
    n_objects = 0
    for name in sorted(t):
        assert sorted(o[name]) == sorted(t[name]) == sorted(FEATURE_KEYS), name
        for key in FEATURE_KEYS:  # every feature, exactly (floats are the same float32 values)
            assert o[name][key] == t[name][key], (name, key, o[name][key], t[name][key])
        n_objects += len(t[name]["image/object/class/label"])
    assert n_objects >= 40


def test_same_coco_ground_truth(both: str) -> None:
    with open(os.path.join(both, "automl", "json_pascal.json")) as f:
        theirs = json.load(f)
    with open(os.path.join(both, "ours", "train_annotations.json")) as f:
        ours = json.load(f)
    # automl also lists 'background' (id 0) as a category; nothing is ever labelled with it
    assert [c for c in theirs["categories"] if c["id"] != 0] == ours["categories"]
    assert sorted(theirs["images"], key=lambda i: i["id"]) == sorted(ours["images"], key=lambda i: i["id"])

    def key(a):
        return a["image_id"], a["id"]
    ta, oa = sorted(theirs["annotations"], key=key), sorted(ours["annotations"], key=key)
    assert len(ta) == len(oa)
    for a, b in zip(ta, oa):
        for k in ("id", "image_id", "category_id", "iscrowd", "bbox", "area"):
            assert a[k] == b[k], (k, a, b)  # integer pixel boxes compare equal as floats
