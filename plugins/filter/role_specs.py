"""effdet_lab.lab.spec_options_without_defaults: a role's main argument spec,
as playbooks/preflight.yml validates the inventory with it.

The preflight checks the inventory's values only, at play level, where role
defaults are not loaded: a spec's default would be applied there, and some are
templates of other roles' variables or of facts, tagged !unsafe, that only mean
something inside the role (each role validates again with its real defaults).
So every option's `default` goes, at every depth of `options`, and nothing
else does (an option that happens to be named `default` stays).

It reads the file's text: the !unsafe tag is read as a plain string, which is
all the preflight needs, since the defaults are removed. Before this filter the
play edited the tag out of the text with regex_replace, parsed it with
from_yaml and removed every key named `default` with ansible.utils.remove_keys,
on every host: about 0.5 s of controller CPU per role and host, most of it in
remove_keys' deep copies.
"""
from __future__ import annotations

from typing import Any, Mapping

import yaml


class _SpecLoader(yaml.SafeLoader):
    """YAML with Ansible's !unsafe tag read as the string it marks."""


_SpecLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _without_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    stripped = {}
    for name, option in options.items():
        option = {key: value for key, value in option.items() if key != "default"}
        if isinstance(option.get("options"), Mapping):
            option["options"] = _without_defaults(option["options"])
        stripped[name] = option
    return stripped


def spec_options_without_defaults(text: str, entry_point: str = "main") -> dict[str, Any]:
    """The options of one entry point of a meta/argument_specs.yml text, without any default."""
    specs = yaml.load(text, Loader=_SpecLoader)["argument_specs"]
    return _without_defaults(specs[entry_point].get("options") or {})


class FilterModule:
    def filters(self) -> dict:
        return {"spec_options_without_defaults": spec_options_without_defaults}
