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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.effdet_lab.lab.plugins.module_utils.dpkg_query import (  # noqa: F401 (the tests' names)
    FORMAT, NAME_RULE, bad_names, bad_names_message, command, failure, parse)


def main() -> None:
    module = AnsibleModule(argument_spec={"names": {"type": "list", "elements": "str", "required": True}},
                           supports_check_mode=True)
    names = list(dict.fromkeys(module.params["names"]))
    bad = bad_names(names)
    if bad:
        module.fail_json(msg=bad_names_message("names", bad))
    if not names:
        module.exit_json(changed=False, **parse("", []))
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    rc, out, err = module.run_command(command(dpkg_query, names), environ_update={"LC_ALL": "C"})
    if failure(rc, err):
        module.fail_json(msg=failure(rc, err), rc=rc)
    module.exit_json(changed=False, **parse(out, names))


if __name__ == "__main__":
    main()
