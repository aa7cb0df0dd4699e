"""Convert a labelImg-style Pascal VOC tree to automl EfficientDet TFRecords.

    python -m effdetlab.convert --data-dir DATA --output-dir OUT [--set train]

Layout of DATA (either works):
  DATA/Annotations/*.xml + DATA/JPEGImages/*  (+ optional DATA/ImageSets/Main/<set>.txt)
  DATA/*.xml next to the images (labelImg's default "save next to image")
Images are found by file name wherever they are under the images directory;
<folder> and <path> in the XML are ignored except for their last path component.

Outputs in OUT:
  <set>-00000-of-0000N.tfrecord ...   automl schema (see effdetlab.tfrecord)
  <set>_annotations.json              COCO-style, for automl --val_json_file
  label_map.yaml / label_map.json     automl `label_map` hparam / name->id
  report.json / report.md             validation report with reconciled totals

Corrupt XML policy: by default a corrupt XML file is *reported* (report.json
issues kind "corrupt_xml" with the file name and the parser's line/column, counted
under images_skipped) and also named on stderr; with --strict the conversion stops
with an error naming the file.  Exit status: 0 converted, 2 error (message on stderr).

Speed: workers (one per core) parse XML, read image bytes, read the image size
from the header with PIL (no decode), hash and serialize the tf.train.Example with
the standard library, and each writes whole shards (effdetlab.recordio: tensorflow's
own CRC-32C bound with ctypes, so `import tensorflow` is not needed; fallback
tf.io.TFRecordWriter).  Image bytes never cross a process boundary.  'auto' shards
are a multiple of the worker count so every core writes.
"""

import argparse
import functools
import glob
import io
import multiprocessing as mp
import os
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from effdetlab import labelmap as lm
from effdetlab._records import Record
from effdetlab.boxes import POLICIES, check_box
from effdetlab.coco import CocoBuilder
from effdetlab.imagehdr import sniff
from effdetlab.errors import ConversionError, CorruptXMLError, DatasetNotFoundError
from effdetlab.report import Report
from effdetlab import recordio
from effdetlab.tfrecord import (ObjectOut, auto_num_shards, feature_entries_head,
                                finish_example_parts, shard_paths)
from effdetlab.voc import (ImageIndex, VocAnnotation, list_annotation_files, parse_voc_xml,
                           read_split_file)

# Below this many images, starting worker processes costs more than it saves.
MIN_IMAGES_FOR_POOL = 200

_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png"}  # MPO: camera JPEGs with extra frames


class Options(Record):
    def __init__(self, data_dir: str, output_dir: str, set_name: str = "train",
                 annotations_dir: Optional[str] = None, images_dir: Optional[str] = None,
                 split_file: Optional[str] = None, label_map_from: str = "data",
                 label_map_path: Optional[str] = None, num_shards: Union[str, int] = "auto",
                 box_policy: str = "clip", num_classes: Optional[int] = None,
                 workers: Optional[int] = None, ignore_difficult: bool = False,
                 skip_empty: bool = False, strict: bool = False, overwrite: bool = False) -> None:
        self.data_dir = data_dir
        self.output_dir = output_dir
        self.set_name = set_name
        self.annotations_dir = annotations_dir
        self.images_dir = images_dir
        self.split_file = split_file
        self.label_map_from = label_map_from  # "data" | "file"
        self.label_map_path = label_map_path
        self.num_shards = num_shards
        self.box_policy = box_policy
        self.num_classes = num_classes
        self.workers = workers                # default: os.cpu_count()
        self.ignore_difficult = ignore_difficult
        self.skip_empty = skip_empty
        self.strict = strict
        self.overwrite = overwrite


class EncodeContext(Record):
    def __init__(self, label_map: Dict[str, int], box_policy: str, ignore_difficult: bool,
                 skip_empty: bool) -> None:
        self.label_map = label_map
        self.box_policy = box_policy
        self.ignore_difficult = ignore_difficult
        self.skip_empty = skip_empty


