#!/usr/bin/python
# -*- coding: utf-8 -*-
# effdet-lab, Apache-2.0
"""Install only the pinned OpenPGP key of an apt source, as a binary keyring.

The pure logic (URL and fingerprint rules, parsing `gpg --with-colons`,
choosing the pinned key) lives in plain functions that raise `Refusal`, so the
unit tests import and call them directly; `main()` only downloads, runs gpg
and writes.
"""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: apt_signed_source_key
short_description: Install only the pinned OpenPGP key of an apt source
description:
  - Downloads an OpenPGP public key file (armored or binary), imports it into a throw-away GnuPG home and
    refuses it unless the pinned fingerprint is that of a primary key in the file that is neither expired
    nor revoked.
  - Writes only that key (C(gpg --export), binary) to O(dest); any other key in the file is reported in
    RV(ignored_fingerprints) and as a warning, and is not trusted.
  - Every refusal names the role variable, its value and the rule broken, and writes nothing.
options:
  url:
    description: https:// or file:// URL of the key file (http:// only with O(allow_http)).
    type: str
    required: true
  fingerprint:
    description: The full fingerprint (40 hex digits, spaces allowed, any case) of the primary key to trust.
    type: str
    required: true
  dest:
    description: Where the binary keyring is written (mode 0644, owned by root when run as root).
    type: path
    required: true
  allow_http:
    description: Accept a plain http:// URL (for a repository on a network you trust).
    type: bool
    default: false
notes:
  - Needs C(gpg) on the host. In check mode without gpg it reports a change instead of failing.
  - Supports check mode and diff mode (fingerprints and sha256 of the keyring before and after).
"""

EXAMPLES = r"""
- name: Install Docker's key
  apt_signed_source_key:
    url: https://download.docker.com/linux/ubuntu/gpg
    fingerprint: 9DC8 5822 9FC7 DD38 854A  E2D8 8D81 803C 0EBF CD88
    dest: /etc/apt/keyrings/docker.gpg
"""

RETURN = r"""
fingerprint:
  description: The pinned fingerprint, normalized.
  returned: success
  type: str
uids:
  description: User IDs of the pinned key.
  returned: success
  type: list
  elements: str
expires:
  description: Expiry of the pinned key (UTC), or null if it never expires.
  returned: success
  type: str
ignored_fingerprints:
  description: Primary keys in the file besides the pinned one; not written, not trusted.
  returned: success
  type: list
  elements: str
"""

import datetime
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, List, NoReturn, Optional, Tuple
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

SUFFIX = "Nothing was trusted or written."
URL_VAR = "apt_signed_source_key_url"
FPR_VAR = "apt_signed_source_key_fingerprint"
HTTP_VAR = "apt_signed_source_key_allow_http"
GPG_MISSING_IN_CHECK_MODE = "gpg is not installed yet; the key would be checked after it is"
MAX_KEY_BYTES = 4 * 1024 * 1024


class Refusal(Exception):
    """An input the module will not trust; str() is the whole user-facing message."""


@dataclass
class Key:
    """A primary key or subkey from a `gpg --with-colons` listing."""

    fingerprint: str = ""
    validity: str = ""
    created: Optional[int] = None
    expires: Optional[int] = None
    uids: List[str] = field(default_factory=list)
    subkeys: List["Key"] = field(default_factory=list)

    @property
    def revoked(self) -> bool:
        return self.validity == "r"

    def expired(self, now: float) -> bool:
        return self.validity == "e" or (self.expires is not None and self.expires <= now)

    def describe(self) -> str:
        return f"{self.fingerprint} ({self.uids[0]})" if self.uids else self.fingerprint


# ---------------------------------------------------------------- input rules

def normalize_fingerprint(value: str) -> str:
    """Spaces removed, upper case; 40 hex digits or Refusal."""
    fingerprint = re.sub(r"\s+", "", value or "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}", fingerprint):
        raise Refusal(
            f"{FPR_VAR} is '{value}': it must be the full fingerprint of the repository's primary key, "
            f"40 hexadecimal digits (spaces allowed), not a short key ID. {SUFFIX}")
    return fingerprint


def check_url(url: str, allow_http: bool, final_url: Optional[str] = None) -> None:
    """Refuse schemes other than https:// and file://, and http:// unless allowed.

    final_url is where a download ended up after redirects, if it differs.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("https", "file", "http"):
        raise Refusal(
            f"{URL_VAR} is '{url}': the key must come from an https:// or file:// URL "
            f"(http:// only with {HTTP_VAR}: true). {SUFFIX}")
    where = f"'{url}'" if not final_url or final_url == url else f"'{url}', which redirected to '{final_url}',"
    effective = urlsplit(final_url).scheme.lower() if final_url else scheme
    if "http" in (scheme, effective) and not allow_http:
        raise Refusal(
            f"{URL_VAR} is {where} and {HTTP_VAR} is false: a key fetched over plain http:// can be "
            f"replaced on the way, so http:// is refused unless {HTTP_VAR} is true (only for a repository "
            f"on a network you trust). {SUFFIX}")


