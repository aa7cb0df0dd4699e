"""Convert an exported saved_model into a quantized .tflite, the way automl converts the float one.

    python -m effdetlab.stages.quantize SAVED_MODEL OUT.tflite --kind drq|int8
        --height H --width W [--calibration IMAGE ...]

Runs in automl's interpreter. The converter is set up as automl's own TFLite export does
it (tf.compat.v1's from_saved_model, input `image_arrays` [None, H, W, 3], output
`detections`, TFLite builtin ops only), plus:
  drq   dynamic-range quantization: weights stored as int8, activations stay float
        (Optimize.DEFAULT, no calibration data)
  int8  integer quantization of the network: weights and activations int8, calibrated on
        the given images (resized to H x W); ops without an int8 kernel stay float
        (TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS), the input and output stay as they are.
        Converted from the frozen serving graph with every division by a constant made a
        multiplication by its reciprocal first (fold_constant_divisions): TFLite has no
        int8 division, and automl's BiFPN divides by its fusion weights 62 times in D0
Prints one line "EFFDETLAB_QUANTIZE {json}": {"ok", "path", "bytes", "kind", "tf_version"}
or {"ok": false, "reason"} (exit 1).
"""

import argparse
import json
import os
import sys
from typing import Any, Iterator, List, Tuple

KINDS = {"drq": "dynamic-range (int8 weights, float activations)",
         "int8": "integer (int8 weights and activations, calibrated)"}


def calibration_batches(files: List[str], h: int, w: int) -> Iterator[List[Any]]:
    import numpy as np
    from PIL import Image
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), np.uint8)
        yield [arr[None]]


def _name(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def fold_constant_divisions(graph_def: Any) -> Tuple[Any, int]:
    """A copy of a frozen GraphDef where every RealDiv of data by a constant (a value that
    depends on no Placeholder) is a Mul by the constant's reciprocal, computed here; and
    how many there were. automl's BiFPN divides each weighted input by the sum of its
    fusion weights: TFLite has no int8 division, so without this the int8 graph keeps a
    float island (dequantize, divide, quantize) at each of them."""
    import numpy as np
    import tensorflow as tf
    data = {n.name: n.op == "Placeholder" for n in graph_def.node}
    grew = True
    while grew:  # what depends on an input, to a fixed point (no recursion over a deep graph)
        grew = False
        for n in graph_def.node:
            if not data[n.name] and any(data.get(_name(i), False) for i in n.input):
                data[n.name] = grew = True
    divs = [n.name for n in graph_def.node if n.op == "RealDiv"
            and data[_name(n.input[0])] and not data[_name(n.input[1])]]
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    if not divs:
        return out, 0
    nodes = {n.name: n for n in out.node}
    dens = [nodes[d].input[1] for d in divs]
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=g) as sess:
        values = sess.run([x if ":" in x else x + ":0" for x in dens])
    for d, v in zip(divs, values):
        div = nodes[d]
        c = out.node.add()
        c.name, c.op = d + "/effdetlab_reciprocal", "Const"
        c.attr["dtype"].type = div.attr["T"].type
        c.attr["value"].tensor.CopyFrom(tf.compat.v1.make_tensor_proto(
            np.asarray(1.0 / np.asarray(v), dtype=tf.as_dtype(div.attr["T"].type).as_numpy_dtype)))
        div.op = "Mul"
        div.input[1] = c.name
    return out, len(divs)


def frozen_graph(saved_model: str) -> Any:
    """The saved_model's serving graph with its variables as constants, up to `detections`."""
    import tensorflow as tf
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], saved_model)
        return tf.compat.v1.graph_util.convert_variables_to_constants(
            sess, sess.graph.as_graph_def(), ["detections"])


def convert(saved_model: str, kind: str, h: int, w: int, calibration: List[str],
            work_dir: str) -> Tuple[bytes, int]:
    """The .tflite bytes, and how many divisions by a constant were folded (int8)."""
    import tensorflow as tf
    folded = 0
    shapes = {"image_arrays": [None, h, w, 3]}
    if kind == "int8":
        graph, folded = fold_constant_divisions(frozen_graph(saved_model))
        pb = os.path.join(work_dir, ".frozen-folded.pb")
        with open(pb, "wb") as f:
            f.write(graph.SerializeToString())
        try:
            conv = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                pb, input_arrays=["image_arrays"], output_arrays=["detections"], input_shapes=shapes)
        finally:
            os.remove(pb)  # read into the converter already
    else:
        conv = tf.compat.v1.lite.TFLiteConverter.from_saved_model(
            saved_model, input_arrays=["image_arrays"], input_shapes=shapes, output_arrays=["detections"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "int8":
        if not calibration:
            raise ValueError("int8 quantization needs calibration images")
        conv.representative_dataset = lambda: calibration_batches(calibration, h, w)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert(), folded


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.stages.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("saved_model")
    p.add_argument("out")
    p.add_argument("--kind", choices=sorted(KINDS), required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--calibration", nargs="*", default=[])
    a = p.parse_args(argv)
    try:
        import tensorflow as tf
        data, folded = convert(a.saved_model, a.kind, a.height, a.width, a.calibration,
                               os.path.dirname(os.path.abspath(a.out)))
        with open(a.out, "wb") as f:
            f.write(data)
        res = {"ok": True, "path": a.out, "bytes": os.path.getsize(a.out), "kind": a.kind,
               "quantization": KINDS[a.kind], "divisions_folded": folded, "tf_version": tf.__version__}
    except Exception as e:  # the converter raises many types; the reason is what matters
        lines = [x for x in str(e).splitlines() if x.strip()]
        res = {"ok": False, "kind": a.kind,
               "reason": f"{type(e).__name__}: {lines[-1] if lines else ''}"[:400]}
    print("EFFDETLAB_QUANTIZE " + json.dumps(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
