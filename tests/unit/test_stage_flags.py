"""effdet_tasks tells the stage runner which flag values the inventory set (issue #10).

The train stage's config carries `explicit`: the keys of the droppable flags
(effdetlab/stages/dialect.py FLAGS, DROP_DEFAULT) whose effdet_tasks variable
differs from the role default. Here the expression in effdet_tasks/vars/main.yml
is templated by Ansible's own Templar, in process (no play runs), and checked
against the table and the role's defaults.
"""
from __future__ import annotations

import functools
import re
import sys
import warnings
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import role_docs  # noqa: E402
from effdetlab.stages import config as cfgmod  # noqa: E402
from effdetlab.stages import dialect as dl

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "effdet_tasks"


def stage_config() -> dict:
    """The stage config every stage writes (train, export and infer, each into its own file)."""
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["effdet_tasks_stage_config"]


def explicit_expr() -> str:
    return stage_config()["explicit"]


@functools.lru_cache(maxsize=None)
def _plugins() -> None:
    from ansible.plugins.loader import init_plugin_loader

    with warnings.catch_warnings():  # another test may have set up the collection finder
        warnings.simplefilter("ignore")
        init_plugin_loader()


def template(expr: str, **variables):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    _plugins()
    templar = Templar(loader=DataLoader(), variables=dict(variables, role_path=str(ROLE)))
    return templar.template(trust_as_template(expr))


DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPECS = role_docs.load_specs(ROLE)["main"]["options"]


@pytest.mark.parametrize("value,explicit", [
    (DEFAULTS["effdet_tasks_save_checkpoints_steps"], []),   # left at the role default
    (100, []),
    ("100", []),                                             # -e effdet_tasks_save_checkpoints_steps=100
    (50, ["save_checkpoints_steps"]),
    ("50", ["save_checkpoints_steps"]),
    (1, ["save_checkpoints_steps"]),
])
def test_the_role_lists_what_the_inventory_set(value, explicit):
    assert template(explicit_expr(), effdet_tasks_save_checkpoints_steps=value) == explicit


def test_the_role_covers_every_droppable_flag():
    """Each DROP_DEFAULT row with an effdet_tasks variable is in the role's key -> variable map."""
    pairs = set(re.findall(r"'(\w+)': '(effdet_tasks_\w+)'", explicit_expr()))
    want = {(r.key, v) for r in dl.FLAGS if r.missing == dl.DROP_DEFAULT for v in r.variables}
    assert pairs == want == {("save_checkpoints_steps", "effdet_tasks_save_checkpoints_steps")}


def test_the_written_config_is_valid_for_the_stage(tmp_path):
    """The keys the role writes (explicit included) pass the stage's config validation."""
    assert set(stage_config()) <= cfgmod._KNOWN_KEYS
    cfg = {"run_dir": str(tmp_path), "save_checkpoints_steps": 100,
           "explicit": template(explicit_expr(), effdet_tasks_save_checkpoints_steps=100)}
    assert cfgmod.from_dict(cfg).explicit == []


def test_one_default_everywhere():
    """The role default, the argument spec's and the stage's own agree: 'only our default' holds
    for a config the stage is given by hand as well."""
    stage = cfgmod.from_dict({"run_dir": "/tmp/x"})
    assert DEFAULTS["effdet_tasks_save_checkpoints_steps"] == 100
    assert SPECS["effdet_tasks_save_checkpoints_steps"]["default"] == 100
    assert stage.save_checkpoints_steps == 100


def test_every_variable_in_the_table_is_an_effdet_tasks_option():
    named = {v for r in dl.FLAGS for v in r.variables}
    assert named <= set(SPECS), named - set(SPECS)
    # the variables that reach an automl flag, each classified
    assert named >= {
        "effdet_tasks_mode", "effdet_tasks_model_name", "effdet_tasks_train_set", "effdet_tasks_val_set",
        "effdet_tasks_train_batch_size", "effdet_tasks_eval_batch_size", "effdet_tasks_eval_samples",
        "effdet_tasks_num_epochs", "effdet_tasks_num_examples_per_epoch", "effdet_tasks_hparams",
        "effdet_tasks_ckpt", "effdet_tasks_save_checkpoints_steps", "effdet_tasks_min_score_thresh",
        "effdet_tasks_tflite", "effdet_tasks_benchmark_models", "effdet_tasks_benchmark_batch_sizes",
        "effdet_tasks_benchmark_threads", "effdet_tasks_benchmark_runs", "effdet_tasks_benchmark_hparams",
        "effdet_tasks_infer_src", "effdet_tasks_image_size"}


@pytest.mark.parametrize("stage,config_file", [("train", "config.json"), ("export", "export.config.json"),
                                               ("infer", "infer.config.json")])
def test_each_stage_writes_the_stage_config_into_its_own_file_and_runs_with_it(stage, config_file):
    """A stage run alone (--tags export) runs with the values given now: it writes the whole stage
    config itself, and its command reads that file."""
    tasks = yaml.safe_load((ROLE / "tasks" / f"{stage}.yml").read_text())
    writes = [t["effdet_safe_fs"] for t in tasks if t.get("effdet_safe_fs", {}).get("op") == "write"
              and t["effdet_safe_fs"]["path"].endswith("/" + config_file)]
    assert len(writes) == 1 and writes[0]["content"] == "{{ effdet_tasks_run_config | to_nice_json }}\n"
    runs = [t["effdet_stage"]["run"] for t in tasks if stage in t.get("effdet_stage", {}).get("run", [])]
    assert runs and all(argv[argv.index("--config") + 1].endswith(config_file) for argv in runs), runs
