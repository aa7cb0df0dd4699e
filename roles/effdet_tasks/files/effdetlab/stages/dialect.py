"""Which automl code runs, how to invoke its scripts, and with which flag names.

Code sources:
  pypi  tflite-model-maker's vendored copy: `python -m <VENDORED>.main` / `.model_inspect`
  git   a checkout of google/automl: `python <dir>/main.py` (cwd and PYTHONPATH = <dir>,
        the scripts import their siblings as top-level modules)

Dialects (one set of our config keys drives both):
  "2020-05"  automl 9f1cf16 (2020-05-19, TF 2.1): --training_file_pattern,
             --validation_file_pattern and --use_tpu (passed as --use_tpu=False)
  "current"  later commits and the vendored copy: --train_file_pattern,
             --val_file_pattern, no --use_tpu
"auto" reads the flag definitions (flags.DEFINE_*('name', ...)) of the scripts that
will run and picks the names they define. What happens to a flag the running script
lacks is FLAGS' call, row by row: refused (the stage needs it), dropped with a line in
the stage's output when its value is only our default and refused when the config set
it explicitly (--save_checkpoints_steps, which 9f1cf16's main.py lacks), or left out and
reported in the stage's result (--bm_runs, --threads, --tflite_path, --logdir).
"""

import os
import re
import subprocess
from typing import Any, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from effdetlab._records import Record
from effdetlab.stages.config import Config, parse_image_size
from effdetlab.stages.errors import StageInputError

VENDORED = "tensorflow_examples.lite.model_maker.third_party.efficientdet"
SCRIPTS = ("main", "model_inspect")

_DEFINE = re.compile(r"""DEFINE_\w+\(\s*(?:name\s*=\s*)?['"](\w+)['"]""")


class Dialect(NamedTuple):  # immutable, like the frozen dataclass it replaces
    name: str
    train_pattern_flag: str
    val_pattern_flag: str
    use_tpu_flag: bool
    # Flags each script defines, when known (read from its source); None = assume all.
    main_flags: Optional[FrozenSet[str]] = None
    inspect_flags: Optional[FrozenSet[str]] = None
    # main.py turns absl's logging down to WARNING before parsing its flags (automl 9f1cf16
    # does): the estimator's "loss = ..., step = ..." INFO lines, which the train stage's
    # progress comes from, are then never written unless --verbosity=0 (absl's own flag)
    # turns them back on. (The current code sets WARNING too, yet its log has the INFO lines:
    # tests/fixtures/automl-output; it is left as it is.)
    main_quiet: bool = False
    inspect_quiet: bool = False  # the same for model_inspect.py (its "writing file to" lines)

    def main_has(self, flag: str) -> bool:
        return self.main_flags is None or flag in self.main_flags

    def inspect_has(self, flag: str) -> bool:
        return self.inspect_flags is None or flag in self.inspect_flags


CURRENT = Dialect("current", "train_file_pattern", "val_file_pattern", False)
D2020 = Dialect("2020-05", "training_file_pattern", "validation_file_pattern", True)
NAMED = {"current": CURRENT, "2020-05": D2020}

# ----------------------------------------------------------------------------- flags

# What happens when the running script lacks a flag:
REFUSE = "refuse"                # the stage cannot do its job without it
DROP_DEFAULT = "drop-if-default"  # dropped, with a line, when only our default; refused when explicit
OPTIONAL = "optional"            # left out and reported in the stage's result, whatever the value


class FlagRule(NamedTuple):
    script: str                  # "main" | "model_inspect"
    flag: str                    # automl's flag name
    key: Optional[str]           # our config key that sets it (None: the stage sets it)
    variables: Tuple[str, ...]   # the effdet_tasks variables behind it (the role writes the key)
    dialects: Tuple[str, ...]    # the dialects whose script defines the flag
    missing: str                 # REFUSE | DROP_DEFAULT | OPTIONAL


_BOTH = ("current", "2020-05")
_CUR = ("current",)
_OLD = ("2020-05",)

