#!/usr/bin/python
"""Which of some Debian packages dpkg has installed, at which version and selection: one dpkg-query."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: dpkg_installed
short_description: Ask dpkg about a few named packages (installed or not, version, selection)
description:
  - Runs one C(dpkg-query --show) for the packages named, and nothing else: read-only, so it runs in check mode too.
  - The roles ask only about the packages they decide on. C(ansible.builtin.package_facts) lists every package
    of the host (hundreds on a minimal host, thousands on a lab server), opens apt's whole cache to do so, and
    keeps the list in the host's facts, which Ansible copies for every later task of the host.
  - C(packages) has C(package_facts)' shape (name to a list of installed instances, one per architecture).
options:
  names:
    description: The packages, by their Debian names (lowercase letters, digits, C(+), C(-) and C(.); 2 characters or more).
    type: list
    elements: str
    required: true
author: effdet-lab
"""

RETURN = r"""
packages:
  description: The installed ones, name to a list of C({name, version, arch, selection, source}), one per architecture.
  type: dict
  returned: always
missing:
  description: The names asked about that are not fully installed (unknown to dpkg, removed, half-installed).
  type: list
  returned: always
selections:
  description: Each name's dpkg selection (install, hold, deinstall, purge, unknown), also where it is not installed.
  type: dict
  returned: always
"""

import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# Debian Policy 5.6.1: lowercase letters, digits, plus, minus and periods, at least two characters, starting
# with a letter or digit. (An arch qualifier is not accepted: the roles ask by plain name.)
NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
FORMAT = "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n"
SELECTIONS = {"u": "unknown", "i": "install", "h": "hold", "r": "deinstall", "p": "purge"}
# The second letter of db:Status-Abbrev: installed (i), or installed with triggers awaited or pending (W, t).
INSTALLED = ("i", "W", "t")


def bad_names(names: list[str]) -> list[str]:
    """The names that break NAME_RULE."""
    return [name for name in names if not isinstance(name, str) or not NAME_RULE.match(name)]


def parse(output: str, names: list[str]) -> dict[str, Any]:
    """dpkg-query's lines (FORMAT) for `names`: the installed packages, the missing names, every selection."""
    packages: dict[str, list[dict[str, str]]] = {}
    selections: dict[str, str] = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] not in names:
            continue
        name, version, arch, abbrev = fields
        abbrev = abbrev.ljust(3)
        selection = SELECTIONS.get(abbrev[0], "unknown")
        # Several architectures of one package: hold wins for the report, as dpkg applies it per instance.
        if selections.get(name) != "hold":
            selections[name] = selection
        if abbrev[1] in INSTALLED:
            packages.setdefault(name, []).append(
                {"name": name, "version": version, "arch": arch, "selection": selection, "source": "apt"})
    for name in names:
        selections.setdefault(name, "unknown")
    return {"packages": packages, "missing": [name for name in names if name not in packages],
            "selections": selections}


def main() -> None:
    module = AnsibleModule(argument_spec={"names": {"type": "list", "elements": "str", "required": True}},
                           supports_check_mode=True)
    names = list(dict.fromkeys(module.params["names"]))
    bad = bad_names(names)
    if bad:
        module.fail_json(msg="names: %s break the rule %s (Debian package names, no architecture qualifier)"
                         % (", ".join(repr(name) for name in bad), NAME_RULE.pattern))
    if not names:
        module.exit_json(changed=False, **parse("", []))
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    # Exit 1 with "no packages found matching" on stderr is how dpkg-query says a name is unknown: not an error.
    rc, out, err = module.run_command([dpkg_query, "--show", "--showformat", FORMAT, "--", *names],
                                      environ_update={"LC_ALL": "C"})
    if rc not in (0, 1) or (rc == 1 and "no packages found matching" not in err):
        module.fail_json(msg="dpkg-query --show failed (exit %d): %s" % (rc, err.strip()), rc=rc)
    module.exit_json(changed=False, **parse(out, names))


if __name__ == "__main__":
    main()
