"""effdet_lab.lab.input_rule_failures, the one evaluator of the roles' input
rules: every kind of rule and the values Ansible hands it (strings with a
newline, None, booleans, numbers, lists, mappings). That every declared rule
has exactly one kind is checked in test_input_rules.py, beside the rules'
patterns."""
from __future__ import annotations

from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
rules = load_module(REPO / "plugins" / "filter" / "input_rules.py", "effdet_input_rules")


def rule(**kind) -> dict:
    return {"var": "v", "rule": "the rule", **kind}


@pytest.mark.parametrize("kind, passes, shown", [
    (dict(value="abc", pattern="[a-z]+"), True, "abc"),
    (dict(value="abc\n", pattern="[a-z]+"), False, "abc\n"),                 # fullmatch: no trailing newline
    (dict(value="abc; id", pattern="[a-z]+"), False, "abc; id"),
    (dict(value=None, pattern="[a-z]*"), False, None),                         # None is the string "None"
    (dict(value=None, pattern="(None)?"), True, None),
    (dict(value=False, pattern="False"), True, False),
    (dict(value=["a", "b"], pattern=r"\['a', 'b'\]"), True, ["a", "b"]),      # a list is its Python text
    (dict(value=22, min=1, max=65535), True, 22),
    (dict(value="22", min=1, max=65535), True, "22"),
    (dict(value=70000, min=1, max=65535), False, 70000),
    (dict(value=-1, min=0, max=5), False, -1),
    (dict(value=True, min=0, max=5), False, True),                            # a boolean is not a number
    (dict(value=3.0, min=0, max=5), False, 3.0),
    (dict(value="22\nPermitRootLogin yes", min=1, max=65535), False, "22\nPermitRootLogin yes"),
    (dict(value=["a", "B", "c1"], pattern="[a-z]+", each=True), False, ["B", "c1"]),   # only what breaks it
    (dict(value=[1, 2, 300], pattern="[0-9]{1,2}", each=True), False, [300]),
    (dict(value=[], pattern="[a-z]+", each=True), True, []),
    (dict(value="abc", pattern="[a-z]+", each=True), False, "abc"),           # a string where a list belongs
    (dict(value={"k": "v"}, pattern="[a-z]+", each=True), False, {"k": "v"}),
    (dict(value=None, pattern="[a-z]+", each=True), False, None),
    (dict(value="x", ok=True), True, None),                                    # value not needed
    (dict(value="x", ok=False), False, "x"),
    (dict(value="x", ok="yes"), False, "x"),                                  # only the boolean true passes
])
def test_each_kind_of_rule(kind, passes, shown):
    assert rules.check_rule(rule(**kind)) == (passes, shown)
    failures = rules.input_rule_failures([rule(**kind)])
    assert failures == ([] if passes else [{"var": "v", "value": shown, "rule": "the rule"}])


class OnlyOnDemand(dict):
    """A rule whose value must not be read: Ansible renders a lazy value where it is read."""
    def __getitem__(self, key):
        if key == "value":
            raise AssertionError("the value of a passing precomputed test was rendered")
        return super().__getitem__(key)


def test_a_passing_precomputed_test_does_not_render_its_value():
    passing = OnlyOnDemand(var="v", value="{{ costly }}", ok=True, rule="the rule")
    assert rules.check_rule(passing) == (True, None)
    assert rules.input_rule_failures([passing]) == []


def test_failures_keep_the_rules_order_and_names():
    given = [rule(value="ok", pattern="ok"), {"var": "b", "value": 0, "min": 1, "max": 2, "rule": "r b"},
             {"var": "a", "value": ["x", "1"], "pattern": "[0-9]", "each": True, "rule": "r a"}]
    assert rules.input_rule_failures(given) == [{"var": "b", "value": 0, "rule": "r b"},
                                                {"var": "a", "value": ["x"], "rule": "r a"}]