class ImageResult(Record):
    def __init__(self, index: int, skip_reason: Optional[str] = None, skip_detail: str = "",
                 head: bytes = b"", encoded: Optional[bytes] = None, file_name: str = "",
                 width: int = 0, height: int = 0, objects: Optional[List[ObjectOut]] = None,
                 dropped: Optional[List[Dict[str, Any]]] = None,
                 modified: Optional[List[Dict[str, Any]]] = None,
                 warnings: Optional[List[Dict[str, Any]]] = None, num_bytes: int = 0) -> None:
        self.index = index
        self.skip_reason = skip_reason
        self.skip_detail = skip_detail
        self.head = head        # feature entries up to image/encoded's header
        self.encoded = encoded  # dropped before results leave the worker
        self.file_name = file_name
        self.width = width
        self.height = height
        self.objects: List[ObjectOut] = [] if objects is None else objects
        # {reason, object, class, detail}
        self.dropped: List[Dict[str, Any]] = [] if dropped is None else dropped
        # {actions, object, class, detail}
        self.modified: List[Dict[str, Any]] = [] if modified is None else modified
        self.warnings: List[Dict[str, Any]] = [] if warnings is None else warnings
        self.num_bytes = num_bytes


# ----------------------------------------------------------------------------- workers

def _parse_one(xml_path: str) -> Union[VocAnnotation, Tuple[str, str]]:
    try:
        return parse_voc_xml(xml_path)
    except (ET.ParseError, OSError, UnicodeDecodeError, ValueError) as e:
        return (xml_path, f"{type(e).__name__}: {e}")


def _encode_one(ctx: EncodeContext, task: Tuple[int, VocAnnotation, str]) -> ImageResult:
    index, ann, image_path = task
    res = ImageResult(index=index, file_name=os.path.basename(image_path))
    try:
        with open(image_path, "rb") as f:
            encoded = f.read()
    except OSError as e:
        res.skip_reason, res.skip_detail = "unreadable_image", f"{type(e).__name__}: {e}"
        return res
    hdr = sniff(encoded)  # JPEG SOFn / PNG IHDR: no decode, no PIL
    if hdr is not None:
        fmt, width, height = hdr
    else:
        import PIL.Image  # lazy: only for files the header reader does not recognise

        try:
            with PIL.Image.open(io.BytesIO(encoded)) as im:  # header only, no pixel decode
                pil_fmt, (width, height) = im.format, im.size
        except (OSError, PIL.Image.DecompressionBombError, SyntaxError, ValueError) as e:
            res.skip_reason, res.skip_detail = "unreadable_image", f"{type(e).__name__}: {e}"
            return res
        if pil_fmt not in _PIL_FORMATS:
            res.skip_reason = "unsupported_format"
            res.skip_detail = f"{pil_fmt} image; automl's decoder expects JPEG or PNG"
            return res
        fmt = _PIL_FORMATS[pil_fmt]
    res.width, res.height, res.num_bytes = width, height, len(encoded)
    if (ann.width, ann.height) != (width, height):
        hint = " (swapped: EXIF rotation?)" if (ann.width, ann.height) == (height, width) else ""
        res.warnings.append({"kind": "size_mismatch", "detail":
                             f"XML says {ann.width}x{ann.height}, image is {width}x{height}{hint}; "
                             f"boxes normalised by the real size"})
    for i, o in enumerate(ann.objects):
        if o.problem:
            res.dropped.append({"reason": "invalid_box", "object": i, "class": o.name, "detail": o.problem})
            continue
        label = ctx.label_map.get(o.name)
        if label is None:
            res.dropped.append({"reason": "unknown_class", "object": i, "class": o.name,
                                "detail": f"class {o.name!r} is not in the label map"})
            continue
        if ctx.ignore_difficult and o.difficult:
            res.dropped.append({"reason": "difficult_ignored", "object": i, "class": o.name, "detail": ""})
            continue
        out = check_box(o.xmin, o.ymin, o.xmax, o.ymax, width, height, ctx.box_policy)
        if out.box is None:
            res.dropped.append({"reason": out.drop_reason, "object": i, "class": o.name, "detail": out.detail})
            continue
        if out.actions:
            res.modified.append({"actions": out.actions, "object": i, "class": o.name, "detail": out.detail})
        res.objects.append(ObjectOut(o.name, label, out.box, o.difficult, o.truncated, o.pose))
    if ctx.skip_empty and not res.objects:
        res.skip_reason = "empty_skipped"
        res.skip_detail = "no objects left" if ann.objects else "no <object> in XML"
        return res
    res.head = feature_entries_head(encoded, fmt, res.file_name, width, height, res.objects)
    res.encoded = encoded
    return res


