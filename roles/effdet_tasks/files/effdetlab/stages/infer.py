"""infer: model_inspect --runmode=saved_model_infer (or infer, from the checkpoint).

Annotated images land in run_dir/infer/<input stem>.jpg; run_dir/infer.json maps them:
  {"ok", "runmode", "image_size", "min_score_thresh", "images": [{"input", "output",
   "width", "height"}], "command", "duration_s", "log"}
automl names its outputs 0.jpg, 1.jpg, ... in its glob order; saved_model_infer prints that
order ("all_files= [...]"), `infer` does not, so there each output is matched to the input
it was drawn on (smallest pixel difference).
"""

import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages.benchmark import stage_images
from effdetlab.stages.config import Config
from effdetlab.stages.parsers import last_error, parse_infer
from effdetlab.stages.runner import eprint, run_logged, shell_line, write_json


def command(c: Config, src: dl.CodeSource, d: dl.Dialect,
            images_glob: Optional[str] = None) -> Tuple[List[str], List[str]]:
    raw = os.path.join(c.run_dir, "infer", "_raw")
    glob_ = images_glob or os.path.join(c.run_dir, "infer", "_inputs", "*")
    return dl.infer_cmd(c, src, d, glob_, raw, c.model_dir)


def _match_by_pixels(inputs: List[str], outputs: List[str]) -> List[Tuple[str, str]]:
    import numpy as np
    from PIL import Image

    def small(p: str):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB").resize((64, 64)), np.float32)
    ins = {i: small(i) for i in inputs}
    pairs, free = [], set(inputs)
    for o in outputs:
        so = small(o)
        best = min(free, key=lambda i: float(np.abs(ins[i] - so).mean()))
        free.discard(best)
        pairs.append((best, o))
    return pairs


def run(c: Config) -> int:
    files = cfgmod.require_images(c.infer_images, "infer_images")
    if c.infer_runmode == "saved_model_infer":
        cfgmod.require_saved_model(c.saved_model_dir, "infer")
    else:
        cfgmod.require_checkpoint(c)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    out_dir = os.path.join(c.run_dir, "infer")
    raw = os.path.join(out_dir, "_raw")
    for f in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        p = os.path.join(out_dir, f)
        if f.lower().endswith(".jpg") and os.path.isfile(p):
            os.remove(p)  # last run's annotated images
    shutil.rmtree(raw, ignore_errors=True)
    os.makedirs(raw)
    images_glob = stage_images(files, os.path.join(out_dir, "_inputs"))
    argv, _dropped = command(c, src, d, images_glob)
    env = dl.child_env(c, src)
    log = os.path.join(c.run_dir, "infer.log")
    res = run_logged(argv, env, log, cwd=src.cwd, timeout_s=c.timeout_s, header="infer")
    listed, written = parse_infer(res.output)
    written = [w for w in written if os.path.isfile(w)]
    if not written:  # no "writing file to" lines (logging turned down): what it wrote, <i>.jpg
        written = [os.path.join(raw, f) for f in sorted(
            (f for f in os.listdir(raw) if re.match(r"^[0-9]+\.jpg$", f)), key=lambda f: int(f[:-4]))]
    staged = {os.path.join(out_dir, "_inputs", n): n for n in os.listdir(os.path.join(out_dir, "_inputs"))}
    if listed and len(listed) >= len(written):
        by_index = {os.path.join(raw, f"{i}.jpg"): listed[i] for i in range(len(listed))}
        pairs = [(by_index[w], w) for w in written if w in by_index]
    else:
        pairs = _match_by_pixels(sorted(staged), written)
    images: List[Dict[str, Any]] = []
    from PIL import Image
    for staged_in, w in pairs:
        name = staged.get(staged_in, os.path.basename(staged_in)).split("-", 1)[-1]
        final = os.path.join(out_dir, os.path.splitext(name)[0] + ".jpg")
        os.replace(w, final)
        with Image.open(final) as im:
            width, height = im.size
        images.append({"input": os.path.realpath(staged_in), "output": final,
                       "width": width, "height": height})
    ok = res.returncode == 0 and len(images) == len(files)
    summary: Dict[str, Any] = {
        "stage": "infer", "ok": ok, "runmode": c.infer_runmode, "model_name": c.model_name,
        "image_size": dl.image_size_of(c, dl.infer_hparams(c), c.model_name),
        "min_score_thresh": c.min_score_thresh, "images": images, "inputs": len(files),
        "exit_code": res.returncode, "duration_s": round(res.duration_s, 1), "log": log,
        "code_source": src.kind, "dialect": d.name, "command": shell_line(argv, env, src.cwd)}
    if not ok:
        summary["reason"] = (last_error(res.output) if res.returncode else
                             f"{len(images)} annotated images for {len(files)} inputs")
    write_json(os.path.join(c.run_dir, "infer.json"), summary)
    shutil.rmtree(raw, ignore_errors=True)
    print(json.dumps({"stage": "infer", "ok": ok, "images": len(images),
                      "duration_s": summary["duration_s"]}), flush=True)
    if not ok:
        eprint(f"effdetlab.stages infer: {summary['reason']} (see {log})")
        return 1
    return 0