# ------------------------------------------------------ gpg --with-colons

def parse_gpg_time(value: str) -> Optional[int]:
    """A colon-listing date: seconds since the epoch or ISO 8601 (YYYYMMDDTHHMMSS); empty -> None."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    parsed = datetime.datetime.strptime(value, "%Y%m%dT%H%M%S")
    return int(parsed.replace(tzinfo=datetime.timezone.utc).timestamp())


def format_time(seconds: Optional[int]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def unescape_colon_field(value: str) -> str:
    r"""gpg escapes ':' and control characters in colon listings as \xHH."""
    return re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_colon_listing(text: str) -> List[Key]:
    """Primary keys (with their uids and subkeys) from `gpg --with-colons --fixed-list-mode` output."""
    keys: List[Key] = []
    current: Optional[Key] = None  # the pub or sub record whose fpr comes next
    for line in text.splitlines():
        fields = line.split(":")
        record = fields[0]
        if record in ("pub", "sub") and len(fields) > 6:
            current = Key(validity=fields[1], created=parse_gpg_time(fields[5]), expires=parse_gpg_time(fields[6]))
            if record == "pub":
                keys.append(current)
            elif keys:
                keys[-1].subkeys.append(current)
        elif record == "fpr" and len(fields) > 9 and current is not None and not current.fingerprint:
            current.fingerprint = fields[9].upper()
        elif record == "uid" and len(fields) > 9 and keys:
            keys[-1].uids.append(unescape_colon_field(fields[9]))
    return keys


# ------------------------------------------------------------- the decision

def choose_pinned_key(keys: List[Key], pinned: str, given: str, url: str, now: float,
                      gpg_note: str = "") -> Tuple[Key, List[str]]:
    """The pinned primary key and the fingerprints of the other primary keys in the file.

    Refusal when the pinned fingerprint is no primary key's (a subkey's is named as such), or when
    the pinned key is revoked or expired. gpg_note: what gpg said while importing, for the refusal.
    """
    for key in keys:
        if key.fingerprint == pinned:
            refuse_unusable(key, given, url, now)
            return key, [other.fingerprint for other in keys if other is not key]
    for key in keys:
        if any(sub.fingerprint == pinned for sub in key.subkeys):
            raise Refusal(
                f"{FPR_VAR} is '{given}', but in the key file at {url} that is the fingerprint of a subkey "
                f"of the primary key {key.describe()}, not of a primary key. The pinned fingerprint must be "
                f"a primary key's: check out of band that {key.fingerprint} is the vendor's key and pin it "
                f"instead. {SUFFIX}")
    held = ", ".join(key.describe() for key in keys) or "no key"
    note = f" (gpg: {gpg_note})" if gpg_note else ""
    raise Refusal(
        f"{FPR_VAR} is '{given}', but the key file at {url} holds no primary key with that fingerprint; "
        f"it holds {held}{note}. The pinned fingerprint must be that of a primary key in the file: if the "
        f"vendor rotated its key, check the new fingerprint out of band and update {FPR_VAR}. {SUFFIX}")


def refuse_unusable(key: Key, given: str, url: str, now: float) -> None:
    """Refusal when the pinned primary key is revoked or expired."""
    if key.revoked:
        raise Refusal(
            f"{FPR_VAR} is '{given}': that key, {key.describe()}, is revoked in the key file at {url}. "
            f"The pinned key must be neither revoked nor expired: get the vendor's current key, check its "
            f"fingerprint out of band and update {FPR_VAR}. {SUFFIX}")
    if key.expired(now):
        when = format_time(key.expires) or "an unknown date"
        raise Refusal(
            f"{FPR_VAR} is '{given}': that key, {key.describe()}, in the key file at {url} expired on "
            f"{when}. The pinned key must be neither expired nor revoked: vendors usually publish the same "
            f"key with a later expiry date, so check {URL_VAR}, or check the vendor's new key out of band "
            f"and update {FPR_VAR}. {SUFFIX}")


def ignored_warning(url: str, ignored: List[str], pinned: str, dest: str) -> str:
    return (f"The key file at {url} also holds {len(ignored)} other primary key(s), which were NOT trusted: "
            f"{', '.join(ignored)}. Only the pinned key {pinned} was written to {dest}.")


def keyring_summary(data: Optional[bytes], keys: List[Key]) -> str:
    """Diff text for a keyring file: its sha256 and one line per primary key."""
    if data is None:
        return ""
    lines = [f"sha256 {hashlib.sha256(data).hexdigest()}"] + [key.describe() for key in keys]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ the host side

class KeyModule(AnsibleModule):
    """Every failure ends with SUFFIX, including those fetch_url raises itself."""

    fail_prefix = ""

    def fail_json(self, msg: str, **kwargs) -> NoReturn:  # type: ignore[override]
        if not msg.endswith(SUFFIX):
            msg = f"{self.fail_prefix}{msg} {SUFFIX}"
        super().fail_json(msg=msg, **kwargs)


def download(module: KeyModule, url: str, allow_http: bool) -> bytes:
    """The key file's bytes; fails the module on any download problem or an http:// redirect."""
    module.fail_prefix = f"{URL_VAR} is '{url}': the key could not be downloaded: "
    response, info = fetch_url(module, url, timeout=30)
    status = info.get("status")
    if response is None or (urlsplit(url).scheme.lower() != "file" and status != 200):
        module.fail_json(msg=f"{info.get('msg', 'no response')} (status {status}).", status=status)
    try:
        check_url(url, allow_http, info.get("url"))
    except Refusal as refusal:
        module.fail_json(msg=str(refusal))
    data = response.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        module.fail_json(msg=f"it is larger than {MAX_KEY_BYTES} bytes, which no key file is.")
    module.fail_prefix = ""
    return data


