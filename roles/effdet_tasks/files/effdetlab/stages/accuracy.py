"""COCO mAP of .tflite files on the validation set: what a quantized file costs in accuracy.

    python -m effdetlab.stages.accuracy --records PATTERN --gt-json JSON MODEL.tflite [...]
    python -m effdetlab.stages.accuracy --records PATTERN --dump FOLDER [--limit N]

Runs in automl's interpreter (TensorFlow, pycocotools). The validation images come from
the TFRecords the data stage wrote (image/encoded, image/source_id), the ground truth
from its COCO json (automl's --val_json_file, image id == source_id). Every model sees
the same images, resized to its input size as the benchmark's tflite mode feeds them;
its detections ([image_id, ymin, xmin, ymax, xmax, score, class] in input pixels) are
scaled back to the original image and scored with pycocotools' COCOeval (bbox).
Prints one line "EFFDETLAB_ACCURACY {json}":
  {"ok", "images", "models": {path: {"AP", "AP50", "detections"}}}
--dump writes the first N records' images to FOLDER as PNG instead (int8 calibration
images for effdetlab.stages.quantize) and prints {"ok", "files": [...]}.
"""

import argparse
import contextlib
import glob
import io
import json
import os
import sys
from typing import Any, Dict, List, Tuple

from effdetlab.stages.tflitebench import open_model, resized_rgb


def read_validation(pattern: str, limit: int = 0) -> List[Tuple[int, Any]]:
    """(image id, RGB uint8 array) for every record matched by the pattern (the first
    `limit` when limit > 0)."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/source_id": tf.io.FixedLenFeature([], tf.string)}
    out = []
    for path in sorted(glob.glob(pattern)):
        for raw in tf.data.TFRecordDataset(path):
            ex = tf.io.parse_single_example(raw, spec)
            with Image.open(io.BytesIO(ex["image/encoded"].numpy())) as im:
                out.append((int(ex["image/source_id"].numpy()), np.asarray(im.convert("RGB"))))
            if limit and len(out) >= limit:
                return out
    return out


def dump(pattern: str, folder: str, limit: int) -> List[str]:
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    files = []
    for image_id, arr in read_validation(pattern, limit):
        files.append(os.path.join(folder, f"{image_id}.png"))
        Image.fromarray(arr).save(files[-1])
    return files


def detect(path: str, images: List[Tuple[int, Any]]) -> List[Dict[str, Any]]:
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    it, inp, h, w = open_model(tf, path, 2, "default", 1)
    out = it.get_output_details()[0]
    results = []
    for image_id, arr in images:
        oh, ow = arr.shape[:2]
        small = resized_rgb(np, Image.fromarray(arr), h, w)
        it.set_tensor(inp["index"], small[None].astype(inp["dtype"]))
        it.invoke()
        for _i, y0, x0, y1, x1, score, cls in it.get_tensor(out["index"])[0]:
            if score <= 0:
                continue
            sx, sy = ow / w, oh / h
            results.append({"image_id": image_id, "category_id": int(cls), "score": float(score),
                            "bbox": [float(x0 * sx), float(y0 * sy), float((x1 - x0) * sx),
                                     float((y1 - y0) * sy)]})
    return results


def coco_map(gt_json: str, dets: List[Dict[str, Any]]) -> Dict[str, Any]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        if not dets:
            return {"AP": 0.0, "AP50": 0.0, "detections": 0}
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": round(max(0.0, float(ev.stats[0])), 5), "AP50": round(max(0.0, float(ev.stats[1])), 5),
            "detections": len(dets)}


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effdetlab.stages.accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", required=True)
    p.add_argument("--gt-json")
    p.add_argument("--dump", help="write the images to this folder instead")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("models", nargs="*")
    a = p.parse_args(argv)
    if a.dump:
        files = dump(a.records, a.dump, a.limit)
        print("EFFDETLAB_ACCURACY " + json.dumps({"ok": bool(files), "files": files}), flush=True)
        return 0 if files else 1
    if not a.gt_json or not a.models:
        p.error("--gt-json and at least one model are needed (or --dump)")
    images = read_validation(a.records)
    if not images:
        print("EFFDETLAB_ACCURACY " + json.dumps({"ok": False, "reason": f"no records match {a.records}"}))
        return 1
    res = {"ok": True, "images": len(images),
           "models": {m: coco_map(a.gt_json, detect(m, images)) for m in a.models}}
    print("EFFDETLAB_ACCURACY " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
