"""A local, really signed, flat apt repository holding the NVIDIA toolkit test double.

It mirrors the shape of NVIDIA's repository (`.../stable/deb/$(ARCH)` with a
flat `/` suite and an armored `gpgkey` beside it) so that the
nvidia_container_toolkit role runs its real code path against it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .shell import REPO_ROOT, STATE_DIR, log, run

DOUBLE_DIR = REPO_ROOT / "tests" / "fixtures" / "nvidia-toolkit-double"
KEY_UID = "effdet-lab test apt repository (TEST ONLY) <labbox@effdet-lab.invalid>"


@dataclass(frozen=True)
class AptRepo:
    root: Path          # served over HTTP as /
    arch_dir: Path      # root/nvidia/stable/deb/<arch>: the .debs, also the offline folder
    fingerprint: str
    version: str


def _gpg(gnupghome: Path, *args: str, input_bytes: bytes | None = None) -> str:
    env_args = ["gpg", "--homedir", str(gnupghome), "--batch", "--yes", "--no-tty"]
    return run([*env_args, *args], input_bytes=input_bytes).stdout


def _ensure_key(gnupghome: Path) -> str:
    gnupghome.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(gnupghome, 0o700)
    proc = run(
        ["gpg", "--homedir", str(gnupghome), "--batch", "--with-colons", "--list-secret-keys"],
        check=False,
    )
    listing = proc.stdout if proc.returncode == 0 else ""
    if "fpr:" not in listing:
        log("generating the test apt repository's signing key")
        _gpg(gnupghome, "--passphrase", "", "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
        listing = _gpg(gnupghome, "--with-colons", "--list-secret-keys")
    for line in listing.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise RuntimeError("no fingerprint found for the test apt key")


def _build_deb(spec: dict, version: str, arch: str, out_dir: Path) -> Path:
    upstream = version.split("-")[0]
    with tempfile.TemporaryDirectory(prefix="labbox-deb-") as tmp:
        pkg = Path(tmp) / spec["name"]
        (pkg / "DEBIAN").mkdir(parents=True)
        for rel, text in spec["files"].items():
            target = pkg / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.replace("{upstream}", upstream))
            target.chmod(0o755)
        doc = pkg / "usr" / "share" / "doc" / spec["name"]
        doc.mkdir(parents=True)
        (doc / "README.test-double").write_text((DOUBLE_DIR / "README.md").read_text())
        control = [
            f"Package: {spec['name']}",
            f"Version: {version}",
            f"Architecture: {arch}",
            "Maintainer: effdet-lab <labbox@effdet-lab.invalid>",
            "Section: utils",
            "Priority: optional",
        ]
        depends = [d.replace("{version}", version) for d in spec["depends"]]
        if depends:
            control.append("Depends: " + ", ".join(depends))
        control.append(f"Description: {spec['description']}")
        (pkg / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        deb = out_dir / f"{spec['name']}_{version}_{arch}.deb"
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(pkg), str(deb)])
    return deb


def ensure_repo(state_dir: Path = STATE_DIR) -> AptRepo:
    """Build (or reuse) the signed repository under state_dir/apt."""
    manifest = json.loads((DOUBLE_DIR / "packages.json").read_text())
    version = manifest["version"]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    gnupghome = state_dir / "gnupg"
    fingerprint = _ensure_key(gnupghome)
    root = state_dir / "apt"
    arch_dir = root / "nvidia" / "stable" / "deb" / arch
    stamp = arch_dir / ".built-from"
    source_id = json.dumps(manifest, sort_keys=True) + fingerprint
    if stamp.exists() and stamp.read_text() == source_id:
        return AptRepo(root, arch_dir, fingerprint, version)
    log(f"building the signed test apt repository in {root}")
    shutil.rmtree(root, ignore_errors=True)
    arch_dir.mkdir(parents=True)
    for spec in manifest["packages"]:
        _build_deb(spec, version, arch, arch_dir)
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "."], cwd=arch_dir, check=True, capture_output=True, text=True
    ).stdout
    (arch_dir / "Packages").write_text(packages)
    subprocess.run(["gzip", "-kf", "Packages"], cwd=arch_dir, check=True)
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=effdet-lab-test-double",
         "release", "."],
        cwd=arch_dir, check=True, capture_output=True, text=True,
    ).stdout
    (arch_dir / "Release").write_text(release)
    _gpg(gnupghome, "--local-user", fingerprint, "--clearsign", "-o", str(arch_dir / "InRelease"),
         str(arch_dir / "Release"))
    _gpg(gnupghome, "--local-user", fingerprint, "-abs", "-o", str(arch_dir / "Release.gpg"),
         str(arch_dir / "Release"))
    armored = _gpg(gnupghome, "--armor", "--export", fingerprint)
    (root / "nvidia" / "gpgkey").write_text(armored)
    stamp.write_text(source_id)
    return AptRepo(root, arch_dir, fingerprint, version)
