"""automl's TFRecord schema and sharded writing.

The feature keys and value conventions are those of automl's
efficientdet/dataset/create_pascal_tfrecord.py `dict_to_tf_example`:

  image/height, image/width            int64   (real pixel size)
  image/filename                       bytes   file name of the image
  image/source_id                      bytes   str(image id); automl parses it with
                                               tf.strings.to_number and matches it to
                                               the COCO json's image id
  image/key/sha256                     bytes   hex sha256 of image/encoded
  image/encoded                        bytes   the file's bytes, untouched
  image/format                         bytes   'jpeg' or 'png' (from the bytes, not the name)
  image/object/bbox/{xmin,xmax,ymin,ymax}  float  x / width, y / height
  image/object/area                    float   normalised (xmax-xmin)*(ymax-ymin)
  image/object/class/text              bytes   class name
  image/object/class/label             int64   id from the label map (1..K)
  image/object/difficult, truncated    int64   0/1
  image/object/view                    bytes   <pose>

Records are framed by effdetlab.recordio (tensorflow's CRC-32C via ctypes, falling
back to tf.io.TFRecordWriter).
"""

import hashlib
import math
import os
from typing import List, Sequence, Tuple

from effdetlab import example_proto as ep
from effdetlab._records import Record

FEATURE_KEYS: Tuple[str, ...] = (
    "image/height", "image/width", "image/filename", "image/source_id", "image/key/sha256",
    "image/encoded", "image/format", "image/object/bbox/xmin", "image/object/bbox/xmax",
    "image/object/bbox/ymin", "image/object/bbox/ymax", "image/object/area",
    "image/object/class/text", "image/object/class/label", "image/object/difficult",
    "image/object/truncated", "image/object/view",
)

SHARD_TARGET_BYTES = 100 * 1024 * 1024  # ~100 MiB per shard, the usual TFRecord advice


class ObjectOut(Record):
    def __init__(self, name: str, label: int, box: Tuple[float, float, float, float],
                 difficult: int, truncated: int, pose: str) -> None:
        self.name = name
        self.label = label
        self.box = box  # absolute (xmin, ymin, xmax, ymax), validated
        self.difficult = difficult
        self.truncated = truncated
        self.pose = pose


def feature_entries_head(encoded: bytes, image_format: str, filename: str, width: int, height: int,
                    objects: Sequence[ObjectOut]) -> bytes:
    """All features except image/source_id (assigned later, in output order).

    The image/encoded entry comes last and its value is *not* included: the
    entries are `head + encoded`, so the image bytes are copied only once."""
    xmin = [o.box[0] / width for o in objects]
    ymin = [o.box[1] / height for o in objects]
    xmax = [o.box[2] / width for o in objects]
    ymax = [o.box[3] / height for o in objects]
    area = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in zip(xmin, ymin, xmax, ymax)]
    fe = ep.feature_entry
    return b"".join((
        fe("image/height", ep.int64_feature([height])),
        fe("image/width", ep.int64_feature([width])),
        fe("image/filename", ep.bytes_feature([filename.encode("utf-8")])),
        fe("image/key/sha256", ep.bytes_feature([hashlib.sha256(encoded).hexdigest().encode()])),
        fe("image/format", ep.bytes_feature([image_format.encode()])),
        fe("image/object/bbox/xmin", ep.float_feature(xmin)),
        fe("image/object/bbox/xmax", ep.float_feature(xmax)),
        fe("image/object/bbox/ymin", ep.float_feature(ymin)),
        fe("image/object/bbox/ymax", ep.float_feature(ymax)),
        fe("image/object/area", ep.float_feature(area)),
        fe("image/object/class/text", ep.bytes_feature([o.name.encode("utf-8") for o in objects])),
        fe("image/object/class/label", ep.int64_feature([o.label for o in objects])),
        fe("image/object/difficult", ep.int64_feature([o.difficult for o in objects])),
        fe("image/object/truncated", ep.int64_feature([o.truncated for o in objects])),
        fe("image/object/view", ep.bytes_feature([o.pose.encode("utf-8") for o in objects])),
        ep.bytes_entry_header("image/encoded", len(encoded)),
    ))


def finish_example_parts(head: bytes, encoded: bytes, source_id: int) -> Tuple[bytes, ...]:
    """Serialized tf.train.Example, as pieces, from feature_entries_head(), the image bytes, the id."""
    sid = ep.feature_entry("image/source_id", ep.bytes_feature([str(source_id).encode()]))
    return ep.example_parts(head, encoded, sid)


def finish_example(head: bytes, encoded: bytes, source_id: int) -> bytes:
    return b"".join(finish_example_parts(head, encoded, source_id))


def auto_num_shards(total_bytes: int, num_images: int, target: int = SHARD_TARGET_BYTES,
                    multiple_of: int = 1) -> int:
    """~100 MiB shards, rounded up to a multiple of `multiple_of` (the writer processes);
    never more shards than images, never fewer than one."""
    if num_images <= 0:
        return 1
    n = max(1, math.ceil(total_bytes / target))
    n = math.ceil(n / multiple_of) * multiple_of
    return max(1, min(num_images, n))


def shard_paths(output_dir: str, prefix: str, num_shards: int) -> List[str]:
    return [os.path.join(output_dir, "%s-%05d-of-%05d.tfrecord" % (prefix, i, num_shards))
            for i in range(num_shards)]
