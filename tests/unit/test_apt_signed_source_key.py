"""apt_signed_source's key module: only the pinned primary key is ever written.

Real keys, generated with gpg in a throw-away GNUPGHOME (ed25519, so it takes
well under a second): one with a subkey, a second one, one that expired in 2020
(made with --faked-system-time) and a revoked one (its own revocation
certificate imported). The pure logic is called directly; the module itself
runs as a subprocess (Ansible's debug entry point) on file:// and
http://127.0.0.1 URLs, and once through ansible-playbook.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "roles" / "apt_signed_source" / "library"
MODULE = LIBRARY / "apt_signed_source_key.py"
m = load_module(MODULE, "apt_signed_source_key")

SUFFIX = "Nothing was trusted or written."
GPG = shutil.which("gpg") or "gpg"


# ------------------------------------------------------------------- the keys

@dataclass
class Keys:
    folder: Path
    alpha: str  # primary, with a signing subkey
    alpha_sub: str
    beta: str
    expired: str
    revoked: str


def _gpg(home: str, *args: str, stdin: bytes = b"") -> bytes:
    cmd = [GPG, "--homedir", home, "--batch", "--no-tty", "--passphrase", "", "--pinentry-mode", "loopback", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=30).stdout


def _fingerprints(home: str, uid: str) -> List[str]:
    listing = _gpg(home, "--with-colons", "--list-keys", uid).decode()
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]


def _new_key(home: str, uid: str, *extra: str, expiry: str = "2y") -> str:
    _gpg(home, *extra, "--quick-gen-key", uid, "ed25519", "sign", expiry)
    return _fingerprints(home, uid)[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    home = tempfile.mkdtemp(prefix="gpgt")  # short: gpg-agent's socket lives in it
    folder = tmp_path_factory.mktemp("keys")
    try:
        alpha = _new_key(home, "Alpha Repo <alpha@example.org>")
        _gpg(home, "--quick-add-key", alpha, "ed25519", "sign", "1y")
        alpha_sub = _fingerprints(home, alpha)[1]
        beta = _new_key(home, "Beta Intruder <beta@example.org>")
        expired = _new_key(home, "Old Repo <old@example.org>", "--faked-system-time", "20200101T000000", expiry="1d")
        revoked = _new_key(home, "Revoked Repo <revoked@example.org>", expiry="never")
        certificate = (Path(home) / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        _gpg(home, "--import", stdin=certificate.replace(":-----BEGIN", "-----BEGIN").encode())

        def export(name: str, *fprs: str, armor: bool = True) -> None:
            (folder / name).write_bytes(_gpg(home, *(["--armor"] if armor else []), "--export", *fprs))

        export("alpha.asc", alpha)
        export("alpha.gpg", alpha, armor=False)
        export("beta.asc", beta)
        export("expired.asc", expired)
        export("revoked.asc", revoked)
        export("alpha+beta.gpg", alpha, beta, armor=False)
        # the attack: a second key appended to the vendor's armored file
        (folder / "alpha+beta.asc").write_bytes((folder / "alpha.asc").read_bytes() + (folder / "beta.asc").read_bytes())
        (folder / "not-a-key.html").write_text("<html><body>Moved</body></html>\n")
        yield Keys(folder, alpha, alpha_sub, beta, expired, revoked)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def shown_fingerprints(path: Path) -> List[str]:
    """Primary fingerprints in a keyring file, by `gpg --show-keys` (not by the module's parser)."""
    with tempfile.TemporaryDirectory(prefix="gpgs") as home:
        listing = subprocess.run([GPG, "--homedir", home, "--batch", "--with-colons", "--show-keys", str(path)],
                                 capture_output=True, check=True, text=True, timeout=30).stdout
    lines = listing.splitlines()
    return [lines[i + 1].split(":")[9] for i, line in enumerate(lines) if line.startswith("pub:")]


# ------------------------------------------------------------- running it

def run_module(url: str, fingerprint: str, dest: Path, *, allow_http: bool = False, check: bool = False,
               env: Dict[str, str] | None = None) -> dict:
    args = {"url": url, "fingerprint": fingerprint, "dest": str(dest), "allow_http": allow_http,
            "_ansible_check_mode": check, "_ansible_diff": True}
    environ = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1", **(env or {})}
    done = subprocess.run([sys.executable, str(MODULE), json.dumps({"ANSIBLE_MODULE_ARGS": args})],
                          capture_output=True, text=True, timeout=60, env=environ)
    result = json.loads(done.stdout)
    assert (done.returncode != 0) == bool(result.get("failed")), done.stderr
    return result


def refused(result: dict, *phrases: str) -> str:
    assert result.get("failed"), result
    msg = result["msg"]
    assert msg.endswith(SUFFIX), msg
    for phrase in phrases:
        assert phrase in msg, msg
    return msg


@pytest.fixture()
def web(keys: Keys) -> Iterator[str]:
    """http://127.0.0.1:<random port> serving the key folder, stopped after the test."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(keys.folder)))
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------ pure logic

def test_fingerprint_is_normalized_and_must_be_full() -> None:
    assert m.normalize_fingerprint("9dc8 5822 9fc7 dd38 854a  e2d8 8d81 803c 0ebf cd88") == \
        "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
    with pytest.raises(m.Refusal) as refusal:
        m.normalize_fingerprint("0EBFCD88")
    msg = str(refusal.value)
    assert "apt_signed_source_key_fingerprint is '0EBFCD88'" in msg and "40 hexadecimal digits" in msg
    assert msg.endswith(SUFFIX)


@pytest.mark.parametrize("url, allow_http, final, phrase", [
    ("https://download.docker.com/linux/ubuntu/gpg", False, None, ""),
    ("file:///srv/key.asc", False, None, ""),
    ("http://mirror.lan/gpgkey", True, None, ""),
    ("http://mirror.lan/gpgkey", False, None, "apt_signed_source_key_allow_http is false"),
    ("HTTP://mirror.lan/gpgkey", False, None, "http:// is refused unless apt_signed_source_key_allow_http is true"),
    ("https://vendor.example/gpg", False, "http://vendor.example/gpg", "which redirected to 'http://vendor.example/gpg'"),
    ("ftp://vendor.example/gpg", True, None, "an https:// or file:// URL"),
    ("/srv/key.asc", False, None, "an https:// or file:// URL"),
])
def test_url_rules(url: str, allow_http: bool, final: str | None, phrase: str) -> None:
    if not phrase:
        m.check_url(url, allow_http, final)
        return
    with pytest.raises(m.Refusal) as refusal:
        m.check_url(url, allow_http, final)
    msg = str(refusal.value)
    assert f"apt_signed_source_key_url is '{url}'" in msg and phrase in msg and msg.endswith(SUFFIX)


# Recorded from `gpg --with-colons --fixed-list-mode --list-keys` (gpg 2.2.40), uid with an escaped ':'.
LISTING = """\
tru::1:1796307016:0:3:1:5
pub:-:255:22:ABCFAEC7E15CAB92:1796307013:1859379013::-:::scSC:::::ed25519:::0:
fpr:::::::::61BA35F54FB81FCA7506B317ABCFAEC7E15CAB92:
uid:-::::1796307013::9DC8A7AF9C357D2639AC3745EF00F71E12F24EE6::Alpha\\x3a Repo <a@x>::::::::::0:
sub:-:255:22:DF6F0E51DCD491B9:1796307013:1827843013:::::s:::::ed25519::
fpr:::::::::1DB54AE1CCEE1CFF3C3433CDDF6F0E51DCD491B9:
pub:e:255:22:21273C33E2E2DD28:1577836800:1577923200::-:::sc:::::ed25519:::0:
fpr:::::::::AB02F518DA4A76CFB5C4D59421273C33E2E2DD28:
uid:e::::1577836800::B71BA1C0EF2ED6DF1B01AEE0135CEC096A925283::Old <o@x>::::::::::0:
pub:r:255:22:8BE7322B177019FD:1796307013:::-:::sc:::::ed25519:::0:
fpr:::::::::EA6EDCD804F901E8737E74A88BE7322B177019FD:
uid:r::::1796307013::16544C67F3CB726A3CAF71689AA6E1E56A7B85FC::Rev <r@x>::::::::::0:
"""
ALPHA, ALPHA_SUB = "61BA35F54FB81FCA7506B317ABCFAEC7E15CAB92", "1DB54AE1CCEE1CFF3C3433CDDF6F0E51DCD491B9"
OLD, REV = "AB02F518DA4A76CFB5C4D59421273C33E2E2DD28", "EA6EDCD804F901E8737E74A88BE7322B177019FD"
NOW = 1796400000  # 2026-12-02


def test_parse_colon_listing() -> None:
    alpha, old, rev = m.parse_colon_listing(LISTING)
    assert (alpha.fingerprint, alpha.uids, alpha.expires) == (ALPHA, ["Alpha: Repo <a@x>"], 1859379013)
    assert [sub.fingerprint for sub in alpha.subkeys] == [ALPHA_SUB] and alpha.subkeys[0].uids == []
    assert not alpha.revoked and not alpha.expired(NOW)
    assert old.expired(NOW) and m.format_time(old.expires) == "2020-01-02 00:00:00 UTC"
    assert rev.revoked and rev.expires is None and not rev.subkeys
    assert m.parse_gpg_time("20200102T000000") == 1577923200 and m.parse_gpg_time("") is None


def test_choose_keeps_only_the_pinned_primary_key() -> None:
    key, ignored = m.choose_pinned_key(m.parse_colon_listing(LISTING), ALPHA, ALPHA.lower(), "file:///k", NOW)
    assert key.fingerprint == ALPHA and ignored == [OLD, REV]


def test_choose_refuses_a_subkey_and_names_its_primary_key() -> None:
    with pytest.raises(m.Refusal) as refusal:
        m.choose_pinned_key(m.parse_colon_listing(LISTING), ALPHA_SUB, ALPHA_SUB, "file:///k", NOW)
    msg = str(refusal.value)
    assert f"apt_signed_source_key_fingerprint is '{ALPHA_SUB}'" in msg and "subkey" in msg
    assert f"primary key {ALPHA} (Alpha: Repo <a@x>)" in msg and msg.endswith(SUFFIX)


@pytest.mark.parametrize("pinned, phrase", [
    (OLD, "expired on 2020-01-02 00:00:00 UTC"),
    (REV, "is revoked"),
    ("F" * 40, f"holds no primary key with that fingerprint; it holds {ALPHA} (Alpha: Repo <a@x>), {OLD}"),
])
def test_choose_refuses_expired_revoked_and_absent_keys(pinned: str, phrase: str) -> None:
    with pytest.raises(m.Refusal) as refusal:
        m.choose_pinned_key(m.parse_colon_listing(LISTING), pinned, pinned, "file:///k", NOW)
    msg = str(refusal.value)
    assert f"apt_signed_source_key_fingerprint is '{pinned}'" in msg and phrase in msg and msg.endswith(SUFFIX)


# -------------------------------------------------------- the module, run

def test_single_armored_key_is_installed_then_unchanged(keys: Keys, tmp_path: Path) -> None:
    dest = tmp_path / "repo.gpg"
    spaced = " ".join(keys.alpha[i:i + 4] for i in range(0, 40, 4)).lower()
    first = run_module(f"file://{keys.folder}/alpha.asc", spaced, dest)
    assert first["changed"] and first["fingerprint"] == keys.alpha and first["ignored_fingerprints"] == []
    assert first["uids"] == ["Alpha Repo <alpha@example.org>"] and first["expires"]
    assert shown_fingerprints(dest) == [keys.alpha]
    assert not dest.read_bytes().startswith(b"-----BEGIN")  # binary, as exported
    assert (dest.stat().st_mode & 0o777, dest.stat().st_uid) == (0o644, os.geteuid())
    assert keys.alpha in first["diff"]["after"] and first["diff"]["before"] == ""
    second = run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest)
    assert not second["changed"]


def test_binary_key_is_installed(keys: Keys, tmp_path: Path) -> None:
    dest = tmp_path / "repo.gpg"
    result = run_module(f"file://{keys.folder}/alpha.gpg", keys.alpha, dest)
    assert result["changed"] and shown_fingerprints(dest) == [keys.alpha]
    # the same key, armored this time: the same keyring bytes
    assert not run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest)["changed"]


@pytest.mark.parametrize("name", ["alpha+beta.asc", "alpha+beta.gpg"])
def test_appended_key_is_not_trusted(keys: Keys, tmp_path: Path, name: str) -> None:
    dest = tmp_path / "repo.gpg"
    result = run_module(f"file://{keys.folder}/{name}", keys.alpha, dest)
    assert result["changed"] and result["ignored_fingerprints"] == [keys.beta]
    assert keys.beta in json.dumps(result["warnings"]) and "NOT trusted" in json.dumps(result["warnings"])
    assert shown_fingerprints(dest) == [keys.alpha]


def test_a_keyring_with_an_extra_key_is_replaced(keys: Keys, tmp_path: Path) -> None:
    dest = tmp_path / "repo.gpg"
    dest.write_bytes((keys.folder / "alpha+beta.gpg").read_bytes())
    dest.chmod(0o600)
    result = run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest)
    assert result["changed"] and keys.beta in result["diff"]["before"] and keys.beta not in result["diff"]["after"]
    assert shown_fingerprints(dest) == [keys.alpha] and dest.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("key_file, pinned, phrases", [
    ("alpha.asc", "alpha_sub", ["subkey of the primary key", "Alpha Repo <alpha@example.org>"]),
    ("expired.asc", "expired", ["expired on 2020-01-02 00:00:00 UTC"]),
    ("revoked.asc", "revoked", ["is revoked"]),
    ("beta.asc", "alpha", ["holds no primary key with that fingerprint", "Beta Intruder"]),
    ("not-a-key.html", "alpha", ["holds no OpenPGP public key", "apt_signed_source_key_url is 'file://"]),
    ("missing.asc", "alpha", ["apt_signed_source_key_url is 'file://", "could not be downloaded"]),
])
def test_refusals_write_nothing(keys: Keys, tmp_path: Path, key_file: str, pinned: str, phrases: List[str]) -> None:
    dest = tmp_path / "repo.gpg"
    fingerprint = getattr(keys, pinned)
    result = run_module(f"file://{keys.folder}/{key_file}", fingerprint, dest)
    msg = refused(result, *phrases)
    if pinned != "alpha":
        assert f"apt_signed_source_key_fingerprint is '{fingerprint}'" in msg
    if pinned == "alpha_sub":
        assert keys.alpha in msg
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_http_only_when_allowed(keys: Keys, tmp_path: Path, web: str) -> None:
    dest = tmp_path / "repo.gpg"
    url = f"{web}/alpha+beta.asc"
    refused(run_module(url, keys.alpha, dest),
            f"apt_signed_source_key_url is '{url}' and apt_signed_source_key_allow_http is false",
            "http:// is refused unless apt_signed_source_key_allow_http is true")
    assert not dest.exists()
    result = run_module(url, keys.alpha, dest, allow_http=True)
    assert result["changed"] and result["ignored_fingerprints"] == [keys.beta]
    assert shown_fingerprints(dest) == [keys.alpha]
    refused(run_module(f"{web}/gone.asc", keys.alpha, tmp_path / "other.gpg", allow_http=True),
            "could not be downloaded", "404")


def test_check_mode_writes_nothing(keys: Keys, tmp_path: Path) -> None:
    dest = tmp_path / "repo.gpg"
    result = run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest, check=True)
    assert result["changed"] and keys.alpha in result["diff"]["after"] and not dest.exists()
    dest.write_bytes((keys.folder / "alpha+beta.gpg").read_bytes())
    before = dest.read_bytes()
    assert run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest, check=True)["changed"]
    assert dest.read_bytes() == before


def test_check_mode_without_gpg_reports_a_change(keys: Keys, tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    dest = tmp_path / "repo.gpg"
    result = run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest, check=True,
                        env={"PATH": str(empty_path)})
    assert result["changed"] and result["msg"] == "gpg is not installed yet; the key would be checked after it is"
    assert not dest.exists()
    refused(run_module(f"file://{keys.folder}/alpha.asc", keys.alpha, dest, env={"PATH": str(empty_path)}),
            "gpg is not installed")


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Install
      apt_signed_source_key: {url: "file://{folder}/alpha+beta.asc", fingerprint: "{alpha}", dest: "{dest}"}
      register: first
    - name: Again
      apt_signed_source_key: {url: "file://{folder}/alpha+beta.asc", fingerprint: "{alpha}", dest: "{dest}"}
      register: second
    - name: Check mode, elsewhere
      apt_signed_source_key: {url: "file://{folder}/alpha.asc", fingerprint: "{alpha}", dest: "{dest}.check"}
      check_mode: true
      register: third
    - name: A subkey
      apt_signed_source_key: {url: "file://{folder}/alpha.asc", fingerprint: "{sub}", dest: "{dest}.sub"}
      register: fourth
      ignore_errors: true
    - name: Results
      ansible.builtin.assert:
        that:
          - first is changed and first.ignored_fingerprints == ["{beta}"]
          - second is not changed
          - third is changed
          - fourth is failed and fourth.msg is search("subkey")
"""


def test_through_ansible_playbook(keys: Keys, tmp_path: Path) -> None:
    dest = tmp_path / "repo.gpg"
    playbook = tmp_path / "play.yml"
    text = PLAYBOOK
    for name, value in {"folder": keys.folder, "alpha": keys.alpha, "beta": keys.beta, "sub": keys.alpha_sub,
                        "dest": dest}.items():
        text = text.replace("{" + name + "}", str(value))
    playbook.write_text(text)
    env = {**os.environ, "ANSIBLE_LIBRARY": str(LIBRARY), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "were NOT trusted" in done.stdout + done.stderr
    assert shown_fingerprints(dest) == [keys.alpha]
    assert not Path(f"{dest}.check").exists() and not Path(f"{dest}.sub").exists()
