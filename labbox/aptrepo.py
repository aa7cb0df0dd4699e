"""A local, really signed apt repository holding two documented test doubles.

- nvidia/: the NVIDIA Container Toolkit double (tests/fixtures/nvidia-toolkit-double),
  shaped like NVIDIA's repository (`.../stable/deb/$(ARCH)`, a flat `/` suite,
  an armored `gpgkey` beside it), every version of its manifest side by side;
- docker/linux/debian/: the Docker CE double (tests/fixtures/docker-ce-double),
  shaped like Docker's repository for Debian (`dists/<suite>/{InRelease,Release,Release.gpg}`,
  `dists/<suite>/<component>/binary-<arch>/Packages`, the `.deb`s under
  `dists/<suite>/pool/<component>/<arch>/`, the armored key at `gpg`), its
  binaries repacked from Debian's docker.io, containerd, runc and tini that the
  simulated host image holds in its apt cache.

Both are signed with the same throw-away key, so the roles run their real code
path against them (fingerprint check, deb822 source, pinned install). Each is
built once and rebuilt only when its inputs change (a stamp file).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .shell import REPO_ROOT, STATE_DIR, docker, log, run

DOUBLE_DIR = REPO_ROOT / "tests" / "fixtures" / "nvidia-toolkit-double"
DOCKER_DOUBLE_DIR = REPO_ROOT / "tests" / "fixtures" / "docker-ce-double"
KEY_UID = "effdet-lab test apt repository (TEST ONLY) <labbox@effdet-lab.invalid>"
# The image whose apt cache holds Debian's docker.io and its dependencies
# (labbox/context/simhost/Dockerfile downloads them); the Docker CE double's
# binaries come from there, so building it needs no network.
SIMHOST_IMAGE = "effdet-lab/simhost:latest"
APT_ARCHIVES = "/var/cache/apt/archives"
DOCKER_REPO_PATH = Path("docker") / "linux" / "debian"   # as download.docker.com/linux/debian


@dataclass(frozen=True)
class AptRepo:
    root: Path          # served over HTTP as /
    arch_dir: Path      # root/nvidia/stable/deb/<arch>: the .debs, also the offline folder
    fingerprint: str
    version: str        # the toolkit double's default (newest) version
    versions: tuple[str, ...] = ()          # every toolkit version in the repository
    docker_root: Path | None = None         # root/docker/linux/debian
    docker_fingerprint: str = ""            # the key that signs the Docker CE double
    docker_packages: dict[str, str] = field(default_factory=dict)  # name -> version


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


def _sign_release(gnupghome: Path, fingerprint: str, folder: Path) -> None:
    """InRelease (clearsigned) and Release.gpg (detached) for folder/Release."""
    _gpg(gnupghome, "--local-user", fingerprint, "--clearsign", "-o", str(folder / "InRelease"),
         str(folder / "Release"))
    _gpg(gnupghome, "--local-user", fingerprint, "-abs", "-o", str(folder / "Release.gpg"),
         str(folder / "Release"))


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
    """Build (or reuse) the signed repository under state_dir/apt: both doubles."""
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    gnupghome = state_dir / "gnupg"
    fingerprint = _ensure_key(gnupghome)
    root = state_dir / "apt"
    manifest, arch_dir = _ensure_nvidia_double(root, arch, gnupghome, fingerprint)
    docker_root, docker_packages = _ensure_docker_double(root, arch, gnupghome, fingerprint)
    return AptRepo(root, arch_dir, fingerprint, manifest["version"], _toolkit_versions(manifest),
                   docker_root, fingerprint, docker_packages)


def _toolkit_versions(manifest: dict) -> tuple[str, ...]:
    """Every version to build; the default one first (and always there)."""
    versions = [manifest["version"]] + [v for v in manifest.get("versions", []) if v != manifest["version"]]
    return tuple(versions)


def _ensure_nvidia_double(root: Path, arch: str, gnupghome: Path, fingerprint: str) -> tuple[dict, Path]:
    manifest = json.loads((DOUBLE_DIR / "packages.json").read_text())
    nvidia = root / "nvidia"
    arch_dir = nvidia / "stable" / "deb" / arch
    stamp = arch_dir / ".built-from"
    source_id = json.dumps(manifest, sort_keys=True) + fingerprint
    if stamp.exists() and stamp.read_text() == source_id:
        return manifest, arch_dir
    versions = _toolkit_versions(manifest)
    log(f"building the NVIDIA toolkit test double ({', '.join(versions)}) in {nvidia}")
    # Only this double's folder is rebuilt: root itself stays, since the apt
    # server bind-mounts it (a re-created root would be invisible to it).
    shutil.rmtree(nvidia, ignore_errors=True)
    arch_dir.mkdir(parents=True)
    for version in versions:
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
    _sign_release(gnupghome, fingerprint, arch_dir)
    armored = _gpg(gnupghome, "--armor", "--export", fingerprint)
    (nvidia / "gpgkey").write_text(armored)
    stamp.write_text(source_id)
    return manifest, arch_dir


# ---- Docker CE double -------------------------------------------------------

def _fixture_digest(folder: Path) -> str:
    """A hash of every file of the fixture folder (path and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _image_id(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def _source_debs(image: str, sources: list[str]) -> dict[str, str]:
    """Source package name -> the newest .deb of it in the image's apt cache."""
    out = docker("run", "--rm", "--network", "none", image, "ls", APT_ARCHIVES).stdout.split()
    found: dict[str, str] = {}
    for name in sources:
        candidates = sorted(f for f in out if f.startswith(f"{name}_") and f.endswith(".deb"))
        if not candidates:
            raise RuntimeError(
                f"{image} has no {name}_*.deb in {APT_ARCHIVES}: the Docker CE double is repacked from it "
                "(labbox/context/simhost/Dockerfile downloads docker.io and its dependencies there)")
        found[name] = candidates[-1]
    return found


def _extract_sources(image: str, debs: dict[str, str], into: Path) -> dict[str, Path]:
    """Copy the source .debs out of the image (docker run ... tar) and unpack each one."""
    archive = into / "archives"
    archive.mkdir()
    tar_out = subprocess.Popen(["docker", "run", "--rm", "--network", "none", image, "tar", "-C", APT_ARCHIVES,
                                "-c", *debs.values()], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(archive)], stdin=tar_out.stdout, check=True)
    tar_out.stdout.close()
    if tar_out.wait() != 0:
        raise RuntimeError(f"could not copy {', '.join(debs.values())} out of {image}")
    trees = {}
    for name, deb in debs.items():
        trees[name] = into / "src" / name
        trees[name].mkdir(parents=True)
        run(["dpkg-deb", "-x", str(archive / deb), str(trees[name])])
    return trees


def _deb_file_name(name: str, version: str, arch: str) -> str:
    """As Docker names its files: the epoch is not part of the file name."""
    return f"{name}_{version.split(':', 1)[-1]}_{arch}.deb"


def _build_docker_deb(spec: dict, arch: str, trees: dict[str, Path], debs: dict[str, str], out_dir: Path) -> Path:
    version = spec["version"]
    upstream = version.split(":", 1)[-1].split("-")[0].split("~")[0]
    with tempfile.TemporaryDirectory(prefix="labbox-deb-") as tmp:
        pkg = Path(tmp) / spec["name"]
        (pkg / "DEBIAN").mkdir(parents=True)
        origins = []
        for rel, source in spec["files"].items():
            target = pkg / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if "from" in source:
                shutil.copy2(trees[source["from"]] / source["path"], target)
                origins.append(f"/{rel}: /{source['path']} from Debian's {debs[source['from']]}")
            else:
                text = (DOCKER_DOUBLE_DIR / source["fixture"]).read_text()
                target.write_text(text.replace("{upstream}", upstream))
                target.chmod(int(source["mode"], 8))
        doc = pkg / "usr" / "share" / "doc" / spec["name"]
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "README.test-double").write_text((DOCKER_DOUBLE_DIR / "README.md").read_text())
        if origins:
            (doc / "REPACKED-FROM").write_text(
                "effdet-lab TEST DOUBLE: these files are Debian's builds, repacked:\n" + "\n".join(origins) + "\n")
        for script, rel in spec.get("scripts", {}).items():
            target = pkg / "DEBIAN" / script
            shutil.copyfile(DOCKER_DOUBLE_DIR / rel, target)
            target.chmod(0o755)
        if spec.get("conffiles"):
            (pkg / "DEBIAN" / "conffiles").write_text("\n".join(spec["conffiles"]) + "\n")
        installed_bytes = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file() and "DEBIAN" not in p.parts)
        control = [f"Package: {spec['name']}", f"Version: {version}", f"Architecture: {arch}"]
        fields = dict(spec["control"])
        description = fields.pop("Description")
        control += [f"{key}: {value}" for key, value in fields.items()]
        control += [f"Installed-Size: {installed_bytes // 1024 + 1}", f"Description: {description}"]
        (pkg / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        deb = out_dir / _deb_file_name(spec["name"], version, arch)
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(pkg), str(deb)])
    return deb


