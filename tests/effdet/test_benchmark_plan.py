"""The benchmark stage's plan and inputs: interleaved repeats, filled batches, refusals,
the TFLite timer on a real .tflite file (the real chain: test_stages.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from test_stages import base_cfg
from effdetlab.stages import benchmark as bench
from effdetlab.stages import config as cfgmod
from effdetlab.stages import tflitebench
from effdetlab.stages.errors import StageInputError


def test_repeats_interleave_every_configuration_alternating_direction():
    pts = [("m", 1, 1, "bm"), ("m", 1, 1, "e2e"), ("m", 4, 1, "bm")]
    plan = bench.schedule(pts, 3)
    assert [r for r, _ in plan] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [p for _, p in plan] == pts + pts[::-1] + pts
    # over an even number of rounds every configuration's mean position is the same: a linear
    # drift hits all alike
    plan = bench.schedule(pts, 4)
    pos = {p: sum(i for i, (_, q) in enumerate(plan) if q == p) for p in pts}
    assert len(set(pos.values())) == 1


def test_points_follow_pairs_and_leave_unexported_models_to_bm(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, benchmark={
        "pairs": [["efficientdet-d0", 1], ["efficientdet-d1", 2]], "threads": [1, 2],
        "modes": ["bm", "e2e", "tflite"]}))
    pts = bench.points(c)
    assert ("efficientdet-d1", 2, 1, "bm") in pts and ("efficientdet-d1", 2, 1, "e2e") not in pts
    assert [p for p in pts if p[0] == "efficientdet-d0"] == [
        ("efficientdet-d0", 1, t, m) for m in ("bm", "e2e", "tflite") for t in (1, 2)]


def test_a_batch_is_filled_with_the_images_repeated_in_order(tmp_path):
    files = [str(tmp_path / n) for n in ("a.jpg", "b.jpg")]
    for f in files:
        open(f, "wb").close()
    out = bench.fill_batch(files, str(tmp_path / "batch"), 5)
    assert [os.path.basename(os.readlink(p)) for p in out] == ["a.jpg", "b.jpg", "a.jpg", "b.jpg", "a.jpg"]
    assert sorted(os.listdir(tmp_path / "batch")) == [os.path.basename(p) for p in out]
    assert len(bench.fill_batch(files, str(tmp_path / "batch"), 1)) == len(os.listdir(tmp_path / "batch")) == 1


def _images(tmp_path, n):
    d = tmp_path / "imgs"
    d.mkdir(exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 48), (i * 40, 0, 0)).save(d / f"{i}.jpg")
    return str(d)


def _saved_model(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"")
    return str(sm)


def test_no_filling_refuses_a_batch_larger_than_the_images_and_says_the_numbers(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, benchmark={
        "batch_sizes": [1, 8], "modes": ["bm", "e2e"], "fill": False, "images": _images(tmp_path, 2),
        "saved_models": {"efficientdet-d0": _saved_model(tmp_path)}}))
    with pytest.raises(StageInputError, match=r"batch 8: 2 image\(s\) in .* benchmark.fill is false: "
                                              r"give at least 8 images"):
        bench._check(c)
    c.benchmark.fill = True
    assert len(bench._check(c)) == 2


@pytest.mark.parametrize("bad, needle", [
    ({"repeats": 0}, "benchmark.repeats=0: must be >= 1"),
    ({"fill": "yes"}, "benchmark.fill='yes': expected true or false"),
    ({"pairs": [["efficientdet-d0", 0]]}, r"pairs entry \['efficientdet-d0', 0\]"),
    ({"pairs": [["efficientdet-d9", 1]]}, "efficientdet-d9"),
    ({"modes": ["tflite-fp16"]}, "tflite-int8, tflite-drq"),
])
def test_bad_benchmark_values_are_refused(tmp_path, bad, needle):
    with pytest.raises(StageInputError, match=needle):
        cfgmod.from_dict(base_cfg(tmp_path, benchmark=bad))


def test_quantize_kinds_are_checked(tmp_path):
    assert cfgmod.from_dict(base_cfg(tmp_path, quantize=["int8", "drq", "int8"])).quantize == ["drq", "int8"]
    with pytest.raises(StageInputError, match=r"quantize=\['fp16'\]: a list of int8, drq"):
        cfgmod.from_dict(base_cfg(tmp_path, quantize=["fp16"]))


def test_the_delegate_is_named_for_the_tensorflow_that_runs_it():
    assert tflitebench.delegate_name("default", "2.15.1") == "XNNPACK (TF 2.15.1 default delegate)"
    assert tflitebench.delegate_name("default", "2.1.0").startswith("none (TF 2.1.0 applies no default")
    assert tflitebench.delegate_name("none", "2.15.1").startswith("none (BUILTIN_WITHOUT_DEFAULT")


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A real .tflite whose batch is free (a conv over [None, 32, 32, 3] uint8 images)."""
    import tensorflow as tf
    x = tf.keras.Input((32, 32, 3), dtype=tf.uint8)
    y = tf.keras.layers.Conv2D(4, 3)(tf.cast(x, tf.float32))
    conv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(x, y))
    path = tmp_path_factory.mktemp("tfl") / "tiny.tflite"
    path.write_bytes(conv.convert())
    return str(path)


def test_tflite_timer_feeds_a_full_batch_and_times_each_run(tmp_path, tiny_tflite, capsys):
    folder = _images(tmp_path, 2)
    imgs = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    assert tflitebench.main([tiny_tflite, *imgs, "--batch", "3", "--threads", "1", "--runs", "4"]) == 0
    res = json.loads(capsys.readouterr().out.split(" ", 1)[1])
    assert res["ok"] and res["images_fed"] == 3 and res["distinct_images"] == 2
    assert res["input_shape"] == [3, 32, 32, 3] and res["output_shape"] == [3, 30, 30, 4]
    assert len(res["run_ms"]) == 4 and res["latency_s"] == pytest.approx(sum(res["run_ms"]) / 4000, abs=1e-6)
    assert res["delegate"].startswith("XNNPACK")
    batch = tflitebench.load_batch(np, imgs, 3, 32, 32, np.uint8)
    assert (batch[0] == batch[2]).all() and not (batch[0] == batch[1]).all()


def test_tflite_timer_refuses_a_file_that_does_not_process_the_batch(tmp_path, capsys):
    """automl's export loops over the batch size it was exported for: a batch-1 file answers one
    row whatever it is fed. Such a file must not be timed as batch N."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.uint8)])
    def first_only(x):
        return tf.cast(x[:1], tf.float32) * 2.0

    conv = tf.lite.TFLiteConverter.from_concrete_functions([first_only.get_concrete_function()], first_only)
    path = tmp_path / "b1.tflite"
    path.write_bytes(conv.convert())
    img = tmp_path / "i.png"
    Image.new("RGB", (16, 16)).save(img)
    assert tflitebench.main([str(path), str(img), "--batch", "4"]) == 1
    res = json.loads(capsys.readouterr().out.split(" ", 1)[1])
    assert not res["ok"] and "does not process 4 images per run" in res["reason"]

