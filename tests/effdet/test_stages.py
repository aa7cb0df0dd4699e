"""effdetlab.stages: dialects, parsers and config validation (fast, on real captured automl
output in tests/fixtures/automl-output/), plus one real CPU chain: train (killed, resumed)
-> export (saved_model + TFLite) -> benchmark (bm + e2e) -> infer -> benchreport."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from effdetlab.stages import config as cfgmod
from effdetlab.stages import dialect as dl
from effdetlab.stages.errors import StageInputError
from effdetlab.stages.parsers import (last_error, parse_benchmark, parse_infer,
                                      parse_train_log)

FIX = os.path.join(REPO, "tests", "fixtures", "automl-output")
PY = sys.executable
P = dl.VENDORED


def fixture(name: str) -> str:
    with open(os.path.join(FIX, name), encoding="utf-8") as f:
        return f.read()


def write_label_map(d, n=2) -> str:
    p = os.path.join(str(d), "label_map.yaml")
    with open(p, "w") as f:
        f.write("".join(f'{i}: "c{i}"\n' for i in range(1, n + 1)))
    return p


def base_cfg(tmp, **kw):
    lm = write_label_map(tmp)
    tfr = os.path.join(str(tmp), "train-00000-of-00001.tfrecord")
    open(tfr, "wb").close()
    d = {"run_dir": os.path.join(str(tmp), "run"), "model_name": "efficientdet-d0",
         "hparams": {"num_classes": 2, "moving_average_decay": 0, "label_map": lm},
         "train_file_pattern": os.path.join(str(tmp), "train-*.tfrecord"),
         "val_file_pattern": os.path.join(str(tmp), "train-*.tfrecord"),
         "train_batch_size": 4, "eval_batch_size": 2, "eval_samples": 8, "num_epochs": 3,
         "num_examples_per_epoch": 40, "save_checkpoints_steps": 5}
    d.update(kw)
    return d


# ----------------------------------------------------------------------------- dialects

def test_vendored_flags_are_the_current_dialect():
    src = dl.locate(cfgmod.from_dict({"run_dir": "/tmp/x"}))
    with open(src.files["main"]) as f:
        main = f.read()
    with open(src.files["model_inspect"]) as f:
        insp = f.read()
    d = dl.detect(main, insp)
    assert d.name == "current" and not d.use_tpu_flag
    assert {"train_file_pattern", "val_file_pattern", "num_examples_per_epoch", "hparams",
            "iterations_per_loop", "save_checkpoints_steps", "ckpt"} <= d.main_flags
    assert not {"training_file_pattern", "validation_file_pattern", "use_tpu"} & d.main_flags
    assert {"runmode", "saved_model_dir", "tflite_path", "min_score_thresh", "threads", "bm_runs",
            "batch_size", "input_image", "output_image_dir", "ckpt_path", "logdir"} <= d.inspect_flags


def test_train_command_pypi_golden(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, ckpt=None))
    src = dl.CodeSource("pypi", "/usr/bin/python3")
    argv = dl.train_cmd(c, src, dl.CURRENT)
    t = str(tmp_path)
    assert argv == [
        "/usr/bin/python3", "-m", f"{P}.main", "--mode=train_and_eval", "--model_name=efficientdet-d0",
        f"--model_dir={t}/run/model", f"--train_file_pattern={t}/train-*.tfrecord",
        f"--val_file_pattern={t}/train-*.tfrecord", "--train_batch_size=4", "--eval_batch_size=2",
        "--eval_samples=8", "--num_epochs=3", "--num_examples_per_epoch=40",
        "--save_checkpoints_steps=5", "--iterations_per_loop=1",
        f"--hparams=num_classes=2,moving_average_decay=0,label_map={t}/label_map.yaml"]
    assert c.train_steps == 30  # 3 * 40 // 4: automl's arithmetic, no step flag
    env = dl.child_env(c, src)
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"


def _fake_2020_checkout(root) -> str:
    """Flag definitions only (names as in automl 9f1cf16), enough for detection."""
    d = os.path.join(str(root), "automl", "efficientdet")
    os.makedirs(d)
    main = "\n".join(f"flags.DEFINE_string('{n}', None, '')" for n in (
        "tpu", "model_dir", "ckpt", "hparams", "training_file_pattern", "validation_file_pattern",
        "val_json_file", "mode", "model_name")) + "\nflags.DEFINE_bool('use_tpu', True, 'Use TPUs')\n"
    main += "\n".join(f"flags.DEFINE_integer('{n}', 1, '')" for n in (
        "train_batch_size", "eval_batch_size", "eval_samples", "iterations_per_loop",
        "num_examples_per_epoch", "num_epochs", "save_checkpoints_steps", "num_cores"))
    insp = "\n".join(f"flags.DEFINE_string('{n}', None, '')" for n in (
        "model_name", "logdir", "runmode", "ckpt_path", "hparams", "input_image",
        "output_image_dir", "saved_model_dir")) + "\n" + "\n".join(
        f"flags.DEFINE_integer('{n}', 0, '')" for n in ("threads", "batch_size")) + \
        "\nflags.DEFINE_float('min_score_thresh', 0.4, '')\n"
    with open(os.path.join(d, "main.py"), "w") as f:
        f.write(main)
    with open(os.path.join(d, "model_inspect.py"), "w") as f:
        f.write(insp)
    return os.path.dirname(d)


def test_train_command_git_2020_golden(tmp_path):
    checkout = _fake_2020_checkout(tmp_path)
    c = cfgmod.from_dict(base_cfg(tmp_path, code_source="git", code_dir=checkout, device="gpu", python="/usr/bin/python3",
                                  ckpt=os.path.join(str(tmp_path), "label_map.yaml")))
    src = dl.locate(c)
    d = dl.resolve(c, src)
    assert d.name == "2020-05" and d.use_tpu_flag
    ed = os.path.join(checkout, "efficientdet")
    t = str(tmp_path)
    assert src.cwd == ed and dl.child_env(c, src)["PYTHONPATH"] == ed
    assert "CUDA_VISIBLE_DEVICES" not in dl.child_env(c, src)
    assert dl.train_cmd(c, src, d) == [
        "/usr/bin/python3", f"{ed}/main.py", "--mode=train_and_eval", "--model_name=efficientdet-d0",
        f"--model_dir={t}/run/model", f"--training_file_pattern={t}/train-*.tfrecord",
        f"--validation_file_pattern={t}/train-*.tfrecord", "--train_batch_size=4",
        "--eval_batch_size=2", "--eval_samples=8", "--num_epochs=3", "--num_examples_per_epoch=40",
        "--save_checkpoints_steps=5", "--iterations_per_loop=1", f"--ckpt={t}/label_map.yaml",
        "--use_tpu=False",
        f"--hparams=num_classes=2,moving_average_decay=0,label_id_mapping={t}/label_map.yaml"]
    # model_inspect of that era: no --tflite_path, no --bm_runs -> left out and reported
    argv, dropped = dl.export_cmd(c, src, d, c.model_dir, "/tmp/l")
    assert argv[:4] == ["/usr/bin/python3", f"{ed}/model_inspect.py", "--runmode=saved_model",
                        "--model_name=efficientdet-d0"]
    assert dropped == ["tflite_path"] and "--min_score_thresh=0.4" in argv
    argv, dropped = dl.bm_cmd(c, src, d, "efficientdet-d1", 2, 1, "/tmp/l")
    assert dropped == ["bm_runs"]
    assert argv[2:] == ["--runmode=bm", "--model_name=efficientdet-d1", "--threads=1",
                        "--batch_size=2", "--logdir=/tmp/l"]
    # a named dialect that contradicts the checkout is refused
    with pytest.raises(StageInputError, match="does not match"):
        dl.resolve(cfgmod.from_dict(dict(base_cfg(tmp_path), code_source="git", code_dir=checkout,
                                         dialect="current")), src)


def _hparam_keys(dialect: str) -> set:
    """The keys automl's Config.override accepts: the vendored current code's, or automl 9f1cf16's
    (recorded: tests/fixtures/automl-hparams/2020-05-9f1cf16.txt)."""
    if dialect == "current":
        import importlib
        return set(importlib.import_module(f"{P}.hparams_config").default_detection_configs().as_dict())
    with open(os.path.join(REPO, "tests", "fixtures", "automl-hparams", "2020-05-9f1cf16.txt")) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("dialect", ["current", "2020-05"])
def test_every_hparam_the_stages_pass_is_one_the_dialects_config_knows(tmp_path, dialect):
    """automl refuses an hparam its config lacks ("Key `label_map` does not exist for overriding",
    9f1cf16's train with our defaults): what the train stage writes (train.yml: num_classes,
    label_map, effdet_tasks_hparams' moving_average_decay) and inference's image_size, as each
    dialect names them, are all keys of that dialect's config."""
    cfg = base_cfg(tmp_path, image_size=256)
    cfg.pop("save_checkpoints_steps")  # explicit here; 9f1cf16's main.py lacks the flag
    c = cfgmod.from_dict(cfg)
    d = dl.NAMED[dialect]
    passed = dl.dialect_hparams(d, dl.infer_hparams(c))
    assert set(passed) <= _hparam_keys(dialect), sorted(set(passed) - _hparam_keys(dialect))
    label_key = "label_map" if dialect == "current" else "label_id_mapping"
    assert passed[label_key] == c.hparams["label_map"]
    argv, _ = dl.train_plan(c, dl.CodeSource("pypi", "py"), d)
    assert argv[-1] == "--hparams=" + dl.hparams_string(dl.dialect_hparams(d, c.hparams))


def test_2020_main_that_turns_absl_logging_down_gets_verbosity_0(tmp_path):
    """automl 9f1cf16's main.py calls logging.set_verbosity(logging.WARNING) before app.run: the
    estimator's loss/step INFO lines, the train stage's progress, are never written (found by the
    hand run on TF 2.1). absl's own --verbosity=0 turns them back on; without that call, nothing
    is added."""
    checkout = _fake_2020_checkout(tmp_path)
    main = os.path.join(checkout, "efficientdet", "main.py")
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout)
    cfg.pop("save_checkpoints_steps")
    c = cfgmod.from_dict(cfg)
    src = dl.locate(c)
    assert "--verbosity=0" not in dl.train_cmd(c, src, dl.resolve(c, src))
    with open(main, "a") as f:
        f.write("\nif __name__ == '__main__':\n  logging.set_verbosity(logging.WARNING)\n  app.run(main)\n")
    d = dl.resolve(c, src)
    assert d.main_quiet
    argv = dl.train_cmd(c, src, d)
    assert argv[2] == "--verbosity=0" and argv.count("--verbosity=0") == 1
    insp = os.path.join(checkout, "efficientdet", "model_inspect.py")
    assert "--verbosity=0" not in dl.export_cmd(c, src, d, c.model_dir, "/tmp/l")[0]
    with open(insp, "a") as f:  # 9f1cf16's model_inspect.py: its "writing file to" lines are INFO
        f.write("\nif __name__ == '__main__':\n  logging.set_verbosity(logging.WARNING)\n  app.run(main)\n")
    d = dl.resolve(c, src)
    assert d.inspect_quiet
    for argv, _ in (dl.export_cmd(c, src, d, c.model_dir, "/tmp/l"), dl.bm_cmd(c, src, d, "efficientdet-d0", 1, 1, "/l"),
                    dl.infer_cmd(c, src, d, "/img/*", "/out", c.model_dir)):
        assert argv[2:5] == ["--runmode=" + argv[2].split("=")[1], "--model_name=efficientdet-d0", "--verbosity=0"]
    with open(main) as f:  # the current dialect's main.py sets WARNING too, and logs INFO anyway
        current = f.read().replace("training_file_pattern", "train_file_pattern")
    assert not dl.detect(current).main_quiet


