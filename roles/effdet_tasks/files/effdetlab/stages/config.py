"""The JSON config that drives every stage, and its validation.

One file, flat keys for what both automl dialects share, one sub-object for the
benchmark matrix.  Relative paths are resolved against the config file's folder.

  key                       default                       used by
  run_dir                   (required)                    all: every output lands here
  code_source               "pypi"                        all: "pypi" (tflite-model-maker's vendored
                                                          copy) or "git" (a checkout)
  code_dir                  -                             git: folder holding main.py (or a checkout
                                                          root with efficientdet/main.py)
  dialect                   "auto"                        all: "auto" (read the scripts' flags),
                                                          "current" or "2020-05"
  python                    the interpreter running us    all: interpreter for automl's scripts
  device                    "cpu"                         all: "cpu" sets CUDA_VISIBLE_DEVICES=-1
  env                       {}                            all: extra environment for automl
  model_name                "efficientdet-d0"             train/export/infer (d0..d7, d7x)
  hparams                   {}                            train/export/infer: mapping -> --hparams
                                                          (num_classes, moving_average_decay,
                                                          label_map, image_size, ...)
  train_file_pattern        (required for train)          train: must match >= 1 file
  val_file_pattern          (required for train_and_eval) train
  val_json_file             -                             train: COCO json for eval
  mode                      "train_and_eval"              train: or "train"
  train_batch_size          8                             train
  eval_batch_size           1                             train
  eval_samples              100                           train
  num_epochs                1                             train
  num_examples_per_epoch    (required for train)          train: steps = epochs*examples//batch
  ckpt                      null                          train: pretrained EfficientDet ckpt
  backbone_ckpt             null                          train
  model_dir                 run_dir/model                 train/export (resume: same dir)
  save_checkpoints_steps    100                           train
  log_every_n_steps         1                             train (-> --iterations_per_loop)
  strategy                  null                          train: null | "gpus"
  extra_train_flags         {}                            train: more main.py flags, verbatim
  saved_model_dir           run_dir/saved_model           export/benchmark/infer
  tflite                    true                          export: also write a .tflite
  tflite_path               run_dir/<model_name>.tflite   export
  min_score_thresh          0.4                           export (baked in) / infer
  export_batch_size         1                             export
  quantize                  []                            export: quantized .tflite files too
                                                          ("int8", "drq"; effdetlab.stages.quantize)
  accuracy                  true                          export: COCO mAP of the float and the
                                                          quantized .tflite on val_file_pattern
  image_size                hparams image_size / model's  infer: hparams override for inference
  infer_images              (required for infer)          infer: a folder or a glob
  infer_runmode             "saved_model_infer"           infer: or "infer" (from the checkpoint)
  timeout_s                 null                          every automl subprocess
  explicit                  the keys given here           all: the keys whose values were set on
                                                          purpose (the role lists the variables
                                                          the inventory set); see below
  benchmark: {
    model_names             [model_name]
    batch_sizes             [1]
    threads                 [1]                           0 = TensorFlow's default
    modes                   ["bm", "e2e", "tflite"]       bm: model_inspect --runmode=bm (network
                                                          only); e2e: saved_model_benchmark;
                                                          tflite: the exported .tflite in TFLite's
                                                          interpreter; tflite-int8, tflite-drq: a
                                                          quantized .tflite (see quantize)
    bm_runs                 10                            timed runs of bm and tflite (after 5
                                                          warm-ups; e2e: automl's fixed 1 + 10)
    repeats                 3                             measurements of each configuration, in
                                                          interleaved order
    fill                    true                          e2e/tflite: repeat the images until a
                                                          batch is full (false: refuse instead)
    pairs                   model_names x batch_sizes     [[model_name, batch], ...] to measure
    hparams                 {}                            bm's --hparams, over an exported model's
                                                          num_classes and image size ({} and no
                                                          export: automl defaults)
    saved_models            {model_name: saved_model_dir} e2e: model name -> exported folder
    images                  infer_images                  e2e: folder or glob of input images
    host                    socket.gethostname()          recorded in every record
  }

explicit: a list of config keys ("benchmark.bm_runs" for the benchmark ones). A flag the
running automl script lacks is dropped, with a line in the stage's output, when its value
is only our default, and refused when its key is explicit (dialect.FLAGS says which flags
may be dropped). Without the list, every key given in this file (and not null) is explicit.
"""

import glob
import json
import os
import socket
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from effdetlab._records import Record
from effdetlab.stages.errors import StageInputError