def _ensure_docker_double(root: Path, arch: str, gnupghome: Path, fingerprint: str,
                          image: str = SIMHOST_IMAGE) -> tuple[Path, dict[str, str]]:
    """The Docker CE double under root/docker/linux/debian, built once per set of inputs."""
    manifest = json.loads((DOCKER_DOUBLE_DIR / "packages.json").read_text())
    packages = {spec["name"]: spec["version"] for spec in manifest["packages"]}
    docker_root = root / DOCKER_REPO_PATH
    stamp = root / "docker" / ".built-from"
    inputs = hashlib.sha256((_fixture_digest(DOCKER_DOUBLE_DIR) + fingerprint + arch).encode()).hexdigest()
    image_id = _image_id(image)
    old = json.loads(stamp.read_text()) if stamp.exists() else {}
    if old.get("inputs") == inputs and old.get("image") == image_id:
        return docker_root, packages
    debs = _source_debs(image, manifest["sources"])
    if old.get("inputs") == inputs and old.get("sources") == debs:
        # A rebuilt simulated host image with the same Debian packages: nothing to repack.
        stamp.write_text(json.dumps({"inputs": inputs, "image": image_id, "sources": debs}))
        return docker_root, packages

    suite, component = manifest["suite"], manifest["component"]
    log(f"building the Docker CE test double in {docker_root} from Debian's "
        f"{', '.join(debs.values())} (once, well under a minute)")
    shutil.rmtree(root / "docker", ignore_errors=True)
    dists = docker_root / "dists" / suite
    pool = dists / "pool" / component / arch
    binary = dists / component / f"binary-{arch}"
    pool.mkdir(parents=True)
    binary.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="labbox-docker-ce-", dir=root.parent) as tmp:
        trees = _extract_sources(image, debs, Path(tmp))
        for spec in manifest["packages"]:
            deb = _build_docker_deb(spec, arch, trees, debs, pool)
            log(f"  {deb.name} ({deb.stat().st_size / 2**20:.0f} MiB)")
    packages_index = subprocess.run(
        ["apt-ftparchive", "packages", str(pool.relative_to(docker_root))],
        cwd=docker_root, check=True, capture_output=True, text=True,
    ).stdout
    (binary / "Packages").write_text(packages_index)
    subprocess.run(["gzip", "-kf", "Packages"], cwd=binary, check=True)
    release_fields = {
        "Origin": "effdet-lab-test-double", "Label": "Docker CE (effdet-lab TEST DOUBLE)",
        "Suite": suite, "Codename": suite, "Components": component, "Architectures": arch,
        "Description": "TEST DOUBLE of Docker CE for Debian (repacked Debian binaries)",
    }
    options = [arg for key, value in release_fields.items()
               for arg in ("-o", f"APT::FTPArchive::Release::{key}={value}")]
    release = subprocess.run(
        ["apt-ftparchive", *options, "release", "."], cwd=dists, check=True, capture_output=True, text=True,
    ).stdout
    (dists / "Release").write_text(release)
    _sign_release(gnupghome, fingerprint, dists)
    (docker_root / "gpg").write_text(_gpg(gnupghome, "--armor", "--export", fingerprint))
    stamp.write_text(json.dumps({"inputs": inputs, "image": image_id, "sources": debs}))
    return docker_root, packages