class Gpg:
    """gpg in a throw-away home: nothing touches root's keyrings, no agent is started."""

    def __init__(self, run: Callable[..., Tuple[int, bytes, bytes]], gpg_bin: str, home: str) -> None:
        self.run = run
        self.base = [gpg_bin, "--batch", "--no-tty", "--no-autostart", "--homedir", home]
        self.home = home

    def _file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.home, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def import_keys(self, data: bytes) -> Tuple[List[Key], str]:
        """Import the key file and list it; also returns gpg's complaints when the import failed."""
        rc, _out, err = self.run(self.base + ["--import", self._file("downloaded.key", data)])
        keys = self.listing(["--list-keys"])
        return keys, (tail(err) if rc != 0 else "")

    def show(self, data: bytes) -> List[Key]:
        """Keys in a keyring file, without importing it."""
        return self.listing(["--show-keys", self._file("shown.key", data)])

    def listing(self, what: List[str]) -> List[Key]:
        _rc, out, _err = self.run(self.base + ["--with-colons", "--fixed-list-mode"] + what)
        return parse_colon_listing(out.decode("utf-8", "replace"))

    def export(self, fingerprint: str) -> bytes:
        rc, out, err = self.run(self.base + ["--export", fingerprint])
        if rc != 0 or not out:
            raise Refusal(f"gpg could not export the pinned key {fingerprint}: {tail(err)} {SUFFIX}")
        return out


