"""effdetlab.stages.verify loads what the export stage wrote and runs it once.

automl 9f1cf16 (the tf2.1-gpu profile's code) writes its saved_model with TF1's
tf.saved_model.Builder and names the signature's input and output by their tensors
("image_arrays:0" -> "detections:0"). TensorFlow 2.1's tf.saved_model.load gives such a
signature function no keyword signature, and the verifier failed with "'NoneType' object
is not subscriptable" (found by the hand run on the stand-in). Here a saved_model of that
shape is written for real and verified both ways.
"""
from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

from effdetlab.stages import verify  # noqa: E402


def write_tf1_saved_model(path: str, h: int, w: int) -> None:
    """A TF1 graph shaped like automl's: uint8 images in, [batch, 2, 7] float detections out."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, h, w, 3], name="image_arrays")
        mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])
        row = tf.stack([mean, mean + 1, mean + 2, mean + 3, mean + 4, mean + 0.5, mean + 1], axis=1)
        detections = tf.identity(tf.stack([row, row], axis=1), name="detections")
        with tf.compat.v1.Session(graph=graph) as sess:
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, tags=["serve"], signature_def_map={
                "serving_default": tf.compat.v1.saved_model.predict_signature_def(
                    {images.name: images}, {detections.name: detections})})
            builder.save()


def test_tensor_named_signature_runs_in_a_v1_session(tmp_path):
    path = str(tmp_path / "sm")
    write_tf1_saved_model(path, 16, 16)
    res = verify.saved_model_v1(path, 16, 16)
    assert res["ok"] is True and res["finite"] is True
    assert res["detections_shape"] == [1, 2, 7]
    assert (res["signature_input"], res["signature_output"]) == ("image_arrays:0", "detections:0")


def test_verify_accepts_automl_2020_saved_models(tmp_path, capsys):
    """The verifier's entry point, as the export stage runs it: ok, whichever loader TF took."""
    path = str(tmp_path / "sm")
    write_tf1_saved_model(path, 16, 16)
    assert verify.main(["saved_model", path, "16", "16"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("EFFDETLAB_VERIFY ")][-1]
    assert '"ok": true' in line and '"detections_shape": [1, 2, 7]' in line, line
    assert verify.main(["saved_model", str(tmp_path / "missing"), "16", "16"]) == 0
    bad = [x for x in capsys.readouterr().out.splitlines() if x.startswith("EFFDETLAB_VERIFY ")][-1]
    assert '"ok": false' in bad and "reason" in bad, bad
