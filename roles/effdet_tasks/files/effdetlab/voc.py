"""Parse labelImg / Pascal VOC annotation XML and find the image each one belongs to.

labelImg copies the labeller's machine paths into <folder> and <path> (Windows
drive paths, other people's home directories, ...).  Those never match where the
files are on the training machine, so the image is looked up *by file name* in
an index of the images directory:

  1. exact file name (case-insensitive, Unicode NFC) taken from <filename>,
     then from the last component of <path> (both '/' and '\\' separators),
     then the XML file's own stem + the image's extension;
  2. failing that, the same candidates by stem only (so 'a.jpg' in the XML
     finds 'a.JPG', 'a.jpeg' or 'a.png' on disk), if exactly one file matches.

This module imports neither tensorflow nor PIL, so it is cheap in worker processes.
"""

import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Optional, Tuple

from effdetlab._records import Record

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png")
# Other raster formats are indexed so we can say "unsupported format" rather than "missing".
OTHER_IMAGE_EXTENSIONS: Tuple[str, ...] = (".bmp", ".gif", ".tif", ".tiff", ".webp")

_SEP = re.compile(r"[\\/]+")


class VocObject(Record):
    """One <object> as written in the XML; coordinates are raw (not yet validated)."""

    def __init__(self, name: str, xmin: Optional[float], ymin: Optional[float],
                 xmax: Optional[float], ymax: Optional[float], difficult: int = 0,
                 truncated: int = 0, pose: str = "Unspecified", problem: Optional[str] = None) -> None:
        self.name = name
        self.xmin = xmin
        self.ymin = ymin
        self.xmax = xmax
        self.ymax = ymax
        self.difficult = difficult
        self.truncated = truncated
        self.pose = pose
        self.problem = problem  # e.g. "missing <bndbox>", "non-numeric xmin"


class VocAnnotation(Record):
    def __init__(self, xml_path: str, filename: str = "", path: str = "", folder: str = "",
                 width: int = 0, height: int = 0, objects: Optional[List[VocObject]] = None) -> None:
        self.xml_path = xml_path
        self.filename = filename  # <filename> text (may be a full path or lack an extension)
        self.path = path          # <path> text (labeller's machine path; only its basename is used)
        self.folder = folder      # <folder> text (ignored for lookup; kept for the report)
        self.width = width        # <size> as written (0 when missing / unparsable)
        self.height = height
        self.objects: List[VocObject] = [] if objects is None else objects


def _text(elem: Optional[ET.Element]) -> str:
    if elem is None or elem.text is None:
        return ""
    return elem.text.strip()


def _as_int(text: str, default: int = 0) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def _flag(text: str) -> int:
    """VOC 0/1 flags; labelImg and others also write 'Unspecified', 'true', ''."""
    t = text.strip().lower()
    if t in ("1", "true", "yes"):
        return 1
    try:
        return 1 if int(float(t)) else 0
    except ValueError:
        return 0


def parse_voc_xml(xml_path: str) -> VocAnnotation:
    """Parse one annotation file. Raises ET.ParseError (or OSError) on unreadable XML."""
    root = ET.parse(xml_path).getroot()
    if root.tag != "annotation":
        raise ET.ParseError(f"root element is <{root.tag}>, expected <annotation>")
    ann = VocAnnotation(
        xml_path=xml_path,
        filename=_text(root.find("filename")),
        path=_text(root.find("path")),
        folder=_text(root.find("folder")),
    )
    size = root.find("size")
    if size is not None:
        ann.width = _as_int(_text(size.find("width")))
        ann.height = _as_int(_text(size.find("height")))
    for obj in root.iter("object"):
        name = _text(obj.find("name"))
        coords: Dict[str, Optional[float]] = {"xmin": None, "ymin": None, "xmax": None, "ymax": None}
        problem = None
        bnd = obj.find("bndbox")
        if bnd is None:
            problem = "missing <bndbox>"
        else:
            for k in coords:
                t = _text(bnd.find(k))
                try:
                    coords[k] = float(t)
                except ValueError:
                    problem = problem or f"missing or non-numeric <{k}> ({t!r})"
        if not name:
            problem = problem or "empty <name>"
        ann.objects.append(VocObject(
            name=name, difficult=_flag(_text(obj.find("difficult"))),
            truncated=_flag(_text(obj.find("truncated"))),
            pose=_text(obj.find("pose")) or "Unspecified", problem=problem, **coords))
    return ann


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def basename_any(path_text: str) -> str:
    """Last component of a path written on any OS ('C:\\a\\b.jpg', '/home/x/b.jpg', 'b.jpg')."""
    parts = [p for p in _SEP.split(path_text.strip()) if p]
    return parts[-1] if parts else ""


