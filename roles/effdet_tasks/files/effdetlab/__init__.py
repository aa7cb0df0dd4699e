"""effdetlab: convert labelImg-style Pascal VOC trees to google/automl EfficientDet inputs.

Modules:
  voc          parse labelImg XML, find images by file name (ignores <folder>/<path> dirs)
  labelmap     build/load/write label maps, check num_classes
  boxes        out-of-bounds / inverted box policy
  example_proto  dependency-free serializer for tf.train.Example (automl's schema)
  tfrecord     automl feature schema + TFRecord shard writing (imports tensorflow lazily)
  coco         COCO-style json for automl's --val_json_file
  report       validation report (json + markdown) with reconciled totals
  convert      orchestration + CLI:  python -m effdetlab.convert --help
"""
from effdetlab.errors import (ConversionError, CorruptXMLError, DatasetNotFoundError,
                              LabelMapError, NumClassesMismatchError)

__all__ = ["ConversionError", "CorruptXMLError", "DatasetNotFoundError",
           "LabelMapError", "NumClassesMismatchError"]
