"""Synthetic labelImg/VOC datasets with real JPEG/PNG files, for tests and benchmarks.

`write_voc_xml` writes XML the way labelImg does (folder, filename, path, source,
size, segmented, objects with name/pose/truncated/difficult/bndbox), with any
<folder>/<path> values the caller wants (Windows paths, other machines' paths).
"""

import os
import random
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from effdetlab._records import Record


class SynthObject(Record):
    def __init__(self, name: str, box: Tuple[float, float, float, float], difficult: int = 0,
                 truncated: int = 0, pose: str = "Unspecified") -> None:
        self.name = name
        self.box = box  # as written: xmin, ymin, xmax, ymax
        self.difficult = difficult
        self.truncated = truncated
        self.pose = pose


class SynthImage(Record):
    def __init__(self, stem: str, ext: str = ".jpg", width: int = 500, height: int = 375,
                 objects: Optional[List[SynthObject]] = None) -> None:
        self.stem = stem
        self.ext = ext
        self.width = width
        self.height = height
        self.objects: List[SynthObject] = [] if objects is None else objects


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def write_voc_xml(path: str, *, filename: str, folder: str, img_path: str, width: int, height: int,
                  objects: Sequence[SynthObject], depth: int = 3) -> None:
    objs = "".join(
        f"""
	<object>
		<name>{escape(o.name)}</name>
		<pose>{escape(o.pose)}</pose>
		<truncated>{o.truncated}</truncated>
		<difficult>{o.difficult}</difficult>
		<bndbox>
			<xmin>{_fmt(o.box[0])}</xmin>
			<ymin>{_fmt(o.box[1])}</ymin>
			<xmax>{_fmt(o.box[2])}</xmax>
			<ymax>{_fmt(o.box[3])}</ymax>
		</bndbox>
	</object>""" for o in objects)
    xml = f"""<annotation>
	<folder>{escape(folder)}</folder>
	<filename>{escape(filename)}</filename>
	<path>{escape(img_path)}</path>
	<source>
		<database>Unknown</database>
	</source>
	<size>
		<width>{width}</width>
		<height>{height}</height>
		<depth>{depth}</depth>
	</size>
	<segmented>0</segmented>{objs}
</annotation>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(xml)


def write_image(path: str, width: int, height: int, seed: int, quality: int = 90) -> None:
    """A photo-like image (gradient + shapes + noise) so JPEG sizes are realistic."""
    from PIL import Image, ImageDraw, ImageFilter
    rng = random.Random(seed)
    im = Image.effect_noise((width, height), 40 + seed % 30).convert("RGB")
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    im = Image.blend(im, base, 0.5)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        d.ellipse([x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 150)],
                  fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    im = im.filter(ImageFilter.GaussianBlur(0.6))
    ext = os.path.splitext(path)[1].lower()
    if ext == ".png":
        im.save(path, format="PNG")
    else:
        im.save(path, format="JPEG", quality=quality)


def random_objects(rng: random.Random, classes: Sequence[str], width: int, height: int,
                   n_min: int = 1, n_max: int = 4) -> List[SynthObject]:
    out = []
    for _ in range(rng.randint(n_min, n_max)):
        x0, y0 = rng.randint(1, width - 40), rng.randint(1, height - 40)
        x1, y1 = rng.randint(x0 + 10, min(width, x0 + 300)), rng.randint(y0 + 10, min(height, y0 + 250))
        out.append(SynthObject(rng.choice(classes), (x0, y0, x1, y1),
                               difficult=int(rng.random() < 0.1), truncated=int(rng.random() < 0.2)))
    return out


def make_clean_voc(root: str, n: int, classes: Sequence[str], *, year: str = "VOC2007",
                   set_name: str = "train", seed: int = 0, size: Tuple[int, int] = (500, 375),
                   n_max: int = 4, automl_class_file: bool = True) -> str:
    """A clean dataset in automl's expected layout: root/<year>/{Annotations,JPEGImages,ImageSets/Main}.

    <folder> is <year> (what automl's script joins to find JPEGImages).  Also writes
    ImageSets/Main/<set>.txt (ours) and <classes[0]>_<set>.txt (automl's script reads
    the file of the first non-background class).  Returns root/<year>.
    """
    rng = random.Random(seed)
    base = os.path.join(root, year)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    ids = []
    w, h = size
    for i in range(n):
        stem = f"{i:06d}"
        ids.append(stem)
        write_image(os.path.join(base, "JPEGImages", stem + ".jpg"), w, h, seed * 100003 + i)
        write_voc_xml(os.path.join(base, "Annotations", stem + ".xml"), filename=stem + ".jpg",
                      folder=year, img_path=f"/home/someone/VOC/{stem}.jpg", width=w, height=h,
                      objects=random_objects(rng, classes, w, h, 1, n_max))
    sets = os.path.join(base, "ImageSets", "Main")
    with open(os.path.join(sets, f"{set_name}.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    if automl_class_file:
        with open(os.path.join(sets, f"{classes[0]}_{set_name}.txt"), "w") as f:
            f.write("".join(f"{i}  1\n" for i in ids))
    return base


def automl_label_map_json(path: str, classes: Sequence[str]) -> None:
    """automl create_pascal_tfrecord --label_map_json_path format: {"background": 0, name: id}."""
    import json
    d = {"background": 0}
    d.update({c: i + 1 for i, c in enumerate(classes)})
    with open(path, "w") as f:
        json.dump(d, f)
