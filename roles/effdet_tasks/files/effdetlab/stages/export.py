"""export: model_inspect --runmode=saved_model (+ --tflite_path), then load and run both.

run_dir/export.json:
  {"ok", "model_name", "checkpoint", "min_score_thresh", "image_size",
   "saved_model": {"ok", "dir", "detections_shape", ...},
   "frozen_pb": path | null,
   "tflite": {"ok": true, "path", "bytes", "detections_shape"} | {"ok": false, "reason"},
   "quantized": {kind: {"ok", "path", "bytes", "quantization", ...}}   (config quantize)
   "accuracy": {"ok", "images", "float": {"AP", "AP50"}, kind: {...}, "ap_change": {kind: dAP}}
   "command", "duration_s", "log"}
Exit 0 when the saved_model loads and returns detections (a TFLite failure is reported in
export.json and on stderr, not fatal); 1 when automl fails to export; 2 bad input.
"""

import json
import os
import shutil
import subprocess
from typing import Any, Dict, List

from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages.config import Config
from effdetlab.stages.errors import StageInputError
from effdetlab.stages.parsers import last_error
from effdetlab.stages.runner import eprint, run_logged, shell_line, with_pkg_path, write_json

def helper(c: Config, module: str, args: List[str], marker: str, what: str,
           timeout_s: float = 600) -> Dict[str, Any]:
    """Run one of our effdetlab.stages helpers in automl's interpreter (where TensorFlow is);
    returns the JSON it printed after `marker`, or {"ok": false, "reason"}."""
    env = dict(with_pkg_path(os.environ), TF_CPP_MIN_LOG_LEVEL="2")
    if c.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    try:
        out = subprocess.run([c.python, "-m", module] + args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, env=env,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"{what} took over {timeout_s:.0f} s"}
    for line in out.stdout.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line.split(" ", 1)[1])
    return {"ok": False, "reason": f"{what} exited {out.returncode}: {last_error(out.stderr)}"}


def verify(c: Config, kind: str, path: str, hw: List[int]) -> Dict[str, Any]:
    return helper(c, "effdetlab.stages.verify",
                  [kind, path, str(hw[0]), str(hw[1]), str(c.export_batch_size)],
                  "EFFDETLAB_VERIFY", f"loading the {kind}")


def quantized_path(c: Config, kind: str) -> str:
    stem, ext = os.path.splitext(c.tflite_path)
    return f"{stem}-{kind}{ext or '.tflite'}"


def calibration_images(c: Config, folder: str, limit: int = 64) -> List[str]:
    """Up to `limit` training images, written from the TFRecords, to calibrate int8."""
    return helper(c, "effdetlab.stages.accuracy", ["--records", c.train_file_pattern or "",
                                                   "--dump", folder, "--limit", str(limit)],
                  "EFFDETLAB_ACCURACY", "reading the calibration images").get("files", [])


def quantize(c: Config, float_tfl: Dict[str, Any], hw: List[int]) -> Dict[str, Dict[str, Any]]:
    """The quantized .tflite files (config quantize) from the exported saved_model."""
    out: Dict[str, Dict[str, Any]] = {}
    for kind in c.quantize:
        path = quantized_path(c, kind)
        if os.path.isfile(path):
            os.remove(path)
        if not float_tfl.get("ok"):
            out[kind] = {"ok": False, "unsupported": True, "path": None,
                         "reason": f"no float .tflite to start from: {float_tfl.get('reason')}"}
            continue
        args = [c.saved_model_dir, path, "--kind", kind, "--height", str(hw[0]), "--width", str(hw[1])]
        if kind == "int8":
            cal = calibration_images(c, os.path.join(c.run_dir, ".calibration"))
            if not cal:
                out[kind] = {"ok": False, "path": None,
                             "reason": f"no calibration images in {c.train_file_pattern}"}
                continue
            args += ["--calibration"] + cal
        q = helper(c, "effdetlab.stages.quantize", args, "EFFDETLAB_QUANTIZE",
                   f"{kind} quantization", timeout_s=c.timeout_s or 1800)
        if q.get("ok"):
            q.update({k: v for k, v in verify(c, "tflite", path, hw).items() if k != "bytes"})
        q["path"] = path if q.get("ok") else None
        out[kind] = q
    return out