def tail(err: bytes) -> str:
    return " ".join(err.decode("utf-8", "replace").strip().splitlines()[-3:])


def read_existing(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomically(module: KeyModule, dest: str, data: bytes) -> None:
    folder = os.path.dirname(dest) or "."
    if not os.path.isdir(folder):
        module.fail_json(msg=f"The folder {folder} of dest {dest} does not exist. {SUFFIX}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(dest)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_key(module: KeyModule, gpg_bin: str, fingerprint: str) -> dict:
    """Download, check and export; the result dict for exit_json plus the keyring bytes."""
    params = module.params
    url, dest = params["url"], params["dest"]
    data = download(module, url, params["allow_http"])

    def run(cmd: List[str]) -> Tuple[int, bytes, bytes]:
        return module.run_command(cmd, encoding=None, environ_update={"LC_ALL": "C"})

    with tempfile.TemporaryDirectory(prefix="ansible-apt-key-") as home:
        os.chmod(home, 0o700)
        gpg = Gpg(run, gpg_bin, home)
        keys, gpg_note = gpg.import_keys(data)
        if not keys:
            raise Refusal(
                f"{URL_VAR} is '{url}': it holds no OpenPGP public key (gpg: {gpg_note or 'nothing imported'}). "
                f"The URL must serve the repository's public key, armored or binary. {SUFFIX}")
        key, ignored = choose_pinned_key(keys, fingerprint, params["fingerprint"], url, time.time(), gpg_note)
        keyring = gpg.export(fingerprint)
        written = gpg.show(keyring)
        if [k.fingerprint for k in written] != [fingerprint]:
            raise Refusal(f"The exported keyring holds {[k.fingerprint for k in written]}, not exactly the "
                          f"pinned key {fingerprint}. {SUFFIX}")
        before = read_existing(dest)
        before_keys = gpg.show(before) if before else []
    return {
        "keyring": keyring,
        "changed": before != keyring,
        "fingerprint": fingerprint,
        "uids": key.uids,
        "expires": format_time(key.expires),
        "ignored_fingerprints": ignored,
        "diff": {"before_header": dest, "after_header": dest,
                 "before": keyring_summary(before, before_keys), "after": keyring_summary(keyring, written)},
    }


def set_attributes(module: KeyModule, dest: str, changed: bool) -> bool:
    changed = module.set_mode_if_different(dest, "0644", changed)
    if os.geteuid() == 0:
        changed = module.set_owner_if_different(dest, "root", changed)
        changed = module.set_group_if_different(dest, "root", changed)
    return changed


def main() -> None:
    module = KeyModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "fingerprint": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "allow_http": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    dest = params["dest"]
    try:
        fingerprint = normalize_fingerprint(params["fingerprint"])
        check_url(params["url"], params["allow_http"])
    except Refusal as refusal:
        module.fail_json(msg=str(refusal))

    gpg_bin = module.get_bin_path("gpg")
    if gpg_bin is None:
        if module.check_mode:
            download(module, params["url"], params["allow_http"])
            module.exit_json(changed=True, msg=GPG_MISSING_IN_CHECK_MODE, dest=dest, fingerprint=fingerprint)
        module.fail_json(msg=f"gpg is not installed on the host, so the key cannot be checked. {SUFFIX}")

    try:
        result = check_key(module, gpg_bin, fingerprint)
    except Refusal as refusal:
        module.fail_json(msg=str(refusal))

    keyring = result.pop("keyring")
    diff = result.pop("diff")
    if result["ignored_fingerprints"]:
        module.warn(ignored_warning(params["url"], result["ignored_fingerprints"], fingerprint, dest))
    if result["changed"] and not module.check_mode:
        write_atomically(module, dest, keyring)
    result["changed"] = set_attributes(module, dest, result["changed"])
    if module._diff:
        result["diff"] = diff
    result["msg"] = f"{dest} holds only the pinned key {fingerprint}."
    module.exit_json(dest=dest, **result)


if __name__ == "__main__":
    main()