def _write_shard(ctx: EncodeContext, job: Tuple[str, List[Tuple[int, VocAnnotation, str]]]
                 ) -> Tuple[str, int, str, List[ImageResult]]:
    """Encode and write one shard; returns (path, records, writer backend, results without bytes)."""
    path, items = job
    writer = recordio.open_writer(path)
    out, n = [], 0
    try:
        for item in items:
            res = _encode_one(ctx, item)
            if not res.skip_reason:
                parts = finish_example_parts(res.head, res.encoded or b"", res.index + 1)
                if hasattr(writer, "write_parts"):
                    writer.write_parts(parts)
                else:
                    writer.write(b"".join(parts))
                n += 1
            res.head, res.encoded = b"", None
            out.append(res)
    finally:
        writer.close()
    return path, n, recordio.backend(), out


# ----------------------------------------------------------------------------- layout

def _resolve_layout(opt: Options) -> Tuple[str, str, Optional[str]]:
    if not os.path.isdir(opt.data_dir):
        raise DatasetNotFoundError(f"dataset folder not found: {opt.data_dir!r}")
    ann_dir = opt.annotations_dir or next(
        (p for p in (os.path.join(opt.data_dir, "Annotations"),) if os.path.isdir(p)), opt.data_dir)
    img_dir = opt.images_dir or next(
        (p for p in (os.path.join(opt.data_dir, "JPEGImages"),) if os.path.isdir(p)), opt.data_dir)
    for what, p in (("annotations", ann_dir), ("images", img_dir)):
        if not os.path.isdir(p):
            raise DatasetNotFoundError(f"{what} folder not found: {p!r}")
    split = opt.split_file
    if split is not None:
        if not os.path.isfile(split):
            raise DatasetNotFoundError(f"split file not found: {split!r}")
    else:
        sets_dir = os.path.join(opt.data_dir, "ImageSets", "Main")
        cand = os.path.join(sets_dir, f"{opt.set_name}.txt")
        if os.path.isfile(cand):
            split = cand
        elif os.path.isdir(sets_dir):
            have = sorted(os.path.splitext(f)[0] for f in os.listdir(sets_dir) if f.endswith(".txt"))
            raise DatasetNotFoundError(
                f"{sets_dir} exists but has no {opt.set_name}.txt (found: {', '.join(have) or 'nothing'}); "
                f"pass --split-file or another --set")
    return ann_dir, img_dir, split


def _pool(workers: int) -> Any:
    # fork is cheapest, but not once tensorflow's threads exist in this process.
    methods = mp.get_all_start_methods()
    method = "fork" if "fork" in methods and "tensorflow" not in sys.modules else (
        "forkserver" if "forkserver" in methods else "spawn")
    return mp.get_context(method).Pool(workers)


class _Inline:
    """Pool stand-in for --workers 1."""

    def imap(self, fn: Any, it: Any, chunksize: int = 1) -> Iterator[Any]:
        return map(fn, it)

    def map(self, fn: Any, it: Any, chunksize: int = 1) -> List[Any]:
        return list(map(fn, it))

    def terminate(self) -> None:
        pass

    def close(self) -> None:
        pass

    def join(self) -> None:
        pass