# Every flag the stages pass. "dialects" is what the scripts define: "2020-05" is automl
# 9f1cf16 (efficientdet/main.py and model_inspect.py read at that commit), "current" the
# copy in tflite-model-maker 0.4.3 (tests/effdet/test_stages.py reads both against this).
FLAGS: Tuple[FlagRule, ...] = (
    FlagRule("main", "mode", "mode", ("effdet_tasks_mode",), _BOTH, REFUSE),
    FlagRule("main", "model_name", "model_name", ("effdet_tasks_model_name",), _BOTH, REFUSE),
    FlagRule("main", "model_dir", "model_dir", (), _BOTH, REFUSE),
    FlagRule("main", "train_file_pattern", "train_file_pattern", ("effdet_tasks_train_set",), _CUR, REFUSE),
    FlagRule("main", "training_file_pattern", "train_file_pattern", ("effdet_tasks_train_set",), _OLD, REFUSE),
    FlagRule("main", "val_file_pattern", "val_file_pattern", ("effdet_tasks_val_set",), _CUR, REFUSE),
    FlagRule("main", "validation_file_pattern", "val_file_pattern", ("effdet_tasks_val_set",), _OLD, REFUSE),
    FlagRule("main", "val_json_file", "val_json_file", ("effdet_tasks_val_set",), _BOTH, REFUSE),
    FlagRule("main", "train_batch_size", "train_batch_size", ("effdet_tasks_train_batch_size",), _BOTH, REFUSE),
    FlagRule("main", "eval_batch_size", "eval_batch_size", ("effdet_tasks_eval_batch_size",), _BOTH, REFUSE),
    FlagRule("main", "eval_samples", "eval_samples", ("effdet_tasks_eval_samples",), _BOTH, REFUSE),
    FlagRule("main", "num_epochs", "num_epochs", ("effdet_tasks_num_epochs",), _BOTH, REFUSE),
    FlagRule("main", "num_examples_per_epoch", "num_examples_per_epoch",
             ("effdet_tasks_num_examples_per_epoch",), _BOTH, REFUSE),
    # 9f1cf16 checkpoints on the estimator's own schedule (RunConfig: every 10 minutes)
    FlagRule("main", "save_checkpoints_steps", "save_checkpoints_steps",
             ("effdet_tasks_save_checkpoints_steps",), _CUR, DROP_DEFAULT),
    # our 1 logs every step; automl's own default (100) logs less often
    FlagRule("main", "iterations_per_loop", "log_every_n_steps", (), _BOTH, DROP_DEFAULT),
    FlagRule("main", "ckpt", "ckpt", ("effdet_tasks_ckpt",), _BOTH, REFUSE),
    FlagRule("main", "backbone_ckpt", "backbone_ckpt", (), _BOTH, REFUSE),
    FlagRule("main", "strategy", "strategy", (), _CUR, REFUSE),
    FlagRule("main", "use_tpu", None, (), _OLD, REFUSE),  # passed only where defined
    FlagRule("main", "hparams", "hparams", ("effdet_tasks_hparams",), _BOTH, REFUSE),
    FlagRule("model_inspect", "runmode", None, (), _BOTH, REFUSE),
    FlagRule("model_inspect", "model_name", "model_name",
             ("effdet_tasks_model_name", "effdet_tasks_benchmark_models"), _BOTH, REFUSE),
    FlagRule("model_inspect", "ckpt_path", None, (), _BOTH, REFUSE),
    FlagRule("model_inspect", "saved_model_dir", "saved_model_dir", (), _BOTH, REFUSE),
    # export.json then says TFLite is not available
    FlagRule("model_inspect", "tflite_path", "tflite", ("effdet_tasks_tflite",), _BOTH, OPTIONAL),
    # 9f1cf16's default is None (the hparams' threshold): no stand-in for ours
    FlagRule("model_inspect", "min_score_thresh", "min_score_thresh", ("effdet_tasks_min_score_thresh",),
             _BOTH, REFUSE),
    FlagRule("model_inspect", "batch_size", "benchmark.batch_sizes", ("effdet_tasks_benchmark_batch_sizes",),
             _BOTH, REFUSE),
    # the benchmark record then says threads_via "none", or lists it in flags_not_supported
    FlagRule("model_inspect", "threads", "benchmark.threads", ("effdet_tasks_benchmark_threads",),
             _BOTH, OPTIONAL),
    FlagRule("model_inspect", "bm_runs", "benchmark.bm_runs", ("effdet_tasks_benchmark_runs",),
             _BOTH, OPTIONAL),
    FlagRule("model_inspect", "logdir", None, (), _BOTH, OPTIONAL),
    FlagRule("model_inspect", "input_image", "infer_images", ("effdet_tasks_infer_src",), _BOTH, REFUSE),
    FlagRule("model_inspect", "output_image_dir", None, (), _BOTH, REFUSE),
    FlagRule("model_inspect", "hparams", "hparams",
             ("effdet_tasks_hparams", "effdet_tasks_benchmark_hparams", "effdet_tasks_image_size"), _BOTH, REFUSE),
)
_RULES = {(r.script, r.flag): r for r in FLAGS}