MODEL_NAMES = tuple(f"efficientdet-d{i}" for i in range(8)) + ("efficientdet-d7x",)
MODES = ("train_and_eval", "train")
DEVICES = ("cpu", "gpu")
DIALECTS = ("auto", "current", "2020-05")
SOURCES = ("pypi", "git")
BENCH_MODES = ("bm", "e2e", "tflite", "tflite-int8", "tflite-drq")
DEFAULT_BENCH_MODES = ("bm", "e2e", "tflite")
QUANTIZE_KINDS = ("int8", "drq")
INFER_RUNMODES = ("saved_model_infer", "infer")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

_KNOWN_KEYS = {
    "run_dir", "code_source", "code_dir", "dialect", "python", "device", "env", "model_name",
    "hparams", "train_file_pattern", "val_file_pattern", "val_json_file", "mode",
    "train_batch_size", "eval_batch_size", "eval_samples", "num_epochs", "num_examples_per_epoch",
    "ckpt", "backbone_ckpt", "model_dir", "save_checkpoints_steps", "log_every_n_steps", "strategy",
    "extra_train_flags", "saved_model_dir", "tflite", "tflite_path", "min_score_thresh",
    "export_batch_size", "image_size", "infer_images", "infer_runmode", "timeout_s", "benchmark",
    "explicit", "quantize", "accuracy",
}
_BENCH_KEYS = {"model_names", "batch_sizes", "threads", "modes", "bm_runs", "hparams",
               "saved_models", "images", "host", "repeats", "fill", "pairs"}


class BenchConfig(Record):
    def __init__(self, model_names: List[str], batch_sizes: List[int], threads: List[int],
                 modes: List[str], bm_runs: int, hparams: Dict[str, Any],
                 saved_models: Dict[str, str], images: Optional[str], host: str,
                 repeats: int = 3, fill: bool = True,
                 pairs: Optional[List[Tuple[str, int]]] = None) -> None:
        self.model_names = model_names
        self.batch_sizes = batch_sizes
        self.threads = threads
        self.modes = modes
        self.bm_runs = bm_runs
        self.hparams = hparams
        self.saved_models = saved_models
        self.images = images
        self.host = host
        self.repeats = repeats
        self.fill = fill
        # (model, batch) points of this run: the product of model_names and batch_sizes
        # unless a fleet dealt this host its share.
        self.pairs: List[Tuple[str, int]] = (pairs if pairs is not None else
                                             [(m, b) for m in model_names for b in batch_sizes])


class Config(Record):
    def __init__(self, run_dir: str, code_source: str = "pypi", code_dir: Optional[str] = None,
                 dialect: str = "auto", python: str = sys.executable, device: str = "cpu",
                 env: Optional[Dict[str, str]] = None, model_name: str = "efficientdet-d0",
                 hparams: Optional[Dict[str, Any]] = None,
                 train_file_pattern: Optional[str] = None, val_file_pattern: Optional[str] = None,
                 val_json_file: Optional[str] = None, mode: str = "train_and_eval",
                 train_batch_size: int = 8, eval_batch_size: int = 1, eval_samples: int = 100,
                 num_epochs: int = 1, num_examples_per_epoch: Optional[int] = None,
                 ckpt: Optional[str] = None, backbone_ckpt: Optional[str] = None,
                 model_dir: str = "", save_checkpoints_steps: int = 100,
                 log_every_n_steps: int = 1, strategy: Optional[str] = None,
                 extra_train_flags: Optional[Dict[str, Any]] = None, saved_model_dir: str = "",
                 tflite: bool = True, tflite_path: str = "", min_score_thresh: float = 0.4,
                 export_batch_size: int = 1, image_size: Optional[Any] = None,
                 infer_images: Optional[str] = None, infer_runmode: str = "saved_model_infer",
                 timeout_s: Optional[float] = None, benchmark: Optional[BenchConfig] = None,
                 config_path: Optional[str] = None, explicit: Optional[List[str]] = None) -> None:
        self.run_dir = run_dir
        self.code_source = code_source
        self.code_dir = code_dir
        self.dialect = dialect
        self.python = python
        self.device = device
        self.env: Dict[str, str] = {} if env is None else env
        self.model_name = model_name
        self.hparams: Dict[str, Any] = {} if hparams is None else hparams
        self.train_file_pattern = train_file_pattern
        self.val_file_pattern = val_file_pattern
        self.val_json_file = val_json_file
        self.mode = mode
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.eval_samples = eval_samples
        self.num_epochs = num_epochs
        self.num_examples_per_epoch = num_examples_per_epoch
        self.ckpt = ckpt
        self.backbone_ckpt = backbone_ckpt
        self.model_dir = model_dir
        self.save_checkpoints_steps = save_checkpoints_steps
        self.log_every_n_steps = log_every_n_steps
        self.strategy = strategy
        self.extra_train_flags: Dict[str, Any] = {} if extra_train_flags is None else extra_train_flags
        self.saved_model_dir = saved_model_dir
        self.tflite = tflite
        self.tflite_path = tflite_path
        self.min_score_thresh = min_score_thresh
        self.export_batch_size = export_batch_size
        self.image_size = image_size
        self.infer_images = infer_images
        self.infer_runmode = infer_runmode
        self.timeout_s = timeout_s
        self.benchmark: BenchConfig = benchmark  # type: ignore[assignment]  # set by from_dict
        self.config_path = config_path
        # Keys set on purpose (sorted): a flag the automl code lacks is refused for these.
        self.explicit: List[str] = [] if explicit is None else explicit
        self.quantize: List[str] = []  # export: quantized .tflite files to write beside the float one
        self.accuracy = True  # export: mAP of the float and quantized .tflite on the val set

    def is_explicit(self, key: Optional[str]) -> bool:
        return key is not None and key in self.explicit

    @property
    def train_steps(self) -> int:
        """automl's own arithmetic: no flag sets the step count."""
        return int(self.num_epochs * (self.num_examples_per_epoch or 0)) // self.train_batch_size