def test_named_label_maps_in_the_2020_dialect(tmp_path):
    """9f1cf16 has no named label maps: "coco" is its default (left out), others are refused."""
    assert dl.dialect_hparams(dl.D2020, {"num_classes": 90, "label_map": "coco"}) == {"num_classes": 90}
    assert dl.dialect_hparams(dl.CURRENT, {"label_map": "voc"}) == {"label_map": "voc"}
    with pytest.raises(StageInputError, match="hparams.label_map 'voc': automl 2020-05 knows no named"):
        dl.dialect_hparams(dl.D2020, {"num_classes": 20, "label_map": "voc"})


def test_inspect_commands_current_golden(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, min_score_thresh=0.3, image_size=256,
                                  benchmark={"threads": [0, 2], "bm_runs": 3,
                                             "hparams": {"image_size": 256}}))
    src = dl.CodeSource("pypi", "py")
    r = c.run_dir
    argv, dropped = dl.export_cmd(c, src, dl.CURRENT, c.model_dir, "/tmp/l")
    assert not dropped
    assert argv == ["py", "-m", f"{P}.model_inspect", "--runmode=saved_model",
                    "--model_name=efficientdet-d0", f"--ckpt_path={r}/model",
                    f"--saved_model_dir={r}/saved_model", f"--tflite_path={r}/efficientdet-d0.tflite",
                    "--min_score_thresh=0.3", "--batch_size=1", "--logdir=/tmp/l",
                    f"--hparams=num_classes=2,moving_average_decay=0,label_map={tmp_path}/label_map.yaml"]
    argv, _ = dl.bm_cmd(c, src, dl.CURRENT, "efficientdet-d0", 1, 2, "/tmp/l")
    # the exported model's class count and inference size, then benchmark.hparams
    assert argv[3:] == ["--runmode=bm", "--model_name=efficientdet-d0", "--threads=2", "--bm_runs=3",
                        "--batch_size=1", "--logdir=/tmp/l", "--hparams=num_classes=2,image_size=256"]
    argv, _ = dl.bm_cmd(c, src, dl.CURRENT, "efficientdet-d1", 1, 2, "/tmp/l")
    assert argv[-1] == "--hparams=image_size=256"  # no export of d1: benchmark.hparams alone
    argv, _ = dl.e2e_cmd(c, src, dl.CURRENT, "efficientdet-d0", 4, "/sm", "/img/*")
    assert argv[3:7] == ["--runmode=saved_model_benchmark", "--model_name=efficientdet-d0",
                         "--saved_model_dir=/sm", "--input_image=/img/*"]
    assert argv[-1].endswith(",image_size=256")  # inference image_size overrides hparams
    assert dl.e2e_thread_env(2) == {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
    assert dl.e2e_thread_env(0) == {}
    argv, _ = dl.infer_cmd(c, src, dl.CURRENT, "/img/*", "/out", c.model_dir)
    assert argv[3:9] == ["--runmode=saved_model_infer", "--model_name=efficientdet-d0",
                         f"--saved_model_dir={r}/saved_model", "--input_image=/img/*",
                         "--output_image_dir=/out", "--min_score_thresh=0.3"]
    assert dl.hparams_string({"a": True, "b": 0.5, "c": "x"}) == "a=true,b=0.5,c=x"


# ----------------------------------------------------------------------------- parsers (real output)

def test_parse_train_log_fixture():
    recs = parse_train_log(fixture("main-train-d0-128.log").splitlines(), now=1.0)
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [0, 1, 2, 3]  # each TF line is logged twice; once here
    assert steps[0]["loss"] == pytest.approx(5.7779655) and steps[3]["loss"] == pytest.approx(3.0309424)
    assert steps[1]["sec"] == pytest.approx(12.53) and steps[1]["box_loss"] == pytest.approx(0.05891017)
    assert steps[2]["steps_per_sec"] == pytest.approx(5.9442)
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert [r["step"] for r in recs if r["kind"] == "checkpoint"] == [0, 2, 4]
    assert [r["loss"] for r in recs if r["kind"] == "final"] == [pytest.approx(3.0309424)]


def test_parse_train_and_eval_fixture():
    recs = parse_train_log(fixture("main-train_and_eval-d0-128.log").splitlines())
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert {"AP", "AP50", "AP75", "AP_/cat", "AP_/dog", "ARmax100"} <= set(evals[0]["metrics"])
    assert [r["step"] for r in recs if r["kind"] == "step"] == [0, 1, 2, 3]
    assert [r["step"] for r in recs if r["kind"] == "restore"] == [2, 2, 4]


def test_parse_killed_and_resumed_fixture():
    text = fixture("stages-train-killed-and-resumed-d0-128.log")
    attempts = text.split("=== effdetlab train attempt 2 ")
    assert len(attempts) == 3 and attempts[2].startswith("exit 0 after")  # header, footer
    first = [r for r in parse_train_log(attempts[0].splitlines()) if r["kind"] == "step"]
    second = parse_train_log(attempts[1].splitlines())
    restore = [r for r in second if r["kind"] == "restore"][0]
    steps2 = [r["step"] for r in second if r["kind"] == "step"]
    assert restore["step"] == 3 and steps2[0] == 3 and steps2[-1] == 39
    assert first[0]["step"] == 0 and first[-1]["step"] < 39


def test_parser_single_format_and_nonfinite():
    lines = ["I1130 02:20:27.066856 1 basic_session_run_hooks.py:265] loss = nan, step = 7",
             "I1130 02:20:27.1 1 basic_session_run_hooks.py:716] global_step/sec: 2.5",
             "I1130 02:20:27.2 1 basic_session_run_hooks.py:265] loss = 1.5, step = 8 (0.4 sec)"]
    recs = parse_train_log(lines)
    assert recs[0] == {"kind": "step", "step": 7, "time": 0.0, "loss": "nan"}
    assert recs[1]["step"] == 8 and recs[1]["steps_per_sec"] == 2.5 and recs[1]["sec"] == 0.4
    json.dumps(recs, allow_nan=False)  # progress.jsonl stays strict JSON


def test_parse_benchmark_fixtures():
    bm = parse_benchmark(fixture("inspect-bm-d0-128-t1.log"))
    assert bm.latency_ms == pytest.approx(7.3555065) and bm.threads_reported == 1 and bm.runs == 2
    assert bm.fps == pytest.approx(135.95256832300882)
    e2e = parse_benchmark(fixture("inspect-saved_model_benchmark-d0-128.log"))
    assert e2e.latency_ms == pytest.approx(36.51254319997861) and e2e.threads_reported is None
    assert parse_benchmark(fixture("main-train-d0-128.log")) is None
    for name in sorted(os.listdir(FIX)):
        if name.startswith("inspect-bm-d0-512"):
            r = parse_benchmark(fixture(name))
            assert r and 10 < r.latency_ms < 5000


def test_parse_infer_fixture():
    inputs, outputs = parse_infer(fixture("inspect-saved_model_infer-d0-128.log"))
    assert inputs == ["/tmp/ed/imgs/000001.jpg", "/tmp/ed/imgs/000000.jpg"]
    assert outputs == ["/tmp/ed/out/0.jpg", "/tmp/ed/out/1.jpg"]


def test_last_error():
    text = "Traceback (most recent call last):\n  File x\nValueError: Cannot find any images for pattern /x/*\n"
    assert last_error(text) == "ValueError: Cannot find any images for pattern /x/*"


# ----------------------------------------------------------------------------- bad inputs: exit 2, one line

def _cli_error(tmp_path, cfg, stage, *extra):
    p = os.path.join(str(tmp_path), "cfg.json")
    with open(p, "w") as f:
        json.dump(cfg, f)
    r = run_cli("-m", "effdetlab.stages", stage, "--config", p, *extra, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"effdetlab.stages {stage}: error: ")
    return lines[0]


def test_bad_model_name(tmp_path):
    msg = _cli_error(tmp_path, base_cfg(tmp_path, model_name="efficientdet-d9"), "train")
    assert "unknown model name 'efficientdet-d9'" in msg and "efficientdet-d7" in msg
    msg = _cli_error(tmp_path, base_cfg(tmp_path, benchmark={"model_names": ["effdet-d0"]}), "benchmark")
    assert "'effdet-d0'" in msg


def test_num_classes_mismatch(tmp_path):
    cfg = base_cfg(tmp_path)
    cfg["hparams"]["num_classes"] = 3
    msg = _cli_error(tmp_path, cfg, "train")
    assert "num_classes=3 does not match the label map" in msg and "num_classes == 2" in msg
    cfg["hparams"].pop("num_classes")  # missing: taken from the label map
    assert cfgmod.from_dict(cfg).hparams["num_classes"] == 2


def test_pattern_matches_no_file(tmp_path):
    msg = _cli_error(tmp_path, base_cfg(tmp_path, train_file_pattern=str(tmp_path / "nope-*.tfrecord")),
                     "train", "--detach")
    assert "nope-*.tfrecord matches no file" in msg
    assert not os.path.exists(tmp_path / "run" / "train_status.json")  # nothing started
    msg = _cli_error(tmp_path, base_cfg(tmp_path, val_file_pattern=str(tmp_path / "val-*")), "train")
    assert "val_file_pattern" in msg and "matches no file" in msg


def test_zero_steps_and_missing_checkpoint(tmp_path):
    msg = _cli_error(tmp_path, base_cfg(tmp_path, num_examples_per_epoch=1), "train")
    assert "0 training steps" in msg
    msg = _cli_error(tmp_path, base_cfg(tmp_path), "export")
    assert "no checkpoint in model_dir" in msg


def test_missing_saved_model(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from effdetlab.synth import write_image
    write_image(str(imgs / "a.jpg"), 64, 48, 1)
    msg = _cli_error(tmp_path, base_cfg(tmp_path, infer_images=str(imgs)), "benchmark")
    assert "no saved_model at" in msg and "run the export stage first" in msg
    msg = _cli_error(tmp_path, base_cfg(tmp_path, infer_images=str(imgs)), "infer")
    assert "infer: no saved_model at" in msg
    msg = _cli_error(tmp_path, base_cfg(tmp_path, infer_images=str(tmp_path / "none")), "infer")
    assert "holds no .jpg" in msg


def test_config_value_errors(tmp_path):
    for bad, needle in [({"mode": "eval"}, "mode='eval'"), ({"device": "tpu"}, "device"),
                        ({"train_batch_size": 0}, "must be >= 1"), ({"hparams": {"a": "x,y"}}, "','"),
                        ({"benchmark": {"threads": []}}, "benchmark.threads"),
                        ({"min_score_thresh": 1.5}, "min_score_thresh"), ({"bogus": 1}, "unknown key"),
                        ({"hparams": {"image_size": "512x"}}, "image_size")]:
        with pytest.raises(StageInputError, match=needle):
            cfgmod.from_dict(base_cfg(tmp_path, **bad))


# ----------------------------------------------------------------------------- flags per dialect

# The flags of automl 9f1cf16 (2020-05-19; effdet_tasks_git_versions' tf2.1-gpu commit):
# every flags.DEFINE_*('name', ...) of efficientdet/main.py and efficientdet/model_inspect.py,
# read with `git show 9f1cf16:efficientdet/<file>` in a clone of github.com/google/automl
# (dl.defined_flags over each file).
MAIN_9F1CF16 = frozenset({
    "backbone_ckpt", "ckpt", "eval_after_training", "eval_batch_size", "eval_master", "eval_samples",
    "eval_timeout", "gcp_project", "hparams", "input_partition_dims", "iterations_per_loop",
    "min_eval_interval", "mode", "model_dir", "model_name", "num_cores", "num_cores_per_replica",
    "num_epochs", "num_examples_per_epoch", "testdev_dir", "tf_random_seed", "tpu", "tpu_zone",
    "train_batch_size", "training_file_pattern", "use_fake_data", "use_horovod", "use_spatial_partition",
    "use_tpu", "use_xla", "val_json_file", "validation_file_pattern"})
INSPECT_9F1CF16 = frozenset({
    "batch_size", "bm_runs", "ckpt_path", "delete_logdir", "export_ckpt", "freeze", "hparams",
    "input_image", "input_video", "line_thickness", "logdir", "max_boxes_to_draw", "min_score_thresh",
    "model_name", "output_image_dir", "output_video", "runmode", "saved_model_dir", "tensorrt",
    "tflite_path", "threads", "trace_filename", "xla"})
DROPPED_SCS = ("--save_checkpoints_steps dropped: automl 2020-05's main.py has no such flag; "
               "it was only our default")


def _vendored_flags():
    src = dl.locate(cfgmod.from_dict({"run_dir": "/tmp/x"}))
    with open(src.files["main"]) as f, open(src.files["model_inspect"]) as g:
        return dl.defined_flags(f.read()), dl.defined_flags(g.read())


def _d2020(main=MAIN_9F1CF16, inspect=INSPECT_9F1CF16):
    return dl.Dialect("2020-05", "training_file_pattern", "validation_file_pattern", True, main, inspect)


def _real_2020_checkout(root) -> str:
    """A stand-in for a checkout of automl 9f1cf16: its real flag definitions (what the
    dialect detection reads); main.py replays a recorded training log, writes checkpoints
    and its argv (no TensorFlow)."""
    d = os.path.join(str(root), "automl", "efficientdet")
    os.makedirs(d)
    main = "".join(f"# flags.DEFINE_string('{n}', None, '')\n" for n in sorted(MAIN_9F1CF16)) + (
        "import json, os, sys\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)\n"
        f"sys.stdout.write(open({os.path.join(FIX, 'main-train-d0-128.log')!r}).read())\n"
        "md = args['model_dir']\nos.makedirs(md, exist_ok=True)\n"
        "for s in (0, 2, 4):\n    open(os.path.join(md, 'model.ckpt-%d.index' % s), 'w').close()\n"
        "open(os.path.join(md, 'checkpoint'), 'w').write('model_checkpoint_path: \"model.ckpt-4\"\\n')\n"
        "json.dump(sys.argv[1:], open(os.path.join(md, 'argv.json'), 'w'))\n")
    insp = "".join(f"# flags.DEFINE_string('{n}', None, '')\n" for n in sorted(INSPECT_9F1CF16))
    with open(os.path.join(d, "main.py"), "w") as f:
        f.write(main)
    with open(os.path.join(d, "model_inspect.py"), "w") as f:
        f.write(insp)
    return os.path.dirname(d)


def test_flag_table_matches_both_dialects():
    """dialect.FLAGS against the flags each dialect's scripts really define."""
    cur_main, cur_insp = _vendored_flags()
    real = {"current": {"main": cur_main, "model_inspect": cur_insp},
            "2020-05": {"main": MAIN_9F1CF16, "model_inspect": INSPECT_9F1CF16}}
    for r in dl.FLAGS:
        for name, flags in real.items():
            assert (r.flag in flags[r.script]) == (name in r.dialects), (r, name)
        assert r.missing in (dl.REFUSE, dl.DROP_DEFAULT, dl.OPTIONAL)
        assert all(v.startswith("effdet_tasks_") for v in r.variables)
    assert len({(r.script, r.flag) for r in dl.FLAGS}) == len(dl.FLAGS)
    # besides the renamed file patterns, what 9f1cf16 lacks, and how each goes
    lacks = [(r.flag, r.missing) for r in dl.FLAGS
             if "2020-05" not in r.dialects and r.flag not in ("train_file_pattern", "val_file_pattern")]
    assert lacks == [("save_checkpoints_steps", dl.DROP_DEFAULT), ("strategy", dl.REFUSE)]
    assert [r.flag for r in dl.FLAGS if r.missing == dl.DROP_DEFAULT] == ["save_checkpoints_steps",
                                                                         "iterations_per_loop"]


def test_every_flag_the_stages_pass_is_in_the_table(tmp_path):
    seen = set()
    for d, extra in ((dl.CURRENT, {"strategy": "gpus"}), (_d2020(), {})):
        c = cfgmod.from_dict(base_cfg(tmp_path, ckpt=str(tmp_path), backbone_ckpt=str(tmp_path),
                                      val_json_file=str(tmp_path), infer_runmode="infer",
                                      benchmark={"threads": [2], "bm_runs": 3}, explicit=[], **extra))
        src = dl.CodeSource("pypi", "py")
        cmds = [("main", dl.train_plan(c, src, d)[0]),
                ("model_inspect", dl.export_cmd(c, src, d, c.model_dir, "/l")[0]),
                ("model_inspect", dl.bm_cmd(c, src, d, "efficientdet-d0", 1, 2, "/l")[0]),
                ("model_inspect", dl.e2e_cmd(c, src, d, "efficientdet-d0", 1, "/sm", "/i/*")[0]),
                ("model_inspect", dl.infer_cmd(c, src, d, "/i/*", "/o", c.model_dir)[0])]
        c.infer_runmode = "saved_model_infer"
        cmds.append(("model_inspect", dl.infer_cmd(c, src, d, "/i/*", "/o", c.model_dir)[0]))
        for script, argv in cmds:
            for a in argv[3:]:
                name = a[2:].split("=", 1)[0]
                assert dl.flag_rule(script, name), (script, name)
                seen.add((script, name))
    assert seen == {(r.script, r.flag) for r in dl.FLAGS}  # and the table has nothing else


def test_2020_05_code_with_the_default_variables(tmp_path):
    """effdet_tasks_code_source git at 9f1cf16, every variable at its default: the config the
    role writes (save_checkpoints_steps 100, explicit []) trains; the flag is dropped, said so."""
    checkout = _real_2020_checkout(tmp_path)
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout, python=PY, mode="train",
                   save_checkpoints_steps=100, explicit=[])
    c = cfgmod.from_dict(cfg)
    src = dl.locate(c)
    d = dl.resolve(c, src)
    assert d.name == "2020-05" and d.main_flags == MAIN_9F1CF16
    argv, notes = dl.train_plan(c, src, d)
    assert notes == [DROPPED_SCS]
    t = str(tmp_path)
    assert argv[2:] == [
        "--mode=train", "--model_name=efficientdet-d0", f"--model_dir={t}/run/model",
        f"--training_file_pattern={t}/train-*.tfrecord", f"--validation_file_pattern={t}/train-*.tfrecord",
        "--train_batch_size=4", "--eval_batch_size=2", "--eval_samples=8", "--num_epochs=3",
        "--num_examples_per_epoch=40", "--iterations_per_loop=1", "--use_tpu=False",
        f"--hparams=num_classes=2,moving_average_decay=0,label_id_mapping={t}/label_map.yaml"]
    assert dl.train_cmd(c, src, d) == argv
    # the stage itself, as the role runs it
    cfg_path = os.path.join(t, "cfg.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    r = _stage("train", cfg_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"effdetlab.stages train: {DROPPED_SCS}" in r.stderr.splitlines()
    run = os.path.join(t, "run")
    with open(os.path.join(run, "train.json")) as f:
        summary = json.load(f)
    assert summary["ok"] and summary["dialect"] == "2020-05" and summary["flags_dropped"] == [DROPPED_SCS]
    assert "--save_checkpoints_steps" not in summary["command"]
    with open(os.path.join(run, "model", "argv.json")) as f:
        assert json.load(f) == argv[2:]
    with open(os.path.join(run, "train.log")) as f:
        assert f"# {DROPPED_SCS}\n" in f.read()
    with open(os.path.join(run, "train_status.json")) as f:
        assert json.load(f)["flags_dropped"] == [DROPPED_SCS]
    r = _stage("commands", cfg_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dialect"] == "2020-05" and out["train_flags_dropped"] == [DROPPED_SCS]


def test_2020_05_refuses_an_explicit_save_checkpoints_steps(tmp_path):
    checkout = _real_2020_checkout(tmp_path)
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout, python=PY, mode="train",
                   save_checkpoints_steps=50, explicit=["save_checkpoints_steps"])
    want = ("automl 2020-05's main.py has no --save_checkpoints_steps flag, and save_checkpoints_steps=50 "
            "(effdet_tasks_save_checkpoints_steps) was set explicitly: unset it")
    for extra in ((), ("--detach",)):  # the role starts training detached: refused before it starts
        msg = _cli_error(tmp_path, cfg, "train", *extra)
        assert want in msg
    assert not os.path.exists(os.path.join(str(tmp_path), "run", "train_status.json"))
    # the same value, but only our default (not in explicit): dropped
    c = cfgmod.from_dict(dict(cfg, explicit=[]))
    src = dl.locate(c)
    assert dl.train_plan(c, src, dl.resolve(c, src))[1] == [DROPPED_SCS]


def test_hand_written_config_without_explicit(tmp_path):
    """No `explicit` list: a key written in the file is explicit, a key left out is not."""
    src = dl.CodeSource("git", "py", str(tmp_path))
    given = cfgmod.from_dict(base_cfg(tmp_path))  # save_checkpoints_steps: 5
    assert "save_checkpoints_steps" in given.explicit
    with pytest.raises(StageInputError, match="save_checkpoints_steps=5 .* was set explicitly"):
        dl.train_plan(given, src, _d2020())
    left_out = base_cfg(tmp_path)
    del left_out["save_checkpoints_steps"]
    c = cfgmod.from_dict(left_out)
    assert "save_checkpoints_steps" not in c.explicit and c.save_checkpoints_steps == 100
    assert dl.train_plan(c, src, _d2020())[1] == [DROPPED_SCS]
    # a named dialect whose scripts cannot be read: the table knows what 9f1cf16 lacks
    assert dl.train_plan(c, src, dl.D2020)[1] == [DROPPED_SCS]
    # the current dialect has the flag: always passed
    for explicit in ([], ["save_checkpoints_steps"]):
        c = cfgmod.from_dict(base_cfg(tmp_path, explicit=explicit))
        for d in (dl.CURRENT, dl.detect(*[open(f).read() for f in dl.locate(c).files.values()])):
            argv, notes = dl.train_plan(c, dl.CodeSource("pypi", "py"), d)
            assert "--save_checkpoints_steps=5" in argv and notes == []


def test_what_else_a_script_may_lack(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, explicit=[]))
    src = dl.CodeSource("pypi", "py")
    # our log-every-step default: dropped with its own line
    argv, notes = dl.train_plan(c, src, _d2020(main=MAIN_9F1CF16 - {"iterations_per_loop"}))
    assert notes == [DROPPED_SCS, "--iterations_per_loop dropped: automl 2020-05's main.py has no such flag; "
                                  "it was only our default"]
    # a flag the stage needs
    with pytest.raises(StageInputError, match="automl 2020-05's main.py has no --eval_samples flag, which this "
                                              "stage needs; use automl code that has it"):
        dl.train_plan(c, src, _d2020(main=MAIN_9F1CF16 - {"eval_samples"}))
    with pytest.raises(StageInputError, match="has no --strategy flag, which this stage needs"):
        dl.train_plan(cfgmod.from_dict(base_cfg(tmp_path, strategy="gpus", explicit=[])), src, _d2020())
    with pytest.raises(StageInputError, match=r"has no --use_fake_data2 flag \(extra_train_flags\); remove it"):
        dl.train_plan(cfgmod.from_dict(base_cfg(tmp_path, extra_train_flags={"use_fake_data2": True},
                                                explicit=[])), src, _d2020())
    assert "--tf_random_seed=1" in dl.train_plan(
        cfgmod.from_dict(base_cfg(tmp_path, extra_train_flags={"tf_random_seed": 1}, explicit=[])),
        src, _d2020())[0]
    with pytest.raises(StageInputError, match="model_inspect.py has no --saved_model_dir flag, which this stage"):
        dl.export_cmd(c, src, _d2020(inspect=INSPECT_9F1CF16 - {"saved_model_dir"}), c.model_dir, "/l")
    # optional ones: left out and reported, whatever the value
    c = cfgmod.from_dict(base_cfg(tmp_path, benchmark={"threads": [2], "bm_runs": 3}))
    assert "benchmark.bm_runs" in c.explicit
    argv, dropped = dl.bm_cmd(c, src, _d2020(inspect=INSPECT_9F1CF16 - {"threads", "bm_runs", "logdir"}),
                              "efficientdet-d0", 1, 2, "/l")
    assert dropped == ["threads", "bm_runs", "logdir"] and argv[3:] == [
        "--runmode=bm", "--model_name=efficientdet-d0", "--batch_size=1", "--hparams=num_classes=2"]
    argv, dropped = dl.export_cmd(c, src, _d2020(), c.model_dir, "/l")
    assert dropped == [] and any(a.startswith("--tflite_path=") for a in argv)  # 9f1cf16 has it


def test_config_explicit(tmp_path):
    c = cfgmod.from_dict(base_cfg(tmp_path, ckpt=None, benchmark={"bm_runs": 3, "host": None}))
    assert "ckpt" not in c.explicit and "benchmark.bm_runs" in c.explicit
    assert "benchmark.threads" not in c.explicit and "benchmark.host" not in c.explicit
    assert "log_every_n_steps" not in c.explicit and "save_checkpoints_steps" in c.explicit
    c = cfgmod.from_dict(base_cfg(tmp_path, explicit=["save_checkpoints_steps", "benchmark.bm_runs"]))
    assert c.explicit == ["benchmark.bm_runs", "save_checkpoints_steps"]
    assert c.is_explicit("save_checkpoints_steps") and not c.is_explicit("eval_samples")
    assert not c.is_explicit(None)
    for bad, needle in [("save_checkpoints_steps", "expected a list of config keys"),
                        ([1], "expected a list of config keys"),
                        (["bogus", "benchmark.nope"], r"unknown key\(s\) benchmark.nope, bogus"),
                        (["explicit"], "unknown key")]:
        with pytest.raises(StageInputError, match=needle):
            cfgmod.from_dict(base_cfg(tmp_path, explicit=bad))


# ----------------------------------------------------------------------------- the real chain on CPU

def _stage(stage, cfg_path, *extra, timeout=600):
    return run_cli("-m", "effdetlab.stages", stage, "--config", cfg_path, *extra, timeout=timeout)


def _status(cfg_path):
    r = _stage("status", cfg_path, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


@pytest.mark.slow
def test_chain_train_kill_resume_export_benchmark_infer(tmp_path):
    """D0 at 128 px on 8 synthetic VOC images, all on CPU (about 6 minutes on 2 cores, alone)."""
    t0 = time.monotonic()
    from effdetlab.synth import make_clean_voc
    voc = make_clean_voc(str(tmp_path / "data"), 8, ["cat", "dog"], seed=3, size=(320, 240))
    r = run_cli("-m", "effdetlab.convert", "--data-dir", voc, "--output-dir", str(tmp_path / "tfr"))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    cfg = {"run_dir": "run", "model_name": "efficientdet-d0", "mode": "train", "device": "cpu",
           "hparams": {"image_size": 128, "num_classes": 2, "moving_average_decay": 0,
                       "label_map": "tfr/label_map.yaml"},
           "train_file_pattern": "tfr/train-*.tfrecord", "train_batch_size": 2, "num_epochs": 1,
           "num_examples_per_epoch": 32, "save_checkpoints_steps": 3, "min_score_thresh": 0.05,
           "infer_images": os.path.join(voc, "JPEGImages", "00000[01].jpg"),
           # the training set stands in for a validation set in the int8 file's mAP
           "val_file_pattern": "tfr/train-*.tfrecord", "val_json_file": "tfr/train_annotations.json",
           "quantize": ["int8"],
           # bm_runs 10 (the default): at 128 px a bm batch takes 10 to 20 ms, and the mean of 2 runs
           # differed by 57 % between the stage and the same command by hand (crosscheck, CI rehearsal)
           "benchmark": {"threads": [1], "bm_runs": 10, "batch_sizes": [1, 4], "repeats": 1,
                         "modes": ["bm", "e2e", "tflite", "tflite-int8"], "host": "chain-test"},
           "timeout_s": 400}
    cfg_path = str(tmp_path / "config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)

    # 1. detached train; kill the whole process group once a checkpoint past 0 exists
    r = _stage("train", cfg_path, "--detach", timeout=60)
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ck = cfgmod.latest_checkpoint(str(run / "model"))
        if ck and not ck.endswith("-0"):
            break
        assert _status(cfg_path)["state"] in ("starting", "running")
        time.sleep(0.2)
    else:
        pytest.fail("no checkpoint after 300 s")
    os.killpg(pid, signal.SIGKILL)
    while subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 0:
        time.sleep(0.2)  # the group is gone: automl died with its supervisor
    st = _status(cfg_path)
    assert st["state"] == "failed" and st["exit_code"] is None and "gone" in st["reason"]
    killed_at = st["global_step"]
    assert 3 <= killed_at < 16

    # 2. train again (detached, polled to the end): the global step continues
    r = _stage("train", cfg_path, "--detach", timeout=60)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 300
    while _status(cfg_path)["state"] in ("starting", "running"):
        assert time.monotonic() < deadline, "resumed training did not finish"
        time.sleep(1)
    st = _status(cfg_path)
    assert st["state"] == "finished" and st["exit_code"] == 0 and st["attempt"] == 2
    assert st["global_step"] == 16 and st["resumed_from"].endswith(f"-{killed_at}")
    prog = _read_jsonl(str(run / "progress.jsonl"))
    a1 = [p["step"] for p in prog if p["attempt"] == 1]
    a2 = [p["step"] for p in prog if p["attempt"] == 2]
    assert a1[0] == 0 and a2[0] == killed_at and a2[-1] == 15
    assert a2 == list(range(killed_at, 16))
    assert all(isinstance(p["loss"], float) and math.isfinite(p["loss"]) for p in prog)
    assert all(p["time"] > 0 for p in prog)
    log = (run / "train.log").read_text()
    assert "train attempt 1" in log and "train attempt 2 exit 0" in log
    assert f"Restoring parameters from {run}/model/model.ckpt-{killed_at}" in log
    summary = json.loads((run / "train.json").read_text())
    assert summary["ok"] and summary["first_step"] == killed_at and summary["checkpoint"].endswith("-16")

    # 3. export: saved_model (+ TFLite, or a stated reason)
    r = _stage("export", cfg_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ex = json.loads((run / "export.json").read_text())
    assert ex["ok"] and ex["saved_model"]["detections_shape"] == [1, 100, 7]
    assert ex["checkpoint"].endswith("-16")
    assert ex["tflite"]["ok"] and ex["tflite"]["detections_shape"] == [1, 100, 7]
    assert os.path.getsize(ex["tflite"]["path"]) > 1_000_000
    q = ex["quantized"]["int8"]  # calibrated on the training images, checked like the float one
    assert q["ok"] and q["detections_shape"] == [1, 100, 7] and q["input_dtype"] == "uint8"
    assert os.path.getsize(q["path"]) < os.path.getsize(ex["tflite"]["path"]) / 2
    assert len(os.listdir(run / ".calibration")) == 8
    acc = ex["accuracy"]
    assert acc["ok"] and acc["images"] == 8 and set(acc["ap_change"]) == {"int8"}
    assert acc["ap_change"]["int8"] == pytest.approx(acc["int8"]["AP"] - acc["float"]["AP"], abs=1e-4)
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    m = tf.saved_model.load(str(run / "saved_model"))
    fn = m.signatures["serving_default"]
    img = np.asarray(Image.open(os.path.join(voc, "JPEGImages", "000000.jpg")))[None]
    det = fn(**{"image_arrays:0": tf.constant(img)})["detections:0"].numpy()
    assert det.shape == (1, 100, 7) and np.isfinite(det).all()
    assert (det[0, :, 5] <= 1).all()  # scores; boxes in input pixels: columns 1..4
    assert det[0, :, 1:5].max() <= 320 + 1

    # 4. benchmark: bm, e2e, tflite, tflite-int8 at batch 1 and 4, once each (the repeats' interleaving is
    #    test_benchmark_plan's; the Ansible stage measures twice on real automl in tests/integration);
    #    batch 4 needs (and gets) a model exported for batch 4, fed the 2 images twice
    r = _stage("benchmark", cfg_path)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = json.loads((run / "benchmark.json").read_text())
    modes = ["bm", "e2e", "tflite", "tflite-int8"]
    order = [(m, b) for b in (1, 4) for m in modes]
    assert [(x["mode"], x["batch"]) for x in recs] == order
    assert [x["repeat"] for x in recs] == [1] * 8
    for x in recs:
        assert x["ok"] and x["latency_ms"] > 0 and x["host"] == "chain-test" and x["threads"] == 1
        assert x["tf_version"] == tf.__version__ and x["image_size"] == [128, 128]
        assert x["images_fed"] == x["batch"]
        assert x["fps"] == pytest.approx(1000.0 * x["images_fed"] / x["latency_ms"], rel=1e-3)
        log = open(x["log"]).read()
        assert ("Per batch inference time" if x["mode"] in ("bm", "e2e") else "EFFDETLAB_TFLITE") in log
    by = {(x["mode"], x["batch"], x["repeat"]): x for x in recs}
    assert by[("bm", 1, 1)]["runs"] == 10 and by[("bm", 1, 1)]["threads_via"] == "flag"
    assert by[("e2e", 1, 1)]["threads_via"] == "env" and by[("e2e", 4, 1)]["distinct_images"] == 2
    assert by[("tflite", 1, 1)]["delegate"].startswith("XNNPACK")
    assert by[("tflite-int8", 1, 1)]["quantization"].startswith("integer")
    for m in ("e2e", "tflite"):  # the batch is really filled: 4 images cost more than 1
        assert by[(m, 4, 1)]["latency_ms"] > 1.5 * by[(m, 1, 1)]["latency_ms"]
    b4 = json.loads((run / "exports" / "efficientdet-d0-b4" / "export.json").read_text())
    assert b4["batch_size"] == 4 and b4["saved_model"]["detections_shape"] == [4, 100, 7]
    assert b4["tflite"]["detections_shape"] == [4, 100, 7] and b4["quantized"]["int8"]["ok"]
    assert "--batch_size=4" in b4["command"]
    progress = _read_jsonl(str(run / "benchmark.progress.jsonl"))
    assert len(progress) == 8 and progress[0]["line"].startswith("d0 bm batch 1 threads 1 repeat 1/1: ")
    assert json.loads((run / "benchmark_status.json").read_text())["state"] == "finished"

    # 4b. crosscheck: each mode through the stage and its printed command by hand in /bin/sh
    #     (one measurement each, as the benchmark's repeats say)
    r = _stage("crosscheck", cfg_path)
    assert r.returncode == 0, r.stdout + r.stderr
    cc = json.loads((run / "crosscheck.json").read_text())
    assert [p["mode"] for p in cc["pairs"]] == modes
    for p in cc["pairs"]:
        assert len(p["stage_runs_ms"]) == len(p["by_hand_runs_ms"]) == 1, p
        assert "CUDA_VISIBLE_DEVICES=-1 " in p["by_hand_command"]
        # the same command: the two agree to well within what separates batch 1 from batch 4
        assert abs(p["diff_pct"]) < 50, p

    # 5. infer on 2 images -> annotated images, each mapped to its input
    r = _stage("infer", cfg_path)
    assert r.returncode == 0, r.stdout + r.stderr
    inf = json.loads((run / "infer.json").read_text())
    assert inf["ok"] and len(inf["images"]) == 2
    for im in inf["images"]:
        stem = os.path.splitext(os.path.basename(im["input"]))[0]
        assert os.path.basename(im["output"]) == stem + ".jpg"
        with Image.open(im["output"]) as o, Image.open(im["input"]) as i:
            assert o.format == "JPEG" and o.size == i.size == (320, 240)
            other = [x for x in inf["images"] if x is not im][0]["input"]
            with Image.open(other) as oth:
                a = np.asarray(o.convert("RGB"), np.float32)
                assert np.abs(a - np.asarray(i, np.float32)).mean() < np.abs(a - np.asarray(oth, np.float32)).mean()

    # 6. status sees every output; benchreport renders the run
    st = _status(cfg_path)
    assert st["outputs"] == {"export": True, "benchmark_records": 8, "infer": True}
    r = run_cli("-m", "effdetlab.benchreport", str(run), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report.md").read_text()
    assert "| chain-test | efficientdet-d0 | bm | cpu | 1 | 1 | 128x128 |" in md
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"chain test: {time.monotonic() - t0:.0f} s")


def test_infer_with_a_quiet_2020_model_inspect(tmp_path):
    """automl 9f1cf16's model_inspect.py turns absl logging down to WARNING: no "writing file to"
    lines. The stage passes --verbosity=0, and where the lines still do not come, it takes what
    saved_model_infer wrote (<i>.jpg, in its all_files order) from the output folder. The stand-in
    prints all_files and writes each input, flipped, without logging it."""
    from PIL import Image
    checkout = _real_2020_checkout(tmp_path)
    insp = os.path.join(checkout, "efficientdet", "model_inspect.py")
    with open(insp, "a") as f:
        f.write(
            "import glob, sys\n"
            "from PIL import Image\n"
            "args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)\n"
            "assert args.get('verbosity') == '0', sys.argv\n"
            "files = sorted(glob.glob(args['input_image']), reverse=True)\n"
            "print('all_files=', files)\n"
            "for i, p in enumerate(files):\n"
            "    Image.open(p).transpose(Image.FLIP_LEFT_RIGHT).save('%s/%d.jpg' % (args['output_image_dir'], i))\n"
            "if False:  # what 9f1cf16's __main__ does; the detection reads it\n"
            "  logging.set_verbosity(logging.WARNING)\n")
    images = tmp_path / "imgs"
    images.mkdir()
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0)), ("c", (0, 0, 200))):
        Image.new("RGB", (40, 30), colour).save(images / f"{name}.jpg")
    sm = tmp_path / "run" / "saved_model"
    sm.mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"")
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout, infer_images=str(images), python=PY)
    cfg.pop("save_checkpoints_steps")
    r = run_cli("-m", "effdetlab.stages", "infer", "--config", _write_cfg(tmp_path, cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tmp_path / "run" / "infer.json") as f:
        summary = json.load(f)
    assert summary["ok"] and len(summary["images"]) == 3, summary
    for item in summary["images"]:
        stem = os.path.splitext(os.path.basename(item["output"]))[0]
        assert os.path.basename(item["input"]).endswith(f"{stem}.jpg"), item
        with Image.open(item["output"]) as im:
            assert im.size == (40, 30)
            assert max(range(3), key=lambda k: im.getpixel((5, 5))[k]) == "abc".index(stem)


def _write_cfg(tmp_path, cfg) -> str:
    path = str(tmp_path / "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def test_2020_05_training_log_gives_the_final_loss(tmp_path):
    """automl 9f1cf16 on TF 2.1 (recorded on the stand-in) logs no per-step loss: its TPUEstimator
    writes global_step/sec and "Loss for final step" only. The stage keeps that loss in the status
    (final_loss, and last_loss where no step line gave one); progress.jsonl is there, empty."""
    checkout = _real_2020_checkout(tmp_path)
    main = os.path.join(checkout, "efficientdet", "main.py")
    with open(main) as f:
        text = f.read()
    with open(main, "w") as f:
        f.write(text.replace("main-train-d0-128.log", "main-2020-05-train_and_eval-d0-128.tf2.1.log"))
    cfg = base_cfg(tmp_path, code_source="git", code_dir=checkout, python=PY, mode="train",
                   save_checkpoints_steps=100, explicit=[])
    r = run_cli("-m", "effdetlab.stages", "train", "--config", _write_cfg(tmp_path, cfg), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run"
    status = json.loads((run / "train_status.json").read_text())
    assert status["state"] == "finished"
    assert status["final_loss"] == status["last_loss"] == 3.710699, status
    assert (run / "progress.jsonl").read_text() == ""
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert evals and evals[-1]["step"] == 4 and "AP" in evals[-1]["metrics"], evals