def flag_rule(script: str, flag: str) -> Optional[FlagRule]:
    return _RULES.get((script, flag))


def script_has(d: Dialect, script: str, flag: str) -> bool:
    """Whether the script that runs defines --flag: read from its source when it could be
    read, else what FLAGS records for the dialect (a flag FLAGS does not know: assumed)."""
    known = d.main_flags if script == "main" else d.inspect_flags
    if known is not None:
        return flag in known
    rule = flag_rule(script, flag)
    return rule is None or d.name in rule.dialects


def _missing(c: Config, d: Dialect, script: str, flag: str, value: Any) -> str:
    """For a flag the script lacks: "drop" (with a line) or "optional" (reported); raises when
    it cannot go."""
    rule = flag_rule(script, flag)
    where = f"automl {d.name}'s {script}.py has no --{flag} flag"
    if rule is None or rule.missing == REFUSE:
        raise StageInputError(f"{where}, which this stage needs; use automl code that has it")
    if rule.missing == OPTIONAL:
        return "optional"
    if not c.is_explicit(rule.key):
        return "drop"
    set_by = f"{rule.key}={value!r}" + (f" ({', '.join(rule.variables)})" if rule.variables else "")
    raise StageInputError(f"{where}, and {set_by} was set explicitly: unset it (our default is dropped "
                          f"where the flag is missing), or use automl code that has the flag")


def dropped_line(d: Dialect, script: str, flag: str) -> str:
    return f"--{flag} dropped: automl {d.name}'s {script}.py has no such flag; it was only our default"


_QUIET = re.compile(r"^\s*logging\.set_verbosity\(\s*logging\.(WARNING|WARN|ERROR|FATAL)\s*\)", re.M)


def defined_flags(source_text: str) -> FrozenSet[str]:
    return frozenset(_DEFINE.findall(source_text))


def detect(main_source: str, inspect_source: str = "") -> Dialect:
    """The dialect of a main.py (and model_inspect.py) from their flag definitions."""
    mf = defined_flags(main_source)
    inf = defined_flags(inspect_source) if inspect_source else None
    if "train_file_pattern" in mf:
        base = CURRENT
    elif "training_file_pattern" in mf:
        base = D2020
    else:
        raise StageInputError("automl main.py defines neither --train_file_pattern nor "
                              "--training_file_pattern: not EfficientDet's main.py?")
    return Dialect(base.name, base.train_pattern_flag, base.val_pattern_flag,
                   "use_tpu" in mf, mf, inf, base is D2020 and bool(_QUIET.search(main_source)),
                   base is D2020 and bool(_QUIET.search(inspect_source)))


