"""The lab-in-a-box's own VOC dataset, labelled the way labelImg leaves it.

A small labelImg-style tree whose <folder>/<path> fields never match where the
files are (Windows paths, other machines' paths, upper-case and PNG
extensions, names with spaces and CJK characters), split into train and val
by ImageSets/Main/<set>.txt, plus a folder of "own images" for inference.
It is the demo's data and the effdet tests' data; effdetlab.convert must find
every image by file name.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from effdetlab.synth import SynthObject, random_objects, write_image, write_voc_xml

from .shell import STATE_DIR, log

CLASSES = ("cat", "dog", "person")
SIZE = (320, 240)


def _stem_and_ext(i: int) -> tuple[str, str, str, str]:
    """(stem, extension on disk, folder field, path field) for image i: messy on purpose."""
    kinds = [
        (f"img_{i:04d}", ".jpg", "JPEGImages", f"C:\\Users\\student\\Desktop\\VOC\\img_{i:04d}.jpg"),
        (f"IMG {i:04d}", ".JPG", "photos", f"/home/alice/labelImg/photos/IMG {i:04d}.JPG"),
        (f"实验图片_{i:04d}", ".png", "数据", f"D:\\标注\\实验图片_{i:04d}.png"),
        (f"frame-{i:04d}", ".jpeg", "/mnt/nas/old-project", f"/mnt/nas/old-project/frame-{i:04d}.jpeg"),
    ]
    return kinds[i % len(kinds)]


def make_demo_dataset(root: Path, train: int = 16, val: int = 4, infer: int = 2, seed: int = 7) -> Path:
    """Write root/voc (Annotations, JPEGImages, ImageSets/Main) and root/infer; idempotent."""
    marker = root / "dataset.json"
    spec = {"train": train, "val": val, "infer": infer, "seed": seed, "classes": list(CLASSES), "size": list(SIZE)}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    log(f"writing the demo VOC dataset in {root}")
    rng = random.Random(seed)
    voc = root / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {"train": [], "val": []}
    w, h = SIZE
    for i in range(train + val):
        stem, ext, folder, path = _stem_and_ext(i)
        write_image(str(voc / "JPEGImages" / f"{stem}{ext}"), w, h, seed * 1009 + i)
        objects = random_objects(rng, CLASSES, w, h, 1, 3)
        if i % 5 == 3:  # a box dragged past the image's edge
            objects.append(SynthObject("dog", (w - 60, h - 50, w + 25, h + 10)))
        if i % 7 == 2:  # a box drawn right-to-left
            objects.append(SynthObject("cat", (200, 150, 120, 90)))
        write_voc_xml(str(voc / "Annotations" / f"{stem}.xml"), filename=f"{stem}{ext.lower()}", folder=folder,
                      img_path=path, width=w, height=h, objects=objects)
        ids["train" if i < train else "val"].append(stem)
    for name, stems in ids.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(s + "\n" for s in stems))
    own = root / "infer"
    own.mkdir(exist_ok=True)
    for i in range(infer):
        write_image(str(own / f"own photo {i}.jpg"), 400, 300, 4242 + i)
    marker.write_text(json.dumps(spec))
    return root


def ensure_demo_dataset() -> Path:
    return make_demo_dataset(STATE_DIR / "demo-data")