def accuracy(c: Config, float_tfl: Dict[str, Any], quant: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """COCO mAP of the float and the quantized .tflite files on the validation set."""
    files = {k: q["path"] for k, q in quant.items() if q.get("ok")}
    if not c.accuracy or not files:
        return {"ok": False, "reason": "no quantized .tflite to compare" if c.accuracy else
                "not requested (config accuracy: false)"}
    if not (c.val_file_pattern and c.val_json_file and os.path.isfile(c.val_json_file)):
        return {"ok": False, "reason": "no validation set (val_file_pattern and val_json_file)"}
    files = {"float": c.tflite_path, **files}
    res = helper(c, "effdetlab.stages.accuracy",
                 ["--records", c.val_file_pattern, "--gt-json", c.val_json_file] + list(files.values()),
                 "EFFDETLAB_ACCURACY", "the mAP evaluation", timeout_s=c.timeout_s or 1800)
    if not res.get("ok"):
        return res
    by_kind = {k: res["models"][p] for k, p in files.items()}
    return {"ok": True, "images": res["images"], "set": c.val_file_pattern, **by_kind,
            "ap_change": {k: round(v["AP"] - by_kind["float"]["AP"], 5)
                          for k, v in by_kind.items() if k != "float"}}


def _clear_old(c: Config) -> None:
    d = c.saved_model_dir
    if os.path.isdir(d) and os.listdir(d):
        if not os.path.isfile(os.path.join(d, "saved_model.pb")):
            raise StageInputError(f"saved_model_dir {d} exists, is not empty and holds no saved_model; "
                                  f"refusing to replace it")
        shutil.rmtree(d)  # automl's SavedModelBuilder refuses an existing folder
    elif os.path.isdir(d):
        os.rmdir(d)
    for path in [c.tflite_path] + [quantized_path(c, k) for k in c.quantize]:
        if os.path.isfile(path):
            os.remove(path)


def run(c: Config) -> int:
    ckpt = cfgmod.require_checkpoint(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    logdir = os.path.join(c.run_dir, ".inspect-logdir", "export")  # model_inspect rm -rf's it
    argv, dropped = dl.export_cmd(c, src, d, c.model_dir, logdir)
    env = dl.child_env(c, src)
    os.makedirs(c.run_dir, exist_ok=True)
    _clear_old(c)
    log = os.path.join(c.run_dir, "export.log")
    res = run_logged(argv, env, log, cwd=src.cwd, timeout_s=c.timeout_s, header="export")
    hw = dl.image_size_of(c, c.hparams, c.model_name)
    summary: Dict[str, Any] = {
        "stage": "export", "model_name": c.model_name, "checkpoint": ckpt,
        "min_score_thresh": c.min_score_thresh, "image_size": hw, "batch_size": c.export_batch_size,
        "exit_code": res.returncode, "duration_s": round(res.duration_s, 1), "log": log,
        "code_source": src.kind, "dialect": d.name, "command": shell_line(argv, env, src.cwd)}
    have_sm = os.path.isfile(os.path.join(c.saved_model_dir, "saved_model.pb"))
    if have_sm:
        sm = verify(c, "saved_model", c.saved_model_dir, hw)
    else:
        sm = {"ok": False, "reason": ("timed out" if res.timed_out else last_error(res.output))}
    sm["dir"] = c.saved_model_dir
    summary["saved_model"] = sm
    frozen = os.path.join(c.saved_model_dir, c.model_name + "_frozen.pb")
    summary["frozen_pb"] = frozen if os.path.isfile(frozen) else None

    tfl: Dict[str, Any]
    if not c.tflite:
        tfl = {"ok": False, "reason": "not requested (config tflite: false)"}
    elif "tflite_path" in dropped:
        tfl = {"ok": False, "reason": "this automl model_inspect.py has no --tflite_path flag "
                                      f"(dialect {d.name}); TFLite export is not available"}
    elif os.path.isfile(c.tflite_path):
        tfl = verify(c, "tflite", c.tflite_path, hw)
        if not tfl.get("ok"):
            tfl["reason"] = "converted, but the TFLite interpreter cannot run it: " + str(tfl.get("reason"))
    elif not have_sm:
        tfl = {"ok": False, "reason": "saved_model export failed first"}
    else:
        tfl = {"ok": False, "reason": "TFLite conversion failed with this TensorFlow: "
                                      + last_error(res.output)}
    tfl["path"] = c.tflite_path if c.tflite else None
    summary["tflite"] = tfl
    if c.quantize:
        summary["quantized"] = quantize(c, tfl, hw)
        summary["accuracy"] = accuracy(c, tfl, summary["quantized"])
    summary["ok"] = bool(sm.get("ok"))
    write_json(os.path.join(c.run_dir, "export.json"), summary)
    print(json.dumps({"stage": "export", "ok": summary["ok"], "saved_model": sm.get("ok"),
                      "tflite": {k: tfl.get(k) for k in ("ok", "reason") if k in tfl},
                      "duration_s": summary["duration_s"]}), flush=True)
    if not tfl.get("ok") and c.tflite:
        eprint(f"effdetlab.stages export: tflite: {json.dumps(tfl)}")
    if not summary["ok"]:
        eprint(f"effdetlab.stages export: saved_model export failed: {sm.get('reason')} (see {log})")
        return 1
    return 0