class CodeSource(Record):
    def __init__(self, kind: str, python: str, script_dir: Optional[str] = None,
                 files: Optional[Dict[str, str]] = None) -> None:
        self.kind = kind                # "pypi" | "git"
        self.python = python
        self.script_dir = script_dir    # git: folder with main.py
        # script -> source file (when found)
        self.files: Dict[str, str] = {} if files is None else files

    def argv(self, script: str) -> List[str]:
        if self.kind == "pypi":
            return [self.python, "-m", f"{VENDORED}.{script}"]
        assert self.script_dir
        return [self.python, os.path.join(self.script_dir, script + ".py")]

    @property
    def cwd(self) -> Optional[str]:
        return self.script_dir if self.kind == "git" else None

    def env(self) -> Dict[str, str]:
        return {"PYTHONPATH": self.script_dir} if self.kind == "git" and self.script_dir else {}


def locate(c: Config) -> CodeSource:
    """Find the scripts (no TensorFlow import)."""
    if c.code_source == "git":
        d = c.code_dir or ""
        for cand in (d, os.path.join(d, "efficientdet")):
            if os.path.isfile(os.path.join(cand, "main.py")) and os.path.isfile(
                    os.path.join(cand, "model_inspect.py")):
                return CodeSource("git", c.python, cand,
                                  {s: os.path.join(cand, s + ".py") for s in SCRIPTS})
        raise StageInputError(f"code_dir {d}: no main.py + model_inspect.py there "
                              f"(nor in {os.path.join(d, 'efficientdet')})")
    code = ("import importlib.util as u,sys\n"
            "for s in sys.argv[1:]:\n"
            " p=u.find_spec(s); print(p.origin if p else '')\n")
    try:
        out = subprocess.run([c.python, "-c", code] + [f"{VENDORED}.{s}" for s in SCRIPTS],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=120)
    except OSError as e:
        raise StageInputError(f"python {c.python}: cannot run: {e}") from None
    paths = out.stdout.split("\n")[:len(SCRIPTS)] if out.returncode == 0 else []
    if len(paths) != len(SCRIPTS) or not all(paths):
        raise StageInputError(f"code_source pypi: {c.python} cannot find {VENDORED} "
                              f"(install tflite-model-maker==0.4.3 --no-deps)")
    return CodeSource("pypi", c.python, None, dict(zip(SCRIPTS, paths)))


def resolve(c: Config, src: CodeSource) -> Dialect:
    """config dialect "auto" reads the scripts; a named dialect is taken as given but
    still limited to the flags the scripts define, when they can be read."""
    texts = {}
    for s, p in src.files.items():
        try:
            with open(p, encoding="utf-8") as f:
                texts[s] = f.read()
        except OSError:
            texts[s] = ""
    if c.dialect == "auto":
        if not texts.get("main"):
            raise StageInputError("dialect auto: cannot read automl's main.py; set dialect")
        return detect(texts["main"], texts.get("model_inspect", ""))
    d = NAMED[c.dialect]
    if texts.get("main"):
        det = detect(texts["main"], texts.get("model_inspect", ""))
        if det.name != d.name:
            raise StageInputError(f"dialect {c.dialect!r} does not match the code: its main.py "
                                  f"defines --{det.train_pattern_flag} (dialect {det.name!r})")
        return det
    return d


# ----------------------------------------------------------------------------- values

def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def hparams_string(h: Mapping[str, Any]) -> str:
    """{k: v} -> 'k=v,k2=v2' (automl's --hparams), keys in the given order."""
    return ",".join(f"{k}={fmt_value(v)}" for k, v in h.items())


# The label map hparam: the current code's `label_map` ({id: name}, a dict or a YAML file,
# or one of the named maps below) is automl 9f1cf16's `label_id_mapping` (the same {id: name}
# dict or YAML file, no named maps: None means COCO's ids). 9f1cf16's hparams refuse an
# unknown key ("Key `label_map` does not exist for overriding"), so it is renamed there.
NAMED_LABEL_MAPS = ("coco", "voc", "waymo")


