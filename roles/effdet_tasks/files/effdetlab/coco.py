"""COCO-style ground-truth json for automl's `--val_json_file`.

automl's evaluator (coco_metric.EvaluationMetric) loads this with pycocotools and
matches detections to it by image id == int(image/source_id) of the TFRecords,
with boxes in absolute pixels of the original image.  We write exactly the boxes
that went into the TFRecords (after clipping/fixing), as floats.
"""

import json
from typing import Any, Dict, List, Sequence, Tuple

from effdetlab.labelmap import LabelMap


class CocoBuilder:
    def __init__(self, label_map: LabelMap) -> None:
        self.images: List[Dict[str, Any]] = []
        self.annotations: List[Dict[str, Any]] = []
        self.categories = [{"supercategory": "none", "id": cid, "name": name}
                           for name, cid in sorted(label_map.items(), key=lambda kv: kv[1])]

    def add_image(self, image_id: int, file_name: str, width: int, height: int,
                  objects: Sequence[Tuple[int, Tuple[float, float, float, float]]]) -> None:
        self.images.append({"id": image_id, "file_name": file_name,
                            "width": width, "height": height})
        for label, (x0, y0, x1, y1) in objects:
            w, h = x1 - x0, y1 - y0
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": label,
                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0, "ignore": 0,
                "segmentation": [],
            })

    def as_dict(self) -> Dict[str, Any]:
        return {"type": "instances", "images": self.images,
                "annotations": self.annotations, "categories": self.categories}

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.as_dict(), ensure_ascii=False))  # dumps: C encoder
