"""effdet_lab.lab.input_rule_failures: the one evaluator of the roles' input
rules (lab_image, lab_container and effdet_tasks, tasks/validate.yml).

A rule is a mapping {var, value, rule} plus one of:
  pattern             value (as a string) must match it in full;
  pattern, each: true value is a list, every element must match in full;
  min, max            value is an integer (or its digits) in that range;
  ok                  a precomputed test; only the boolean true passes (value is
                      then not read: Ansible renders it only for a refusal).
Matching is re.fullmatch, so no trailing newline slips through. The filter
returns the rules that fail, each as {var, value, rule}, where value is what
breaks the rule (for a list, the elements that do not match), so that a
refusal names the variable, the offending value and the one rule it broke.

It lives at the collection's level because three roles share it (Ansible loads
no role-embedded plugins from a collection role; the roles call it by FQCN).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

INTEGER = re.compile(r"-?[0-9]+")


def _is_list(value: Any) -> bool:
    return not isinstance(value, (str, bytes, Mapping)) and isinstance(value, Iterable)


def _fullmatch(pattern: str, value: Any) -> bool:
    return re.fullmatch(pattern, str(value)) is not None


def check_rule(rule: Mapping[str, Any]) -> tuple[bool, Any]:
    """(passes, what breaks it) for one rule; a passing precomputed test (ok) gives None, unrendered."""
    if "ok" in rule:     # the value is rendered only for a refusal (a precomputed test needs it not)
        passes = rule["ok"] is True
        return passes, None if passes else rule["value"]
    value = rule["value"]
    if "min" in rule:
        digits = INTEGER.fullmatch(str(value)) is not None
        return digits and int(rule["min"]) <= int(value) <= int(rule["max"]), value
    if rule.get("each"):
        if not _is_list(value):
            return False, value
        bad = [element for element in value if not _fullmatch(rule["pattern"], element)]
        return not bad, bad
    return _fullmatch(rule["pattern"], value), value


def input_rule_failures(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rules that fail, in their order, as {var, value, rule}."""
    failures = []
    for rule in rules:
        passes, shown = check_rule(rule)
        if not passes:
            failures.append({"var": rule["var"], "value": shown, "rule": rule["rule"]})
    return failures


class FilterModule:
    def filters(self) -> dict:
        return {"input_rule_failures": input_rule_failures}