def dialect_hparams(d: Dialect, h: Mapping[str, Any]) -> Dict[str, Any]:
    """The hparams as the dialect's hparams_config names them (keys in the given order)."""
    if d.name != D2020.name or "label_map" not in h:
        return dict(h)
    out: Dict[str, Any] = {}
    for k, v in h.items():
        if k != "label_map":
            out[k] = v
        elif v == "coco":
            continue  # 9f1cf16's default (label_id_mapping None) is COCO's
        elif isinstance(v, str) and v in NAMED_LABEL_MAPS:
            raise StageInputError(
                f"hparams.label_map {v!r}: automl {d.name} knows no named label maps (only COCO's ids, "
                f"its default); give a YAML file of id: name (the data stage writes label_map.yaml)")
        else:
            out["label_id_mapping"] = v
    return out


def _flag(name: str, v: Any) -> str:
    return f"--{name}={fmt_value(v)}"


def child_env(c: Config, src: CodeSource, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment *additions* for automl's process."""
    env: Dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if c.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    env.update(src.env())
    env.update(c.env)
    if extra:
        env.update(extra)
    return env


# ----------------------------------------------------------------------------- commands

def train_plan(c: Config, src: CodeSource, d: Dialect) -> Tuple[List[str], List[str]]:
    """main.py's argv, and a line for each flag dropped because the script lacks it."""
    pairs: List[Tuple[str, Any]] = [
        ("mode", c.mode), ("model_name", c.model_name), ("model_dir", c.model_dir),
        (d.train_pattern_flag, c.train_file_pattern)]
    if c.mode == "train_and_eval" or c.val_file_pattern:
        pairs.append((d.val_pattern_flag, c.val_file_pattern))
    if c.val_json_file:
        pairs.append(("val_json_file", c.val_json_file))
    pairs += [("train_batch_size", c.train_batch_size), ("eval_batch_size", c.eval_batch_size),
              ("eval_samples", c.eval_samples), ("num_epochs", c.num_epochs),
              ("num_examples_per_epoch", c.num_examples_per_epoch),
              ("save_checkpoints_steps", c.save_checkpoints_steps),
              ("iterations_per_loop", c.log_every_n_steps)]
    if c.ckpt:
        pairs.append(("ckpt", c.ckpt))
    if c.backbone_ckpt:
        pairs.append(("backbone_ckpt", c.backbone_ckpt))
    if c.strategy:
        pairs.append(("strategy", c.strategy))
    if d.use_tpu_flag:
        pairs.append(("use_tpu", "False"))  # automl's default is True
    hparams = dialect_hparams(d, c.hparams)
    if hparams:
        pairs.append(("hparams", hparams_string(hparams)))
    a = src.argv("main")
    if d.main_quiet:
        a.append("--verbosity=0")
    notes = []
    for name, v in pairs:
        if script_has(d, "main", name):
            a.append(_flag(name, v))
        elif _missing(c, d, "main", name, v) == "drop":
            notes.append(dropped_line(d, "main", name))
    for name, v in c.extra_train_flags.items():  # verbatim: always the config's own
        if not script_has(d, "main", name):
            raise StageInputError(f"automl {d.name}'s main.py has no --{name} flag (extra_train_flags); "
                                  f"remove it from the config")
        a.append(_flag(name, v))
    return a, notes


def train_cmd(c: Config, src: CodeSource, d: Dialect) -> List[str]:
    return train_plan(c, src, d)[0]


def _inspect(c: Config, src: CodeSource, d: Dialect, runmode: str, model_name: str,
             pairs: List[Tuple[str, Any]], hparams: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """model_inspect argv, and the optional flags left out because the script lacks them
    (a flag the stage needs is refused: FLAGS)."""
    a = src.argv("model_inspect") + [_flag("runmode", runmode), _flag("model_name", model_name)]
    if d.inspect_quiet:
        a.append("--verbosity=0")
    dropped = []
    for k, v in pairs:
        if v is None:
            continue
        if script_has(d, "model_inspect", k):
            a.append(_flag(k, v))
        else:
            _missing(c, d, "model_inspect", k, v)
            dropped.append(k)
    named = dialect_hparams(d, hparams)
    if named:
        a.append(_flag("hparams", hparams_string(named)))
    return a, dropped


def export_cmd(c: Config, src: CodeSource, d: Dialect, ckpt_path: str,
               logdir: str) -> Tuple[List[str], List[str]]:
    return _inspect(c, src, d, "saved_model", c.model_name, [
        ("ckpt_path", ckpt_path), ("saved_model_dir", c.saved_model_dir),
        ("tflite_path", c.tflite_path if c.tflite else None),
        ("min_score_thresh", c.min_score_thresh), ("batch_size", c.export_batch_size),
        ("logdir", logdir)], c.hparams)


def bm_cmd(c: Config, src: CodeSource, d: Dialect, model_name: str, batch: int, threads: int,
           logdir: str) -> Tuple[List[str], List[str]]:
    return _inspect(c, src, d, "bm", model_name, [
        ("threads", threads), ("bm_runs", c.benchmark.bm_runs), ("batch_size", batch),
        ("logdir", logdir)], bm_hparams(c, model_name))


def bm_hparams(c: Config, model_name: str) -> Dict[str, Any]:
    """bm's --hparams: for an exported (trained) model, its class count and inference image
    size first, so that bm times the network the e2e and TFLite modes run; then
    benchmark.hparams over them."""
    h: Dict[str, Any] = {}
    if model_name in c.benchmark.saved_models:
        ih = infer_hparams(c)
        h.update({k: ih[k] for k in ("num_classes", "image_size") if k in ih})
    h.update(c.benchmark.hparams)
    return h


def e2e_cmd(c: Config, src: CodeSource, d: Dialect, model_name: str, batch: int,
            saved_model_dir: str, images_glob: str) -> Tuple[List[str], List[str]]:
    return _inspect(c, src, d, "saved_model_benchmark", model_name, [
        ("saved_model_dir", saved_model_dir), ("input_image", images_glob),
        ("batch_size", batch)], infer_hparams(c))


def e2e_thread_env(threads: int) -> Dict[str, str]:
    """saved_model_benchmark builds a default-config Session: threads only via TF's env."""
    if threads <= 0:
        return {}
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}


def infer_hparams(c: Config) -> Dict[str, Any]:
    h = dict(c.hparams)
    if c.image_size is not None:
        h["image_size"] = c.image_size
    return h


def infer_cmd(c: Config, src: CodeSource, d: Dialect, images_glob: str, out_dir: str,
              ckpt_path: Optional[str]) -> Tuple[List[str], List[str]]:
    pairs: List[Tuple[str, Any]] = [("input_image", images_glob), ("output_image_dir", out_dir),
                                    ("min_score_thresh", c.min_score_thresh), ("batch_size", 1)]
    if c.infer_runmode == "saved_model_infer":
        pairs.insert(0, ("saved_model_dir", c.saved_model_dir))
    else:
        pairs.insert(0, ("ckpt_path", ckpt_path))
    return _inspect(c, src, d, c.infer_runmode, c.model_name, pairs, infer_hparams(c))


def image_size_of(c: Config, hparams: Mapping[str, Any], model_name: str) -> List[int]:
    """[height, width] the model will use (hparams override, else automl's default)."""
    if "image_size" in hparams:
        return parse_image_size(hparams["image_size"])
    defaults = {"efficientdet-d0": 512, "efficientdet-d1": 640, "efficientdet-d2": 768,
                "efficientdet-d3": 896, "efficientdet-d4": 1024, "efficientdet-d5": 1280,
                "efficientdet-d6": 1280, "efficientdet-d7": 1536, "efficientdet-d7x": 1536}
    s = defaults[model_name]
    return [s, s]
