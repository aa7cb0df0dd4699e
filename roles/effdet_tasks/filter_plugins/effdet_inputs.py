"""effdet_hparam_rules: automl hparams as rule items for tasks/validate.yml.

Each hparam of effdet_tasks_hparams and effdet_tasks_benchmark_hparams
becomes one item per rule, {var, value, rule, ok}, with value the offending
{key: value}, so the loop's assert names the variable, the hparam and the one
rule it broke. The patterns come from tasks/validate.yml. Free of Ansible
imports, so tests/unit/test_effdet_inputs.py exercises it directly.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

NAME_RULE = "an automl hparam name is a dotted identifier such as nms_configs.method"
VALUE_RULE = ("an automl hparam value is one scalar on one line, without ',' or '=' "
              "(automl's --hparams is k=v,k=v)")
NUM_CLASSES_RULE = "num_classes is the number of classes, an integer >= 1 (the label map's ids are 1..num_classes)"
IMAGE_SIZE_RULE = ("image_size is an image size in pixels (an integer >= 32) or WIDTHxHEIGHT such as 640x480; "
                   "automl needs no multiple of 128 (its feature sizes round up)")
MAPPING_RULE = "a mapping of automl hparam names to values"


def _full(pattern: str, value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _scalar_text(value: Any) -> Any:
    """The text automl would see for a scalar; None for a list, mapping or null."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def effdet_hparam_rules(dicts: Mapping[str, Any], name_pattern: str, value_pattern: str,
                        image_size_pattern: str) -> list[dict[str, Any]]:
    """[{var, value, rule, ok}] for every hparam of every variable in dicts ({var name: hparams})."""
    rules: list[dict[str, Any]] = []
    for var, hparams in dicts.items():
        if not isinstance(hparams, Mapping):
            rules.append({"var": var, "value": hparams, "rule": MAPPING_RULE, "ok": False})
            continue
        for key, value in hparams.items():
            text = _scalar_text(value)
            checks = [(NAME_RULE, _full(name_pattern, key)),
                      (VALUE_RULE, text is not None and _full(value_pattern, text))]
            if key == "num_classes":
                checks.append((NUM_CLASSES_RULE, not isinstance(value, bool) and _full(r"[1-9][0-9]{0,5}", text)))
            elif key == "image_size":
                checks.append((IMAGE_SIZE_RULE, not isinstance(value, (bool, float)) and _full(image_size_pattern, text)))
            rules.extend({"var": var, "value": {str(key): value}, "rule": rule, "ok": bool(ok)} for rule, ok in checks)
    return rules


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"effdet_hparam_rules": effdet_hparam_rules}