def _rel(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


# ----------------------------------------------------------------------------- main entry

def convert(opt: Options) -> Report:
    """Run the conversion; returns the Report (also written to output_dir).

    Raises ConversionError subclasses for problems the user must fix."""
    t0 = time.perf_counter()
    if opt.box_policy not in POLICIES:
        raise ConversionError(f"--box-policy must be one of {POLICIES}, got {opt.box_policy!r}")
    if opt.label_map_from not in ("data", "file"):
        raise ConversionError(f"--label-map-from must be 'data' or 'file', got {opt.label_map_from!r}")
    if opt.label_map_from == "file" and not opt.label_map_path:
        raise ConversionError("--label-map-from file needs --label-map PATH")
    ann_dir, img_dir, split = _resolve_layout(opt)
    given_map = lm.load(opt.label_map_path) if opt.label_map_from == "file" else None
    if given_map is not None and opt.num_classes is not None:
        lm.check_num_classes(given_map, opt.num_classes)  # fail before any work

    ids = read_split_file(split) if split else None
    xml_paths, ids_without_xml = list_annotation_files(ann_dir, ids)
    if not xml_paths:
        raise DatasetNotFoundError(
            f"no annotation XML files found in {ann_dir!r}" + (f" for split {split!r}" if split else ""))
    out_dir = opt.output_dir
    os.makedirs(out_dir, exist_ok=True)
    stale = sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{glob.escape(opt.set_name)}-*-of-*.tfrecord")))
    if stale and not opt.overwrite:
        raise ConversionError(f"{out_dir} already has {len(stale)} shard(s) for set {opt.set_name!r} "
                              f"(e.g. {os.path.basename(stale[0])}); pass --overwrite to replace them")

    report = Report(opt.set_name, opt.data_dir, ann_dir, img_dir, split, {
        k: v for k, v in opt._asdict().items()
        if k in ("label_map_from", "label_map_path", "num_shards", "box_policy", "num_classes",
                 "ignore_difficult", "skip_empty", "strict")})
    report.split_ids_without_xml = ids_without_xml
    for i in ids_without_xml:
        report.issue("split_id_without_xml", i, detail=f"listed in {os.path.basename(split or '')} "
                     f"but {i}.xml is not in {ann_dir}")
    report.xml_files = len(xml_paths)

    workers = max(1, opt.workers or os.cpu_count() or 1)
    use_pool = workers > 1 and len(xml_paths) >= MIN_IMAGES_FOR_POOL
    pool = _pool(workers) if use_pool else _Inline()
    try:
        chunk = max(1, min(64, len(xml_paths) // (workers * 8) or 1))
        parsed_async = pool.map(_parse_one, xml_paths, chunksize=chunk)
        index = ImageIndex(img_dir)
        parsed: List[Tuple[int, VocAnnotation]] = []
        for i, p in enumerate(parsed_async):
            if isinstance(p, tuple):
                xml, err = p
                if opt.strict:
                    raise CorruptXMLError(xml, err)
                report.images_skipped["corrupt_xml"] += 1
                report.issue("corrupt_xml", _rel(xml, ann_dir), detail=err)
                print(f"warning: corrupt annotation XML skipped: {xml}: {err}", file=sys.stderr)
            else:
                parsed.append((i, p))

        label_map = given_map or lm.from_data(o.name for _, a in parsed for o in a.objects if not o.problem)
        if opt.num_classes is not None:
            lm.check_num_classes(label_map, opt.num_classes)
        report.label_map = label_map

        # Resolve images; drop XMLs whose image is missing/ambiguous/already used.
        tasks: List[Tuple[int, VocAnnotation, str]] = []
        used: Dict[str, str] = {}
        total_bytes = 0
        for i, ann in parsed:
            report.objects_in += len(ann.objects)
            report.difficult_in += sum(o.difficult for o in ann.objects)
            report.truncated_in += sum(o.truncated for o in ann.objects)
            report.empty_annotations += not ann.objects
            r = index.resolve(ann)
            reason, detail = None, ""
            if r.path is None:
                reason = "missing_image" if r.how == "missing" else "ambiguous_image"
                detail = (f"no file named like {' / '.join(r.candidates)} (any image extension) under "
                          f"{img_dir}; XML has <folder>{ann.folder}</folder> <path>{ann.path}</path>"
                          if r.how == "missing"
                          else f"several files match: {[_rel(c, img_dir) for c in r.candidates]}")
            elif r.path in used:
                reason, detail = "duplicate_image", f"image already used by {_rel(used[r.path], ann_dir)}"
            if reason:
                _skip(report, reason, _rel(ann.xml_path, ann_dir), detail, ann)
                continue
            assert r.path is not None
            used[r.path] = ann.xml_path
            report.image_lookup[r.how] += 1
            total_bytes += os.path.getsize(r.path)
            tasks.append((i, ann, r.path))
        if index.all_files and split is None:
            report.images_without_annotation = sorted(_rel(p, img_dir) for p in index.all_files if p not in used)

        n_active = workers if use_pool else 1
        n_shards = (auto_num_shards(total_bytes, len(tasks), multiple_of=n_active)
                    if str(opt.num_shards) == "auto" else int(opt.num_shards))
        if n_shards < 1:
            raise ConversionError(f"--num-shards must be >= 1 or 'auto', got {opt.num_shards!r}")
        for p in stale:
            os.remove(p)

        # Record at position p (0-based, input order) gets image id p+1 and goes to shard
        # p % n_shards, like automl.  Each worker writes whole shards itself, so image bytes
        # never cross a process boundary.  An image skipped in a worker (unreadable, ...)
        # leaves a gap in the ids; ids stay unique and match the COCO json.
        ctx = EncodeContext(label_map, opt.box_policy, opt.ignore_difficult, opt.skip_empty)
        paths = shard_paths(out_dir, opt.set_name, n_shards)
        jobs = [(paths[sh], [(pos, ann, path) for pos, (_i, ann, path) in enumerate(tasks)
                             if pos % n_shards == sh]) for sh in range(n_shards)]
        by_pos = {pos: ann for pos, (_i, ann, _p) in enumerate(tasks)}
        results: List[ImageResult] = []
        report.shards = []
        writers: List[str] = []
        for path, n_records, writer, shard_results in pool.imap(functools.partial(_write_shard, ctx), jobs):
            writers.append(writer)
            report.shards.append({"path": os.path.basename(path), "records": n_records})
            results.extend(shard_results)
        results.sort(key=lambda r: r.index)
        coco = CocoBuilder(label_map)
        for res in results:
            ann = by_pos[res.index]
            xml_rel = _rel(ann.xml_path, ann_dir) if (res.warnings or res.skip_reason or res.dropped
                                                      or res.modified or not ann.objects) else ""
            for w in res.warnings:
                report.warnings[w["kind"]] += 1
                report.issue(w["kind"], xml_rel, image=res.file_name, detail=w["detail"])
            if res.skip_reason:
                _skip(report, res.skip_reason, xml_rel, res.skip_detail, ann, res.file_name)
                continue
            coco.add_image(res.index + 1, res.file_name, res.width, res.height,
                           [(o.label, o.box) for o in res.objects])
            _account(report, ann, res, xml_rel)
        report.options["record_writer"] = writers[-1] if writers else None
        report.options["workers"] = n_active
    finally:
        pool.terminate()
        pool.join()

    coco_path = os.path.join(out_dir, f"{opt.set_name}_annotations.json")
    coco.write(coco_path)
    maps = lm.write(label_map, out_dir)
    report.outputs.update({"coco_json": coco_path, "label_map_yaml": maps["yaml"],
                           "label_map_json": maps["json"], "tfrecord_pattern":
                           os.path.join(out_dir, f"{opt.set_name}-*-of-{n_shards:05d}.tfrecord")})
    report.seconds = time.perf_counter() - t0
    report.write(out_dir)
    rec = report.reconcile()
    if not rec["ok"]:  # a bug in this converter, never the user's data
        raise AssertionError(f"report totals do not reconcile: {rec['checks']}")
    if report.images_written == 0:
        raise ConversionError(f"no images were converted; see {report.outputs['report_md']}")
    return report


def _skip(report: Report, reason: str, xml_rel: str, detail: str, ann: VocAnnotation,
          image: str = "") -> None:
    report.images_skipped[reason] += 1
    report.issue(reason, xml_rel, image=image, objects=len(ann.objects), detail=detail)
    if ann.objects:
        report.objects_dropped[f"image_{reason}"] += len(ann.objects)


def _account(report: Report, ann: VocAnnotation, res: ImageResult, xml_rel: str) -> None:
    report.images_written += 1
    if not ann.objects:
        report.issue("empty_annotation", xml_rel, image=res.file_name, detail="no <object> in XML; "
                     "written as an image without boxes (use --skip-empty to leave it out)")
    if not res.objects:
        report.images_written_without_objects += 1
    report.objects_written += len(res.objects)
    for o in res.objects:
        report.class_counts[o.name] += 1
        report.difficult_written += o.difficult
        report.truncated_written += o.truncated
    for d in res.dropped:
        report.objects_dropped[d["reason"]] += 1
        if d["reason"] == "unknown_class":
            report.unknown_classes[d["class"]] += 1
        report.issue(d["reason"], xml_rel, image=res.file_name, object=d["object"],
                     cls=d["class"], action="dropped", detail=d["detail"])
    for m in res.modified:
        for a in m["actions"]:
            report.objects_modified[a] += 1
        report.issue("+".join(m["actions"]), xml_rel, image=res.file_name, object=m["object"],
                     cls=m["class"], action="kept", detail=m["detail"])


# ----------------------------------------------------------------------------- CLI

def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m effdetlab.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="root of the VOC/labelImg tree")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--set", dest="set_name", default="train",
                   help="split name: output prefix, and ImageSets/Main/<set>.txt if present (default train)")
    p.add_argument("--split-file", help="explicit list of annotation ids (one per line)")
    p.add_argument("--annotations-dir", help="default: DATA/Annotations if present, else DATA")
    p.add_argument("--images-dir", help="default: DATA/JPEGImages if present, else DATA")
    p.add_argument("--label-map-from", choices=("data", "file"), default="data",
                   help="data: sorted class names found in the XMLs -> 1..K; file: --label-map")
    p.add_argument("--label-map", dest="label_map_path",
                   help="yaml {id: name} / json {name: id} / txt one name per line (implies --label-map-from file)")
    p.add_argument("--num-shards", default="auto", help="'auto' (~100 MiB per shard) or N")
    p.add_argument("--box-policy", choices=POLICIES, default="clip",
                   help="out-of-bounds/inverted boxes: clip (and un-invert) or drop")
    p.add_argument("--num-classes", type=int,
                   help="fail unless this equals the label map's largest id (automl's num_classes)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--ignore-difficult", action="store_true", help="drop objects marked difficult")
    p.add_argument("--skip-empty", action="store_true", help="leave out images with no boxes")
    p.add_argument("--strict", action="store_true", help="stop at the first corrupt XML instead of reporting it")
    p.add_argument("--overwrite", action="store_true", help="replace existing shards of this set")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_arg_parser().parse_args(argv)
    if a.label_map_path and a.label_map_from == "data":
        a.label_map_from = "file"
    ns = a.num_shards
    if ns != "auto":
        try:
            ns = int(ns)
        except ValueError:
            print(f"error: --num-shards must be 'auto' or an integer, got {ns!r}", file=sys.stderr)
            return 2
    opt = Options(data_dir=a.data_dir, output_dir=a.output_dir, set_name=a.set_name,
                  annotations_dir=a.annotations_dir, images_dir=a.images_dir, split_file=a.split_file,
                  label_map_from=a.label_map_from, label_map_path=a.label_map_path, num_shards=ns,
                  box_policy=a.box_policy, num_classes=a.num_classes, workers=a.workers,
                  ignore_difficult=a.ignore_difficult, skip_empty=a.skip_empty, strict=a.strict,
                  overwrite=a.overwrite)
    try:
        rep = convert(opt)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = rep.as_dict()
    t = d["totals"]
    print(f"{t['images_written']}/{t['xml_files']} images, {t['objects_written']}/{t['objects_in']} objects "
          f"written to {len(rep.shards)} shard(s) in {d['seconds']} s ({d['images_per_second']} images/s); "
          f"skipped {d['images_skipped'] or 'none'}; dropped {d['objects_dropped'] or 'none'}; "
          f"report: {rep.outputs['report_md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
