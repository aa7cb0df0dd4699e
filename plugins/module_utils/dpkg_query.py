"""What dpkg says of a few named packages: one `dpkg-query --show`, parsed.

Shared by the modules effdet_lab.lab.dpkg_installed (dpkg alone) and
effdet_lab.lab.host_probe (dpkg with a role's other read-only looks, in one
module call). Pure Python 3.6+ (the recipe's Ubuntu 18.04 hosts), no Ansible
imports: the caller runs the command.
"""
import re
from typing import Any, Dict, List

# Debian Policy 5.6.1: lowercase letters, digits, plus, minus and periods, at least two characters, starting
# with a letter or digit. (An arch qualifier is not accepted: the roles ask by plain name.)
NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
FORMAT = "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n"
SELECTIONS = {"u": "unknown", "i": "install", "h": "hold", "r": "deinstall", "p": "purge"}
# The second letter of db:Status-Abbrev: installed (i), or installed with triggers awaited or pending (W, t).
INSTALLED = ("i", "W", "t")


def bad_names(names: List[Any]) -> List[Any]:
    """The names that break NAME_RULE."""
    return [name for name in names if not isinstance(name, str) or not NAME_RULE.match(name)]


def bad_names_message(option: str, bad: List[Any]) -> str:
    return "%s: %s break the rule %s (Debian package names, no architecture qualifier)" % (
        option, ", ".join(repr(name) for name in bad), NAME_RULE.pattern)


def command(dpkg_query: str, names: List[str]) -> List[str]:
    return [dpkg_query, "--show", "--showformat", FORMAT, "--"] + list(names)


def failure(rc: int, err: str) -> str:
    """'' where dpkg-query's exit is an answer; else why it failed. Exit 1 with "no packages found
    matching" on stderr is how dpkg-query says a name is unknown: not an error."""
    if rc == 0 or (rc == 1 and "no packages found matching" in err):
        return ""
    return "dpkg-query --show failed (exit %d): %s" % (rc, err.strip())


def parse(output: str, names: List[str]) -> Dict[str, Any]:
    """dpkg-query's lines (FORMAT) for `names`: the installed packages, the missing names, every selection."""
    packages = {}  # type: Dict[str, List[Dict[str, str]]]
    selections = {}  # type: Dict[str, str]
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
