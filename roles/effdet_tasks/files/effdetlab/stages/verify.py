"""Load what export wrote and run it once, in automl's interpreter (it has TensorFlow).

    python -m effdetlab.stages.verify saved_model DIR HEIGHT WIDTH [BATCH]
    python -m effdetlab.stages.verify tflite FILE HEIGHT WIDTH [BATCH]

Feeds BATCH (default 1) blank images: automl's export loops over a fixed batch size, so a
model exported for batch N must answer N detections rows for N images.
Prints one JSON object: {"ok": bool, "detections_shape": [...], "reason": ...}.
"""

import json
import os
import sys
from typing import Any, Dict


def saved_model(path: str, h: int, w: int, n: int = 1) -> Dict[str, Any]:
    import numpy as np
    import tensorflow as tf
    m = tf.saved_model.load(path)
    fn = m.signatures["serving_default"]
    if fn.structured_input_signature is None:
        return saved_model_v1(path, h, w, n)
    (key,) = fn.structured_input_signature[1].keys()
    out = fn(**{key: tf.constant(np.zeros((n, h, w, 3), np.uint8))})
    (det,) = out.values()
    det = det.numpy()
    return {"ok": det.ndim == 3 and det.shape[0] == n and det.shape[2] == 7,
            "signature_input": key, "signature_output": list(out)[0],
            "detections_shape": list(det.shape), "finite": bool(np.isfinite(det).all())}


def saved_model_v1(path: str, h: int, w: int, n: int = 1) -> Dict[str, Any]:
    """A signature whose input is named by its tensor ("image_arrays:0": automl 9f1cf16's
    tf.saved_model.Builder): TensorFlow 2.1's loader gives its function no keyword signature,
    so it runs in a TF1 session, as automl's own saved_model_inference does."""
    import numpy as np
    import tensorflow as tf
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        ((key, tin),) = sig.inputs.items()
        ((out_key, tout),) = sig.outputs.items()
        det = sess.run(tout.name, {tin.name: np.zeros((n, h, w, 3), np.uint8)})
    return {"ok": det.ndim == 3 and det.shape[0] == n and det.shape[2] == 7,
            "signature_input": key, "signature_output": out_key, "loaded_with": "tf.compat.v1 session",
            "detections_shape": list(det.shape), "finite": bool(np.isfinite(det).all())}


def tflite(path: str, h: int, w: int, n: int = 1) -> Dict[str, Any]:
    import numpy as np
    import tensorflow as tf
    it = tf.lite.Interpreter(model_path=path)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [n, h, w, 3])
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.zeros((n, h, w, 3), inp["dtype"]))
    it.invoke()
    outs = it.get_output_details()
    det = it.get_tensor(outs[0]["index"])
    return {"ok": det.ndim == 3 and det.shape[0] == n and det.shape[-1] == 7, "bytes": os.path.getsize(path),
            "input_dtype": np.dtype(inp["dtype"]).name, "detections_shape": list(det.shape),
            "finite": bool(np.isfinite(det).all())}


def main(argv: Any = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kind, path, h, w = argv[0], argv[1], int(argv[2]), int(argv[3])
    n = int(argv[4]) if len(argv) > 4 else 1
    try:
        res = (saved_model if kind == "saved_model" else tflite)(path, h, w, n)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        res = {"ok": False, "reason": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"}
    print("EFFDETLAB_VERIFY " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
