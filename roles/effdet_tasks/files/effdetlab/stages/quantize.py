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
        (TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS), the input and output stay as they are
Prints one line "EFFDETLAB_QUANTIZE {json}": {"ok", "path", "bytes", "kind", "tf_version"}
or {"ok": false, "reason"} (exit 1).
"""

import argparse
import json
import os
import sys
from typing import Any, Iterator, List

from effdetlab.stages.tflitebench import resized_rgb

KINDS = {"drq": "dynamic-range (int8 weights, float activations)",
         "int8": "integer (int8 weights and activations, calibrated)"}


def calibration_batches(files: List[str], h: int, w: int) -> Iterator[List[Any]]:
    import numpy as np
    from PIL import Image
    for f in files:
        with Image.open(f) as im:
            arr = resized_rgb(np, im, h, w)
        yield [arr[None]]


def convert(saved_model: str, kind: str, h: int, w: int, calibration: List[str]) -> bytes:
    import tensorflow as tf
    conv = tf.compat.v1.lite.TFLiteConverter.from_saved_model(
        saved_model, input_arrays=["image_arrays"], input_shapes={"image_arrays": [None, h, w, 3]},
        output_arrays=["detections"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "int8":
        if not calibration:
            raise ValueError("int8 quantization needs calibration images")
        conv.representative_dataset = lambda: calibration_batches(calibration, h, w)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert()


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
        data = convert(a.saved_model, a.kind, a.height, a.width, a.calibration)
        with open(a.out, "wb") as f:
            f.write(data)
        res = {"ok": True, "path": a.out, "bytes": os.path.getsize(a.out), "kind": a.kind,
               "quantization": KINDS[a.kind], "tf_version": tf.__version__}
    except Exception as e:  # the converter raises many types; the reason is what matters
        lines = [x for x in str(e).splitlines() if x.strip()]
        res = {"ok": False, "kind": a.kind,
               "reason": f"{type(e).__name__}: {lines[-1] if lines else ''}"[:400]}
    print("EFFDETLAB_QUANTIZE " + json.dumps(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