class Resolution(Record):
    def __init__(self, path: Optional[str], how: str, candidates: Optional[List[str]] = None) -> None:
        self.path = path  # absolute path of the image, None when not found
        self.how = how    # "filename" | "path" | "xml_stem" | "stem:<candidate>" | "missing" | "ambiguous"
        # for "ambiguous": the clashing files
        self.candidates: List[str] = [] if candidates is None else candidates


class ImageIndex:
    """Index of every image file under a directory (recursive), by normalised name and stem."""

    def __init__(self, images_dir: str) -> None:
        self.images_dir = images_dir
        self.by_name: Dict[str, List[str]] = {}
        self.by_stem: Dict[str, List[str]] = {}
        exts = IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS
        for dirpath, _dirs, files in os.walk(images_dir):
            for f in files:
                stem, ext = os.path.splitext(f)
                if ext.lower() not in exts:
                    continue
                full = os.path.join(dirpath, f)
                self.by_name.setdefault(_norm(f), []).append(full)
                self.by_stem.setdefault(_norm(stem), []).append(full)
        self.all_files = sorted({p for v in self.by_name.values() for p in v})

    def __len__(self) -> int:
        return len(self.all_files)

    def resolve(self, ann: VocAnnotation) -> Resolution:
        xml_stem = os.path.splitext(os.path.basename(ann.xml_path))[0]
        candidates: List[Tuple[str, str]] = []
        for how, text in (("filename", basename_any(ann.filename)),
                          ("path", basename_any(ann.path)),
                          ("xml_stem", xml_stem)):
            if text and all(text != c for _, c in candidates):
                candidates.append((how, text))
        ambiguous: List[str] = []
        for how, cand in candidates:                      # 1. exact name
            hits = self.by_name.get(_norm(cand), [])
            if len(hits) == 1:
                return Resolution(hits[0], how)
            if len(hits) > 1:
                ambiguous = ambiguous or hits
        if ambiguous:
            return Resolution(None, "ambiguous", sorted(ambiguous))
        for how, cand in candidates:                      # 2. stem only
            stem = os.path.splitext(cand)[0] if os.path.splitext(cand)[1].lower() in (
                IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS) else cand
            hits = self.by_stem.get(_norm(stem), [])
            if len(hits) == 1:
                return Resolution(hits[0], f"stem:{how}")
            if len(hits) > 1:
                ambiguous = ambiguous or hits
        if ambiguous:
            return Resolution(None, "ambiguous", sorted(ambiguous))
        return Resolution(None, "missing", [c for _, c in candidates])


def list_annotation_files(annotations_dir: str, ids: Optional[Iterable[str]] = None
                          ) -> Tuple[List[str], List[str]]:
    """XML files to convert, sorted; plus ids from a split file that have no XML.

    With ids=None every *.xml under annotations_dir (recursive) is used.
    """
    if ids is None:
        found = []
        for dirpath, _dirs, files in os.walk(annotations_dir):
            found.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(".xml"))
        return sorted(found), []
    xmls, missing = [], []
    for line in ids:
        # VOC lines are "<id>" or "<id> <flag>"; an id may itself contain spaces.
        for cand in (line, line.split()[0]):
            p = os.path.join(annotations_dir, cand + ".xml")
            if os.path.isfile(p):
                xmls.append(p)
                break
        else:
            missing.append(line.split()[0] if len(line.split()) == 2 and line.split()[1].lstrip("-").isdigit() else line)
    return xmls, missing


def read_split_file(path: str) -> List[str]:
    """VOC ImageSets file: one id per non-empty line (a trailing ' 1'/' -1' flag is resolved later)."""
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]