# ----------------------------------------------------------------------------- helpers

def _err(msg: str) -> StageInputError:
    return StageInputError(msg)


def _int(d: Mapping[str, Any], key: str, default: Optional[int], minimum: int = 1,
         where: str = "") -> Optional[int]:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(f"config {where}{key}={v!r}: expected an integer")
    if v < minimum:
        raise _err(f"config {where}{key}={v}: must be >= {minimum}")
    return v


def _int_list(d: Mapping[str, Any], key: str, default: List[int], minimum: int) -> List[int]:
    v = d.get(key, default)
    if not isinstance(v, list) or not v:
        raise _err(f"config benchmark.{key}={v!r}: expected a non-empty list of integers")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
            raise _err(f"config benchmark.{key}: {x!r} is not an integer >= {minimum}")
    return list(v)


def _bool(d: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise _err(f"config {where}={v!r}: expected true or false")
    return v


def _pairs(v: Any) -> Optional[List[Tuple[str, int]]]:
    """benchmark.pairs: [[model_name, batch], ...] or absent."""
    if v is None:
        return None
    if not isinstance(v, list) or not v:
        raise _err(f"config benchmark.pairs={v!r}: expected a non-empty list of [model_name, batch]")
    out = []
    for p in v:
        if (not isinstance(p, list) or len(p) != 2 or isinstance(p[1], bool)
                or not isinstance(p[1], int) or p[1] < 1):
            raise _err(f"config benchmark.pairs entry {p!r}: expected [model_name, batch >= 1]")
        out.append((check_model_name(p[0], "benchmark.pairs"), p[1]))
    return out


def _choice(d: Mapping[str, Any], key: str, default: str, choices: Sequence[str], where: str = "") -> str:
    v = d.get(key, default)
    if v not in choices:
        raise _err(f"config {where}{key}={v!r}: must be one of {', '.join(choices)}")
    return v


def check_model_name(name: Any, where: str = "model_name") -> str:
    if name not in MODEL_NAMES:
        raise _err(f"unknown model name {name!r} ({where}): expected one of "
                   f"{', '.join(MODEL_NAMES)}")
    return name


def parse_image_size(v: Any, where: str = "image_size") -> List[int]:
    """automl accepts an int (square) or 'WxH'; returns [height, width]."""
    if isinstance(v, bool):
        raise _err(f"config {where}={v!r}: expected an integer or 'WIDTHxHEIGHT'")
    if isinstance(v, int):
        if v < 32:
            raise _err(f"config {where}={v}: too small (>= 32)")
        return [v, v]
    if isinstance(v, str) and "x" in v:
        try:
            w, h = (int(x) for x in v.split("x"))
        except ValueError:
            raise _err(f"config {where}={v!r}: expected an integer or 'WIDTHxHEIGHT'") from None
        if w < 32 or h < 32:
            raise _err(f"config {where}={v!r}: too small (>= 32)")
        return [h, w]
    raise _err(f"config {where}={v!r}: expected an integer or 'WIDTHxHEIGHT'")


def _check_hparams(h: Any, where: str) -> Dict[str, Any]:
    if not isinstance(h, dict):
        raise _err(f"config {where}: expected a JSON object (mapping of automl hparams)")
    for k, v in h.items():
        if not isinstance(k, str) or not k or any(c in k for c in ",= "):
            raise _err(f"config {where}: bad hparam name {k!r}")
        if isinstance(v, (dict, list)):
            raise _err(f"config {where}.{k}: nested values cannot be passed through --hparams; "
                       f"use dotted names (e.g. \"nms_configs.method\")")
        if isinstance(v, str) and ("," in v or "=" in v):
            raise _err(f"config {where}.{k}={v!r}: automl's --hparams string cannot carry ',' or '='")
    if "image_size" in h:
        parse_image_size(h["image_size"], f"{where}.image_size")
    return dict(h)


def _abspath(base: str, p: Optional[str]) -> Optional[str]:
    if p is None or p == "":
        return None
    if "://" in p:  # gs://, s3://: left to TensorFlow's file system
        return p
    return os.path.normpath(os.path.join(base, os.path.expanduser(p)))


def check_label_map(hparams: Dict[str, Any], where: str = "hparams") -> Optional[int]:
    """num_classes must equal the label map's largest id (automl: ids 1..K, 0 background).

    Fills in num_classes from the label map when it is not given.  Returns K or None.
    """
    path = hparams.get("label_map")
    if path is None or not isinstance(path, str) or path in ("coco", "voc", "waymo"):
        return None
    from effdetlab import labelmap as lm
    from effdetlab.errors import ConversionError
    try:
        label_map = lm.load(path)
    except ConversionError as e:
        raise _err(f"{where}.label_map: {e}") from None
    max_id = max(label_map.values())
    nc = hparams.get("num_classes")
    if nc is None:
        hparams["num_classes"] = max_id
        return max_id
    if isinstance(nc, bool) or not isinstance(nc, int) or nc != max_id:
        listing = ", ".join(f"{i}={n}" for n, i in sorted(label_map.items(), key=lambda kv: kv[1]))
        raise _err(f"{where}.num_classes={nc!r} does not match the label map {path} "
                   f"({len(label_map)} classes, ids up to {max_id}: {listing}); "
                   f"automl needs num_classes == {max_id}")
    return max_id


def pattern_files(pattern: str) -> List[str]:
    return sorted(glob.glob(pattern))


def image_files(spec: str) -> List[str]:
    """A folder (its .jpg/.jpeg/.png files, sorted) or a glob."""
    if os.path.isdir(spec):
        return sorted(os.path.join(spec, f) for f in os.listdir(spec)
                      if os.path.splitext(f)[1].lower() in IMAGE_EXTS
                      and os.path.isfile(os.path.join(spec, f)))
    return sorted(f for f in glob.glob(spec) if os.path.isfile(f))


# ----------------------------------------------------------------------------- loading

def from_dict(d: Mapping[str, Any], base_dir: str = ".", config_path: Optional[str] = None) -> Config:
    """Validate a config mapping (no file system checks beyond the label map)."""
    if not isinstance(d, Mapping):
        raise _err("config: expected a JSON object")
    unknown = sorted(set(d) - _KNOWN_KEYS)
    if unknown:
        raise _err(f"config: unknown key(s) {', '.join(unknown)}")
    if not d.get("run_dir"):
        raise _err("config: run_dir is required")
    base_dir = os.path.abspath(base_dir)
    run_dir = _abspath(base_dir, d["run_dir"])
    assert run_dir is not None
    c = Config(run_dir=run_dir, config_path=config_path)
    c.code_source = _choice(d, "code_source", "pypi", SOURCES)
    c.code_dir = _abspath(base_dir, d.get("code_dir"))
    if c.code_source == "git" and not c.code_dir:
        raise _err("config: code_source \"git\" needs code_dir (the automl checkout)")
    c.dialect = _choice(d, "dialect", "auto", DIALECTS)
    c.python = d.get("python") or sys.executable
    c.device = _choice(d, "device", "cpu", DEVICES)
    env = d.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise _err("config env: expected a mapping of names to strings")
    c.env = {k: str(v) for k, v in env.items()}
    c.model_name = check_model_name(d.get("model_name", "efficientdet-d0"))
    c.hparams = _check_hparams(d.get("hparams", {}), "hparams")
    if isinstance(c.hparams.get("label_map"), str) and c.hparams["label_map"] not in ("coco", "voc", "waymo"):
        c.hparams["label_map"] = _abspath(base_dir, c.hparams["label_map"])
    check_label_map(c.hparams)
    c.train_file_pattern = _abspath(base_dir, d.get("train_file_pattern"))
    c.val_file_pattern = _abspath(base_dir, d.get("val_file_pattern"))
    c.val_json_file = _abspath(base_dir, d.get("val_json_file"))
    c.mode = _choice(d, "mode", "train_and_eval", MODES)
    c.train_batch_size = _int(d, "train_batch_size", 8)  # type: ignore[assignment]
    c.eval_batch_size = _int(d, "eval_batch_size", 1)  # type: ignore[assignment]
    c.eval_samples = _int(d, "eval_samples", 100)  # type: ignore[assignment]
    c.num_epochs = _int(d, "num_epochs", 1)  # type: ignore[assignment]
    c.num_examples_per_epoch = _int(d, "num_examples_per_epoch", None)
    c.ckpt = _abspath(base_dir, d.get("ckpt"))
    c.backbone_ckpt = _abspath(base_dir, d.get("backbone_ckpt"))
    c.model_dir = _abspath(base_dir, d.get("model_dir")) or os.path.join(run_dir, "model")
    c.save_checkpoints_steps = _int(d, "save_checkpoints_steps", 100)  # type: ignore[assignment]
    c.log_every_n_steps = _int(d, "log_every_n_steps", 1)  # type: ignore[assignment]
    c.strategy = d.get("strategy")
    if c.strategy not in (None, "gpus"):
        raise _err(f"config strategy={c.strategy!r}: must be null or \"gpus\"")
    xf = d.get("extra_train_flags", {})
    if not isinstance(xf, dict):
        raise _err("config extra_train_flags: expected a mapping of flag name to value")
    c.extra_train_flags = dict(xf)
    c.saved_model_dir = _abspath(base_dir, d.get("saved_model_dir")) or os.path.join(run_dir, "saved_model")
    c.tflite = bool(d.get("tflite", True))
    c.tflite_path = (_abspath(base_dir, d.get("tflite_path"))
                     or os.path.join(run_dir, c.model_name + ".tflite"))
    mst = d.get("min_score_thresh", 0.4)
    if isinstance(mst, bool) or not isinstance(mst, (int, float)) or not 0 < mst < 1:
        raise _err(f"config min_score_thresh={mst!r}: expected a number in (0, 1)")
    c.min_score_thresh = float(mst)
    c.export_batch_size = _int(d, "export_batch_size", 1)  # type: ignore[assignment]
    q = d.get("quantize", [])
    if not isinstance(q, list) or any(k not in QUANTIZE_KINDS for k in q):
        raise _err(f"config quantize={q!r}: a list of {', '.join(QUANTIZE_KINDS)}")
    c.quantize = sorted(set(q))
    c.accuracy = _bool(d, "accuracy", True, "accuracy")
    c.image_size = d.get("image_size")
    if c.image_size is not None:
        parse_image_size(c.image_size)
    c.infer_images = _abspath(base_dir, d.get("infer_images"))
    c.infer_runmode = _choice(d, "infer_runmode", "saved_model_infer", INFER_RUNMODES)
    t = d.get("timeout_s")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
        raise _err(f"config timeout_s={t!r}: expected a positive number of seconds")
    c.timeout_s = t

    b = d.get("benchmark", {}) or {}
    if not isinstance(b, dict):
        raise _err("config benchmark: expected a JSON object")
    unknown = sorted(set(b) - _BENCH_KEYS)
    if unknown:
        raise _err(f"config benchmark: unknown key(s) {', '.join(unknown)}")
    names = b.get("model_names", [c.model_name])
    if not isinstance(names, list) or not names:
        raise _err("config benchmark.model_names: expected a non-empty list")
    for n in names:
        check_model_name(n, "benchmark.model_names")
    modes = b.get("modes", list(DEFAULT_BENCH_MODES))
    if not isinstance(modes, list) or not modes or any(m not in BENCH_MODES for m in modes):
        raise _err(f"config benchmark.modes={modes!r}: a non-empty list of {', '.join(BENCH_MODES)}")
    saved = b.get("saved_models", {c.model_name: c.saved_model_dir})
    if not isinstance(saved, dict):
        raise _err("config benchmark.saved_models: expected a mapping model name -> folder")
    for n in saved:
        check_model_name(n, "benchmark.saved_models")
    c.benchmark = BenchConfig(
        model_names=list(names),
        batch_sizes=_int_list(b, "batch_sizes", [1], 1),
        threads=_int_list(b, "threads", [1], 0),
        modes=list(modes),
        bm_runs=_int(b, "bm_runs", 10, where="benchmark.") or 10,
        hparams=_check_hparams(b.get("hparams", {}), "benchmark.hparams"),
        saved_models={k: _abspath(base_dir, v) or "" for k, v in saved.items()},
        images=_abspath(base_dir, b.get("images")) or c.infer_images,
        host=str(b.get("host") or socket.gethostname()),
        repeats=_int(b, "repeats", 3, where="benchmark.") or 3,
        fill=_bool(b, "fill", True, "benchmark.fill"),
        pairs=_pairs(b.get("pairs")),
    )
    c.explicit = _explicit(d, b)
    return c


def _explicit(d: Mapping[str, Any], b: Mapping[str, Any]) -> List[str]:
    ex = d.get("explicit")
    known = sorted(_KNOWN_KEYS - {"explicit", "benchmark"}) + sorted("benchmark." + k for k in _BENCH_KEYS)
    if ex is None:
        return sorted([k for k in known if k in d and d[k] is not None]
                      + ["benchmark." + k for k in b if b[k] is not None])
    if not isinstance(ex, list) or not all(isinstance(k, str) for k in ex):
        raise _err(f"config explicit={ex!r}: expected a list of config keys")
    unknown = sorted(set(ex) - set(known))
    if unknown:
        raise _err(f"config explicit: unknown key(s) {', '.join(unknown)}")
    return sorted(set(ex))


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise _err(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise _err(f"config {path}: not valid JSON: {e}") from None
    return from_dict(d, os.path.dirname(os.path.abspath(path)), os.path.abspath(path))


# ----------------------------------------------------------------------------- stage checks

def require_train_inputs(c: Config) -> None:
    """What train needs on disk, checked before automl starts."""
    if not c.train_file_pattern:
        raise _err("config train_file_pattern is required for train")
    if not c.num_examples_per_epoch:
        raise _err("config num_examples_per_epoch is required for train "
                   "(steps = num_epochs * num_examples_per_epoch // train_batch_size)")
    if "://" not in c.train_file_pattern and not pattern_files(c.train_file_pattern):
        raise _err(f"train_file_pattern {c.train_file_pattern} matches no file")
    if c.mode == "train_and_eval":
        if not c.val_file_pattern:
            raise _err("config val_file_pattern is required for mode train_and_eval")
        if "://" not in c.val_file_pattern and not pattern_files(c.val_file_pattern):
            raise _err(f"val_file_pattern {c.val_file_pattern} matches no file")
    if c.val_json_file and "://" not in c.val_json_file and not os.path.isfile(c.val_json_file):
        raise _err(f"val_json_file {c.val_json_file} does not exist")
    if c.train_steps < 1:
        raise _err(f"num_epochs={c.num_epochs} x num_examples_per_epoch={c.num_examples_per_epoch} "
                   f"// train_batch_size={c.train_batch_size} is 0 training steps")
    for key in ("ckpt", "backbone_ckpt"):
        p = getattr(c, key)
        if p and "://" not in p and not (os.path.exists(p) or glob.glob(p + "*")):
            raise _err(f"config {key} {p} does not exist")


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The path in model_dir/checkpoint (what tf.train.latest_checkpoint reads), if its files exist."""
    state = os.path.join(model_dir, "checkpoint")
    if not os.path.isfile(state):
        return None
    with open(state, encoding="utf-8") as f:
        for line in f:
            if line.startswith("model_checkpoint_path:"):
                p = line.split(":", 1)[1].strip().strip('"')
                p = p if os.path.isabs(p) else os.path.join(model_dir, p)
                return p if os.path.exists(p + ".index") else None
    return None


def require_checkpoint(c: Config) -> str:
    ck = latest_checkpoint(c.model_dir)
    if not ck:
        raise _err(f"no checkpoint in model_dir {c.model_dir}: run the train stage first")
    return ck


def require_saved_model(path: str, what: str) -> None:
    if not path or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise _err(f"{what}: no saved_model at {path} (saved_model.pb missing): run the export stage first")


def require_images(spec: Optional[str], what: str) -> List[str]:
    if not spec:
        raise _err(f"config {what} is required (a folder or glob of .jpg/.png images)")
    files = image_files(spec)
    if not files:
        raise _err(f"{what} {spec} holds no .jpg/.jpeg/.png image")
    return files
