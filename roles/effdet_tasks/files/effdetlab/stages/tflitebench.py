"""Time a .tflite file in TensorFlow Lite's interpreter, the way automl times its modes.

    python -m effdetlab.stages.tflitebench MODEL.tflite --batch N --threads T
        --warmup W --runs R [--delegate default|none] IMAGE [IMAGE ...]

Runs in automl's interpreter (the lab image's TensorFlow). The images are read and
resized to the model's input size before timing (like automl's e2e, which decodes
before its timer), repeated in order until the batch holds N of them. Then W untimed
invocations and R timed ones; only `interpreter.invoke()` is inside the timer.
Prints one line "EFFDETLAB_TFLITE {json}":
  {"ok", "latency_s" (mean per batch, as automl's "Per batch inference time"),
   "run_ms" [each timed run], "images_fed", "distinct_images", "input_shape",
   "input_dtype", "output_shape", "delegate", "threads", "tf_version"}
or {"ok": false, "reason"} (exit 1), e.g. when the file does not process a batch of N.
"""

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Tuple

DELEGATES = ("default", "none")


def delegate_name(kind: str, tf_version: str) -> str:
    """What TFLite's BUILTIN resolver applies by default: XNNPACK for float ops from TF 2.3 on."""
    if kind == "none":
        return "none (BUILTIN_WITHOUT_DEFAULT_DELEGATES: TFLite's own kernels)"
    major_minor = tuple(int(x) for x in tf_version.split(".")[:2] if x.isdigit())
    if major_minor >= (2, 3):
        return f"XNNPACK (TF {tf_version} default delegate)"
    return f"none (TF {tf_version} applies no default delegate)"


def make_interpreter(tf: Any, path: str, threads: int, kind: str) -> Any:
    kwargs: Dict[str, Any] = {"model_path": path}
    if threads > 0:
        kwargs["num_threads"] = threads
    if kind == "none":
        resolver = getattr(getattr(tf.lite, "experimental", None), "OpResolverType", None)
        if resolver is None:
            raise RuntimeError(f"TF {tf.__version__} cannot turn the default delegate off")
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return tf.lite.Interpreter(**kwargs)


def open_model(tf: Any, path: str, threads: int, kind: str, batch: int) -> Tuple[Any, Dict[str, Any], int, int]:
    """The interpreter ready for `batch` images: (interpreter, its input, height, width)."""
    it = make_interpreter(tf, path, threads, kind)
    inp = it.get_input_details()[0]
    _, h, w, _ = (int(x) for x in inp["shape"])
    it.resize_tensor_input(inp["index"], [batch, h, w, 3])
    it.allocate_tensors()
    return it, inp, h, w


def resized_rgb(np: Any, image: Any, h: int, w: int) -> Any:
    """A PIL image as the TFLite files are fed it everywhere (timing, mAP, int8 calibration):
    RGB, bilinear to the model's h x w, uint8."""
    from PIL import Image
    return np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.uint8)


def load_batch(np: Any, files: List[str], batch: int, h: int, w: int, dtype: Any) -> Any:
    from PIL import Image
    imgs = []
    for f in files:
        with Image.open(f) as im:
            imgs.append(resized_rgb(np, im, h, w))
    return np.stack([imgs[i % len(imgs)] for i in range(batch)]).astype(dtype)


def measure(path: str, files: List[str], batch: int, threads: int, warmup: int, runs: int,
            kind: str) -> Dict[str, Any]:
    import numpy as np
    import tensorflow as tf
    it, inp, h, w = open_model(tf, path, threads, kind, batch)
    data = load_batch(np, files, batch, h, w, inp["dtype"])
    it.set_tensor(inp["index"], data)
    out = it.get_output_details()[0]
    for _ in range(max(1, warmup)):
        it.invoke()
    shape = list(it.get_tensor(out["index"]).shape)
    base = {"images_fed": batch, "distinct_images": min(len(files), batch),
            "input_shape": [batch, h, w, 3], "input_dtype": np.dtype(inp["dtype"]).name,
            "output_shape": shape, "delegate": delegate_name(kind, tf.__version__),
            "threads": threads, "tf_version": tf.__version__}
    if not shape or shape[0] != batch:
        return dict(base, ok=False, reason=(
            f"the file answers a batch of {batch} with output shape {shape}: it was exported "
            f"for another batch size and does not process {batch} images per run"))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    return dict(base, ok=True, latency_s=sum(times) / len(times),
                run_ms=[round(1000 * t, 3) for t in times])


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.stages.tflitebench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--delegate", choices=DELEGATES, default="default")
    a = p.parse_args(argv)
    try:
        res = measure(a.model, a.images, a.batch, a.threads, a.warmup, a.runs, a.delegate)
    except (RuntimeError, ValueError, OSError) as e:
        res = {"ok": False, "reason": f"{type(e).__name__}: {e}"}
    print("EFFDETLAB_TFLITE " + json.dumps(res), flush=True)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
