#!/usr/bin/python
"""A role's read-only looks at a host in one module call: dpkg, a systemd unit, one file, some paths."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_probe
short_description: One read-only look at a host for a role's preflight (dpkg, a unit, a file, paths)
description:
  - Everything a role's preflight reads from a host, in one module call instead of one per
    C(ansible.builtin.stat), C(slurp), C(systemd_service), C(find) and C(effdet_lab.lab.dpkg_installed).
    Each module call costs a worker on the controller and a module run on the host, and a no-change
    re-run of the host layer made 15 of them per host.
  - Changes nothing, so it runs in check mode too. Every part is optional. C(unit), C(unit_exec) and C(file) are
    returned only where asked for; C(packages), C(missing), C(selections) and C(present) are empty where not.
  - C(packages) answers as C(effdet_lab.lab.dpkg_installed) does (one C(dpkg-query --show)).
  - C(unit) answers as C(ansible.builtin.systemd_service) without a state does (C(systemctl show), parsed the
    same way, multi-line C(Exec*) values included), and says whether the program its C(ExecStart) names exists.
  - C(file) never follows a link. A link or a folder is reported as not regular and not read, and a regular
    file is opened with C(O_NOFOLLOW) and read only up to C(max_bytes).
options:
  packages:
    description: Debian package names to ask dpkg about (lowercase letters, digits, C(+), C(-) and C(.); 2 characters or more).
    type: list
    elements: str
    default: []
  unit:
    description: A systemd unit to read (C(systemctl show)); its name is letters, digits and C(@._-), and may end in a unit type.
    type: str
  unit_properties:
    description: The properties of C(unit) to read (C(systemctl show --property)); none means all of them.
    type: list
    elements: str
    default: []
  file:
    description: An absolute path to look at without following links, and to read when it is a regular file.
    type: path
  read:
    description: Whether a regular C(file) is read (C(content)); false looks at it only.
    type: bool
    default: true
  max_bytes:
    description: The most of C(file) that is read; a longer file fails the module (nothing a role reads is that big).
    type: int
    default: 1048576
  present:
    description: Absolute paths; the ones that exist (a dangling link counts) are returned.
    type: list
    elements: path
    default: []
author: effdet-lab
"""

EXAMPLES = r"""
- name: Look at daemon.json and docker.service in one call
  effdet_lab.lab.host_probe:
    file: /etc/docker/daemon.json
    unit: docker
  register: probe
"""

RETURN = r"""
packages:
  description:
    - As effdet_lab.lab.dpkg_installed, the installed ones (name to a list of instances).
    - C(missing) and C(selections) come with it; all three are empty where no package is asked about.
  type: dict
  returned: always
unit:
  description:
    - The unit's properties as C(systemctl show) gives them.
    - For example C(LoadState), C(ActiveState), C(UnitFileState), C(ExecStart), C(DropInPaths).
  type: dict
  returned: when unit is given
unit_exec:
  description:
    - C({path, exists}) of the program the unit's C(ExecStart) names.
    - C(path) is '' where it names none, or where C(unit_properties) leaves C(ExecStart) out.
  type: dict
  returned: when unit is given
file:
  description:
    - C({path, exists, isreg, islnk, isdir, size}); where it exists also C(mode) (4 octal digits), C(uid) and C(gid).
    - For a regular file that is read, C(content) (base64).
  type: dict
  returned: when file is given
present:
  description: The paths of C(present) that exist, in the order given.
  type: list
  returned: always
"""

import base64
import errno
import os
import re
import stat
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.effdet_lab.lab.plugins.module_utils.dpkg_query import (
    bad_names, bad_names_message, command, failure, parse)

UNIT_RULE = re.compile(r"^[A-Za-z0-9@._-]+$")
PROPERTY_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
EXEC_PATH = re.compile(r"path=(\S+)")


def parse_systemctl_show(lines: list[str]) -> dict[str, str]:
    """`systemctl show`'s key=value lines; an Exec* value that opens with { and does not close on its line
    goes on until a line that ends with } (as ansible.builtin.systemd_service reads them)."""
    parsed: dict[str, str] = {}
    multival: list[str] = []
    key = None
    for line in lines:
        if key is None:
            if "=" in line:
                key, value = line.split("=", 1)
                if key.startswith("Exec") and value.lstrip().startswith("{") and not value.rstrip().endswith("}"):
                    multival.append(value)
                    continue
                parsed[key] = value.strip()
                key = None
        else:
            multival.append(line)
            if line.rstrip().endswith("}"):
                parsed[key] = "\n".join(multival).strip()
                multival = []
                key = None
    return parsed


