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
will run and picks the names they define; optional flags a script does not define
(e.g. --bm_runs, --tflite_path in some commits) are left out and reported.
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

    def main_has(self, flag: str) -> bool:
        return self.main_flags is None or flag in self.main_flags

    def inspect_has(self, flag: str) -> bool:
        return self.inspect_flags is None or flag in self.inspect_flags


CURRENT = Dialect("current", "train_file_pattern", "val_file_pattern", False)
D2020 = Dialect("2020-05", "training_file_pattern", "validation_file_pattern", True)
NAMED = {"current": CURRENT, "2020-05": D2020}


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
                   "use_tpu" in mf, mf, inf)


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

def train_cmd(c: Config, src: CodeSource, d: Dialect) -> List[str]:
    a = src.argv("main")
    a += [_flag("mode", c.mode), _flag("model_name", c.model_name), _flag("model_dir", c.model_dir),
          _flag(d.train_pattern_flag, c.train_file_pattern)]
    if c.mode == "train_and_eval" or c.val_file_pattern:
        a.append(_flag(d.val_pattern_flag, c.val_file_pattern))
    if c.val_json_file:
        a.append(_flag("val_json_file", c.val_json_file))
    a += [_flag("train_batch_size", c.train_batch_size), _flag("eval_batch_size", c.eval_batch_size),
          _flag("eval_samples", c.eval_samples), _flag("num_epochs", c.num_epochs),
          _flag("num_examples_per_epoch", c.num_examples_per_epoch),
          _flag("save_checkpoints_steps", c.save_checkpoints_steps),
          _flag("iterations_per_loop", c.log_every_n_steps)]
    if c.ckpt:
        a.append(_flag("ckpt", c.ckpt))
    if c.backbone_ckpt:
        a.append(_flag("backbone_ckpt", c.backbone_ckpt))
    if c.strategy:
        a.append(_flag("strategy", c.strategy))
    if d.use_tpu_flag:
        a.append("--use_tpu=False")
    if c.hparams:
        a.append(_flag("hparams", hparams_string(c.hparams)))
    for k, v in c.extra_train_flags.items():
        a.append(_flag(k, v))
    for f in a:
        if f.startswith("--"):
            name = f[2:].split("=", 1)[0]
            if not d.main_has(name):
                raise StageInputError(f"this automl main.py has no --{name} flag "
                                      f"(dialect {d.name}); remove it from the config")
    return a


def _inspect(src: CodeSource, d: Dialect, runmode: str, model_name: str,
             pairs: List[Tuple[str, Any]], hparams: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """model_inspect argv, and the optional flags left out because the script lacks them."""
    a = src.argv("model_inspect") + [_flag("runmode", runmode), _flag("model_name", model_name)]
    dropped = []
    for k, v in pairs:
        if v is None:
            continue
        if d.inspect_has(k):
            a.append(_flag(k, v))
        else:
            dropped.append(k)
    if hparams:
        a.append(_flag("hparams", hparams_string(hparams)))
    return a, dropped


def export_cmd(c: Config, src: CodeSource, d: Dialect, ckpt_path: str,
               logdir: str) -> Tuple[List[str], List[str]]:
    return _inspect(src, d, "saved_model", c.model_name, [
        ("ckpt_path", ckpt_path), ("saved_model_dir", c.saved_model_dir),
        ("tflite_path", c.tflite_path if c.tflite else None),
        ("min_score_thresh", c.min_score_thresh), ("batch_size", c.export_batch_size),
        ("logdir", logdir)], c.hparams)


def bm_cmd(c: Config, src: CodeSource, d: Dialect, model_name: str, batch: int, threads: int,
           logdir: str) -> Tuple[List[str], List[str]]:
    return _inspect(src, d, "bm", model_name, [
        ("threads", threads), ("bm_runs", c.benchmark.bm_runs), ("batch_size", batch),
        ("logdir", logdir)], c.benchmark.hparams)


def e2e_cmd(c: Config, src: CodeSource, d: Dialect, model_name: str, batch: int,
            saved_model_dir: str, images_glob: str) -> Tuple[List[str], List[str]]:
    return _inspect(src, d, "saved_model_benchmark", model_name, [
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
    return _inspect(src, d, c.infer_runmode, c.model_name, pairs, infer_hparams(c))


def image_size_of(c: Config, hparams: Mapping[str, Any], model_name: str) -> List[int]:
    """[height, width] the model will use (hparams override, else automl's default)."""
    if "image_size" in hparams:
        return parse_image_size(hparams["image_size"])
    defaults = {"efficientdet-d0": 512, "efficientdet-d1": 640, "efficientdet-d2": 768,
                "efficientdet-d3": 896, "efficientdet-d4": 1024, "efficientdet-d5": 1280,
                "efficientdet-d6": 1280, "efficientdet-d7": 1536, "efficientdet-d7x": 1536}
    s = defaults[model_name]
    return [s, s]
