"""sshd settings per OpenSSH version: the bands and the names each band knows.

A band is an OpenSSH release from which on the rendered settings stay the
same: lab_image_sshd_oldest and every `since`/`until` of
lab_image_sshd_versions above it. The build picks the newest band not newer
than the installed sshd (templates/sshd-setup.sh.j2).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

BAND_FILE = re.compile(r"^sshd-([0-9]+\.[0-9]+)\.conf$")


def version_tuple(text: Any) -> tuple[int, int]:
    """'8.7' -> (8, 7); also takes '7.6p1' and 'OpenSSH_9.2p1 Debian-2'."""
    m = re.search(r"([0-9]+)\.([0-9]+)", str(text))
    if not m:
        raise ValueError(f"not an OpenSSH version: {text!r}")
    return int(m.group(1)), int(m.group(2))


def lab_image_sshd_bands(versions: Mapping[str, Mapping[str, Any]], oldest: Any) -> list[str]:
    floor = version_tuple(oldest)
    marks = {floor}
    for rule in versions.values():
        for key in ("since", "until"):
            if rule.get(key) is not None and not rule.get("backported") and version_tuple(rule[key]) > floor:
                marks.add(version_tuple(rule[key]))
    return [f"{a}.{b}" for a, b in sorted(marks)]


def lab_image_sshd_band_files(bands: Iterable[str], template: str) -> dict[str, str]:
    return {f"sshd-{band}.conf": template for band in bands}


def lab_image_sshd_band_of(filename: Any) -> str:
    m = BAND_FILE.match(str(filename))
    if not m:
        raise ValueError(f"not an sshd band file: {filename!r}")
    return m.group(1)


def lab_image_sshd_known(names: Iterable[str], versions: Mapping[str, Mapping[str, Any]], band: Any) -> list[str]:
    """The names an OpenSSH of this band knows and has not deprecated (backported names stay:
    the build keeps them where `ssh -Q` lists them)."""
    at = version_tuple(band)
    kept = []
    for name in names:
        rule = versions.get(name, {})
        if rule.get("since") is not None and version_tuple(rule["since"]) > at and not rule.get("backported"):
            continue
        if rule.get("until") is not None and version_tuple(rule["until"]) <= at:
            continue
        kept.append(name)
    return kept


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "lab_image_sshd_bands": lab_image_sshd_bands,
            "lab_image_sshd_band_files": lab_image_sshd_band_files,
            "lab_image_sshd_band_of": lab_image_sshd_band_of,
            "lab_image_sshd_known": lab_image_sshd_known,
        }