def exec_path(exec_start: str) -> str:
    """The program an ExecStart value runs (its first path=), '' where it names none."""
    found = EXEC_PATH.search(exec_start or "")
    return found.group(1) if found else ""


def look_at_file(path: str, max_bytes: int, read: bool = True) -> dict[str, Any]:
    """What lstat says of path and, for a regular file when read, its content (base64), read without following
    a link."""
    try:
        info = os.lstat(path)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return {"path": path, "exists": False, "isreg": False, "islnk": False, "isdir": False, "size": 0}
        raise
    found = {"path": path, "exists": True, "isreg": stat.S_ISREG(info.st_mode), "islnk": stat.S_ISLNK(info.st_mode),
             "isdir": stat.S_ISDIR(info.st_mode), "size": info.st_size, "mode": "%04o" % stat.S_IMODE(info.st_mode),
             "uid": info.st_uid, "gid": info.st_gid}
    if found["isreg"] and read:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError("%s is over max_bytes (%d): not read" % (path, max_bytes))
        found["content"] = base64.b64encode(data).decode("ascii")
    return found


def input_errors(params: dict[str, Any]) -> list[str]:
    """Each input that breaks its rule, as a sentence naming the input, the value and the rule."""
    errors = []
    bad = bad_names(params["packages"])
    if bad:
        errors.append(bad_names_message("packages", bad))
    unit = params.get("unit")
    if unit is not None and not UNIT_RULE.match(unit):
        errors.append("unit: %r breaks the rule %s" % (unit, UNIT_RULE.pattern))
    errors += ["unit_properties: %r breaks the rule %s" % (name, PROPERTY_RULE.pattern)
               for name in params["unit_properties"] if not PROPERTY_RULE.match(str(name))]
    for option, paths in (("file", [params["file"]] if params.get("file") is not None else []),
                          ("present", params["present"])):
        errors += ["%s: %r breaks the rule: an absolute path" % (option, path)
                   for path in paths if not str(path).startswith("/")]
    if params["max_bytes"] < 1:
        errors.append("max_bytes: %r breaks the rule: 1 or more" % params["max_bytes"])
    return errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "unit": {"type": "str"},
            "unit_properties": {"type": "list", "elements": "str", "default": []},
            "file": {"type": "path"},
            "max_bytes": {"type": "int", "default": 1048576},
            "read": {"type": "bool", "default": True},
            "present": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True)
    params = module.params
    errors = input_errors(params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    result: dict[str, Any] = {"changed": False}

    names = list(dict.fromkeys(params["packages"]))
    out = ""
    if names:
        rc, out, err = module.run_command(command(module.get_bin_path("dpkg-query", required=True), names),
                                          environ_update={"LC_ALL": "C"})
        if failure(rc, err):
            module.fail_json(msg=failure(rc, err), rc=rc)
    result.update(parse(out, names))

    if params.get("unit") is not None:
        systemctl = module.get_bin_path("systemctl", required=True)
        properties = ["--property=%s" % name for name in params["unit_properties"]]
        rc, out, err = module.run_command([systemctl, "show", "--no-pager", *properties, "--", params["unit"]],
                                          environ_update={"LC_ALL": "C"})
        if rc != 0:
            module.fail_json(msg="systemctl show %s failed (exit %d): %s" % (params["unit"], rc, err.strip()), rc=rc)
        unit = parse_systemctl_show(out.splitlines())
        program = exec_path(unit.get("ExecStart", ""))
        result["unit"] = unit
        result["unit_exec"] = {"path": program, "exists": bool(program) and os.path.lexists(program)}

    if params.get("file") is not None:
        try:
            result["file"] = look_at_file(params["file"], params["max_bytes"], params["read"])
        except (OSError, ValueError) as error:
            module.fail_json(msg="file: %s" % error)

    result["present"] = [path for path in params["present"] if os.path.lexists(path)]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
