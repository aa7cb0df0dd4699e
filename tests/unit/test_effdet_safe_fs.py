"""effdet_safe_fs (effdet_tasks/library) and its action plugins, on a scratch tree.

The lab user owns the data folder; every test plants what a hostile lab user
could (links to "host" files outside the base, a FIFO, a hard link, a folder
swapped for a link) and checks that nothing outside the base is read, written,
chowned or chmodded. The last tests run the module and the put/fetch action
plugins through ansible-playbook against localhost.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
fs = load_module(REPO / "roles/effdet_tasks/library/effdet_safe_fs.py", "effdet_safe_fs")

SECRET = "root:$6$canary-shadow-line:19000:0:99999:7:::\n"


@pytest.fixture()
def lab(tmp_path: Path) -> dict:
    """base/ (the data folder) with effdet-lab/ in it, and outside/ (the host) with a secret file
    (0600) and a folder (0755) that must never change."""
    base = tmp_path / "data"
    (base / "effdet-lab" / "runs" / "r1").mkdir(parents=True)
    outside = tmp_path / "host"
    (outside / "dir").mkdir(parents=True)
    os.chmod(outside / "dir", 0o755)
    secret = outside / "shadow"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    return {"base": str(base), "b": base, "outside": outside, "secret": secret}


def snapshot(path: Path) -> list[tuple]:
    """Owner, mode and content of everything under path (links not followed)."""
    out = []
    for p in sorted([path, *path.rglob("*")]):
        st = p.lstat()
        out.append((str(p), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                    p.read_bytes() if p.is_file() and not p.is_symlink() else None))
    return out


def run(lab: dict, op: str, path: str, check: bool = False, **params) -> dict:
    return fs.run({"op": op, "base": lab["base"], "base_alias": "/data", "path": path, **params}, check_mode=check)


# ---------------------------------------------------------------------------
# paths


@pytest.mark.parametrize("path, parts", [
    ("effdet-lab/runs", ["effdet-lab", "runs"]),
    ("/srv/d/effdet-lab/x", ["effdet-lab", "x"]),
    ("effdet-lab/", ["effdet-lab"]),
    ("", []),
    ("/srv/d", []),
])
def test_paths_below_the_base(path, parts):
    assert fs.split_path("/srv/d", path) == parts


@pytest.mark.parametrize("path", ["/srv/other/x", "/srv/dx/y", "a/../../etc", "../x", "a//b", "a/./b", "a\x00b", "/etc/shadow"])
def test_paths_outside_or_not_normal_are_refused(path):
    with pytest.raises(fs.Refused):
        fs.split_path("/srv/d", path)


def test_modes():
    assert fs.parse_mode("0644", 0) == 0o644
    assert fs.parse_mode("755", 0) == 0o755
    assert fs.parse_mode(0o600, 0) == 0o600
    assert fs.parse_mode(None, 0o700) == 0o700
    for bad in ("rwx", "0999", "u+x"):
        with pytest.raises(fs.FsError):
            fs.parse_mode(bad, 0)


# ---------------------------------------------------------------------------
# mkdir


def test_mkdir_creates_with_owner_and_mode_and_is_idempotent(lab):
    r = run(lab, "mkdir", "effdet-lab/runs/r2/infer-input", owner=1001, group=1001, mode="0750")
    assert r["changed"] and not r.get("failed"), r
    for rel in ("effdet-lab/runs/r2", "effdet-lab/runs/r2/infer-input"):
        st = (lab["b"] / rel).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1001, 0o750), rel
    assert run(lab, "mkdir", "effdet-lab/runs/r2/infer-input", owner=1001, group=1001, mode="0750")["changed"] is False


def test_mkdir_fixes_the_owner_and_mode_of_the_last_folder_only(lab):
    r = run(lab, "mkdir", "effdet-lab/runs/r1", owner=1001, group=1001, mode="0755")
    assert r["changed"] and r["attributes_changed"]
    assert (lab["b"] / "effdet-lab/runs/r1").stat().st_uid == 1001
    assert (lab["b"] / "effdet-lab/runs").stat().st_uid == 0


def test_mkdir_check_mode_changes_nothing(lab):
    before = snapshot(lab["b"])
    r = run(lab, "mkdir", "effdet-lab/runs/new/deeper", check=True, owner=1001, group=1001, mode="0755")
    assert r["changed"] and snapshot(lab["b"]) == before


@pytest.mark.parametrize("link_at, path", [
    ("effdet-lab/runs/r1", "effdet-lab/runs/r1"),                 # the folder itself
    ("effdet-lab/runs/r1", "effdet-lab/runs/r1/infer-input"),     # a folder on the way
    ("effdet-lab/code", "effdet-lab/code/effdetlab"),             # a link planted where a folder will be made
])
def test_mkdir_refuses_a_link_and_leaves_the_host_folder_alone(lab, link_at, path):
    target = lab["outside"] / "dir"
    link = lab["b"] / link_at
    if link.exists():
        link.rmdir()
    link.symlink_to(target)
    before = snapshot(lab["outside"])
    r = run(lab, "mkdir", path, owner=1001, group=1001, mode="0777")
    assert r["failed"] and r["refused"], r
    assert f"refusing {lab['base']}/{link_at} (in the lab container: /data/{link_at})" in r["msg"]
    assert f"it is a symlink to {str(target)!r}" in r["msg"]
    assert snapshot(lab["outside"]) == before


def test_a_file_where_a_folder_should_be(lab):
    (lab["b"] / "effdet-lab/runs/file").write_text("x")
    r = run(lab, "mkdir", "effdet-lab/runs/file/sub", owner=1001)
    assert r["failed"] and "is a file, not a folder" in r["msg"]


# ---------------------------------------------------------------------------
# write


def test_write_sets_content_owner_and_mode_and_is_idempotent(lab):
    r = run(lab, "write", "effdet-lab/runs/r1/config.json", content="{}\n", owner=1001, group=1001, mode="0644")
    assert r["changed"], r
    f = lab["b"] / "effdet-lab/runs/r1/config.json"
    st = f.stat()
    assert f.read_text() == "{}\n" and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1001, 0o644)
    assert run(lab, "write", str(f), content="{}\n", owner=1001, group=1001, mode="0644")["changed"] is False
    os.chmod(f, 0o666)
    r = run(lab, "write", str(f), content="{}\n", owner=1001, group=1001, mode="0644")
    assert r["changed"] and r["attributes_changed"] and stat.S_IMODE(f.stat().st_mode) == 0o644
    assert not [p for p in f.parent.iterdir() if p.name.startswith(".effdet-tmp")]


def test_write_diff_and_check_mode(lab):
    f = lab["b"] / "effdet-lab/runs/r1/m.json"
    f.write_text("old\n")
    before = snapshot(lab["b"])
    r = fs.run({"op": "write", "base": lab["base"], "path": str(f), "content": "new\n", "mode": "0644"},
               check_mode=True, diff=True)
    assert r["changed"] and r["diff"]["before"] == "old\n" and r["diff"]["after"] == "new\n"
    assert snapshot(lab["b"]) == before


@pytest.mark.parametrize("planted", ["file-link", "folder-link"])
def test_write_refuses_links(lab, planted):
    run_dir = lab["b"] / "effdet-lab/runs/r1"
    if planted == "file-link":
        (run_dir / "config.json").symlink_to(lab["secret"])
        path, link = "effdet-lab/runs/r1/config.json", "effdet-lab/runs/r1/config.json"
    else:
        (run_dir / "train-x").symlink_to(lab["outside"] / "dir")
        path, link = "effdet-lab/runs/r1/train-x/config.json", "effdet-lab/runs/r1/train-x"
    before = snapshot(lab["outside"])
    r = run(lab, "write", path, content="{}\n", owner=1001, group=1001, mode="0644")
    assert r["failed"] and r["refused"] and f"refusing {lab['base']}/{link} " in r["msg"], r
    assert snapshot(lab["outside"]) == before


def test_write_replaces_a_hard_linked_file_without_touching_the_other_name(lab):
    other = lab["b"] / "other"
    other.write_text("keep\n")
    f = lab["b"] / "effdet-lab/runs/r1/config.json"
    os.link(other, f)
    assert run(lab, "write", str(f), content="new\n", mode="0644")["changed"]
    assert other.read_text() == "keep\n" and f.read_text() == "new\n"


# ---------------------------------------------------------------------------
# stat, read


def test_stat(lab):
    f = lab["b"] / "effdet-lab/runs/r1/train_status.json"
    assert run(lab, "stat", str(f))["stat"] == {"exists": False}
    assert run(lab, "stat", "effdet-lab/missing/deeper/x")["stat"] == {"exists": False}
    f.write_text("{}")
    s = run(lab, "stat", str(f), get_checksum=True)["stat"]
    assert s["exists"] and s["isreg"] and s["checksum"] == hashlib.sha1(b"{}").hexdigest()
    assert run(lab, "stat", "effdet-lab/runs")["stat"]["isdir"]


@pytest.mark.parametrize("where", ["file", "folder"])
def test_stat_refuses_links(lab, where):
    run_dir = lab["b"] / "effdet-lab/runs/r1"
    if where == "file":
        (run_dir / "report.json").symlink_to(lab["secret"])
        path = "effdet-lab/runs/r1/report.json"
    else:
        (run_dir / "data").symlink_to(lab["outside"] / "dir")
        path = "effdet-lab/runs/r1/data/train/report.json"
    r = run(lab, "stat", path, get_checksum=True)
    assert r["failed"] and r["refused"] and "symlink" in r["msg"]


def test_read(lab):
    f = lab["b"] / "effdet-lab/runs/r1/export.json"
    data = os.urandom(3000)
    f.write_bytes(data)
    r = run(lab, "read", str(f))
    assert base64.b64decode(r["content"]) == data and r["eof"] and r["size"] == 3000
    r = run(lab, "read", str(f), offset=1000, length=1500)
    assert base64.b64decode(r["content"]) == data[1000:2500] and not r["eof"]
    r = run(lab, "read", str(f), unless_sha1=hashlib.sha1(data).hexdigest())
    assert r["same"] and "content" not in r
    assert run(lab, "read", str(f), max_bytes=100)["failed"]
    assert run(lab, "read", "effdet-lab/runs/r1/none.json", missing_ok=True)["exists"] is False
    assert run(lab, "read", "effdet-lab/runs/r1/none.json")["failed"]


def test_read_refuses_a_link_to_a_host_file_or_skips_it(lab):
    link = lab["b"] / "effdet-lab/runs/r1/report.md"
    link.symlink_to(lab["secret"])
    r = run(lab, "read", str(link))
    assert r["failed"] and r["refused"] and SECRET not in json.dumps(r)
    assert f"it is a symlink to {str(lab['secret'])!r}" in r["msg"]
    r = run(lab, "read", str(link), unsafe="skip")
    assert r["skipped"] and "content" not in r and SECRET not in json.dumps(r)


def test_read_never_opens_a_fifo_or_a_hard_link(lab):
    fifo = lab["b"] / "effdet-lab/runs/r1/progress.jsonl"
    os.mkfifo(fifo)
    r = run(lab, "read", str(fifo))      # would block forever if it were opened
    assert r["failed"] and "a FIFO" in r["msg"]
    hard = lab["b"] / "effdet-lab/runs/r1/hard.json"
    os.link(lab["secret"], hard)
    r = run(lab, "read", str(hard))
    assert r["failed"] and "2 hard links" in r["msg"] and SECRET not in json.dumps(r)


def test_read_refuses_a_device_node(lab):
    dev = lab["b"] / "effdet-lab/runs/r1/export.json"
    try:
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))   # /dev/null's numbers
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    r = run(lab, "read", str(dev))
    assert r["failed"] and "a device node" in r["msg"]


# ---------------------------------------------------------------------------
# find


def test_find_matches_ansible_find_and_skips_links(lab):
    data = lab["b"] / "effdet-lab/runs/r1/data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "train-00000-of-00001.tfrecord").write_bytes(b"rec")
    (data / "train" / "report.json").write_text("{}")
    (data / "train" / "notes.txt").write_text("x")
    (data / "train" / ".hidden.json").write_text("{}")
    (data / "train" / "stolen.json").symlink_to(lab["secret"])
    (data / "val").symlink_to(lab["outside"] / "dir")
    r = run(lab, "find", str(data), patterns=["*.tfrecord", "*.json", "*.yaml"], recurse=True, get_checksum=True)
    assert not r.get("failed"), r
    assert [f["rel"] for f in r["files"]] == ["effdet-lab/runs/r1/data/train/report.json",
                                              "effdet-lab/runs/r1/data/train/train-00000-of-00001.tfrecord"]
    rec = r["files"][1]
    assert rec["path"] == f"{lab['base']}/{rec['rel']}" and rec["checksum"] == hashlib.sha1(b"rec").hexdigest()
    assert len(r["warnings"]) == 2 and all("never followed" in w for w in r["warnings"])
    assert any("stolen.json" in w for w in r["warnings"]) and any("/data/val" in w for w in r["warnings"])


def test_find_refuses_a_link_as_the_folder_and_tolerates_a_missing_one(lab):
    (lab["b"] / "effdet-lab/runs/r1/infer").symlink_to(lab["outside"] / "dir")
    r = run(lab, "find", "effdet-lab/runs/r1/infer", patterns=["*.jpg"])
    assert r["failed"] and r["refused"]
    r = run(lab, "find", "effdet-lab/runs/r1/none", patterns=["*.jpg"])
    assert r["files"] == [] and r["exists"] is False


# ---------------------------------------------------------------------------
# tree (effdet_safe_put's module side)


def manifest_entry(rel: str, data: bytes, inline: bool = False) -> dict:
    entry = {"path": rel, "sha1": hashlib.sha1(data).hexdigest()}
    if inline:
        entry["content_b64"] = base64.b64encode(data).decode()
    return entry


def test_tree_lists_what_it_needs_then_writes_it(lab):
    files = {"Annotations/a.xml": b"<a/>", "JPEGImages/a b.JPG": os.urandom(500), "ImageSets/Main/train.txt": b"a\n"}
    common = {"owner": 1001, "group": 1001, "mode": "0644", "dir_mode": "0755",
              "dirs": ["Annotations", "JPEGImages", "ImageSets", "ImageSets/Main"]}
    r = run(lab, "tree", "effdet-lab/datasets/voc", files=[manifest_entry(k, v) for k, v in files.items()], **common)
    assert sorted(r["need"]) == sorted(files) and r["changed"]   # folders were made
    r = run(lab, "tree", "effdet-lab/datasets/voc", files=[manifest_entry(k, v, True) for k, v in files.items()],
            **common)
    assert len(r["written"]) == 3
    for rel, data in files.items():
        f = lab["b"] / "effdet-lab/datasets/voc" / rel
        assert f.read_bytes() == data and f.stat().st_uid == 1001
    assert (lab["b"] / "effdet-lab/datasets/voc/ImageSets/Main").stat().st_uid == 1001
    r = run(lab, "tree", "effdet-lab/datasets/voc", files=[manifest_entry(k, v) for k, v in files.items()], **common)
    assert r["changed"] is False and r["need"] == []


def test_tree_refuses_a_link_among_the_files_or_folders(lab):
    voc = lab["b"] / "effdet-lab/datasets/voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").symlink_to(lab["secret"])
    (voc / "JPEGImages").symlink_to(lab["outside"] / "dir")
    before = snapshot(lab["outside"])
    r = run(lab, "tree", str(voc), files=[manifest_entry("Annotations/a.xml", b"<a/>", True)], owner=1001, mode="0644")
    assert r["failed"] and "a.xml" in r["msg"] and "symlink" in r["msg"]
    r = run(lab, "tree", str(voc), dirs=["JPEGImages"], owner=1001, group=1001, mode="0644")
    assert r["failed"] and "JPEGImages" in r["msg"]
    assert snapshot(lab["outside"]) == before


def test_tree_rejects_content_damaged_in_transfer(lab):
    entry = manifest_entry("a.txt", b"right")
    entry["content_b64"] = base64.b64encode(b"wrong").decode()
    r = run(lab, "tree", "effdet-lab/t", files=[entry], mode="0644")
    assert r["failed"] and "damaged in transfer" in r["msg"]


def test_a_stamp_answers_a_no_change_put_and_a_changed_folder_voids_it(lab):
    """After a complete put the stamp beside the tree holds the manifest's digest and the folders'
    mtimes: the same digest on an untouched tree answers at once; a file added on the host (its folder's
    mtime changes) or another digest falls back to the comparison of every file."""
    voc = "effdet-lab/datasets/voc"
    files = {"Annotations/a.xml": b"<a/>", "JPEGImages/a.jpg": os.urandom(300)}
    common = {"owner": 1001, "group": 1001, "mode": "0644", "dir_mode": "0755", "dirs": ["Annotations", "JPEGImages"],
              "digest": "d1"}
    entries = [manifest_entry(k, v) for k, v in files.items()]
    assert run(lab, "tree", voc, files=[], stamp_check=True, **common)["stamp"] == "void"   # nothing there yet
    assert run(lab, "tree", voc, files=[manifest_entry(k, v, True) for k, v in files.items()], **common)["written"]
    assert run(lab, "tree", voc, files=[], stamp_write=True, **common)["stamp"] == "written"
    stamp = lab["b"] / "effdet-lab/datasets/.voc.effdet-put.json"
    assert json.loads(stamp.read_text())["digest"] == "d1" and stamp.stat().st_uid == 1001
    r = run(lab, "tree", voc, files=[], stamp_check=True, **common)
    assert r["stamp"] == "holds" and r["changed"] is False
    assert run(lab, "tree", voc, files=[], stamp_check=True, **{**common, "digest": "d2"})["stamp"] == "void"
    (lab["b"] / voc / "JPEGImages" / "added.jpg").write_bytes(b"x")
    assert run(lab, "tree", voc, files=[], stamp_check=True, **common)["stamp"] == "void"
    r = run(lab, "tree", voc, files=entries, **common)
    assert r["need"] == [] and r["changed"] is False   # every file compared: all the same


def test_a_stamp_that_is_a_link_is_refused(lab):
    voc = lab["b"] / "effdet-lab/datasets/voc"
    voc.mkdir(parents=True)
    (lab["b"] / "effdet-lab/datasets/.voc.effdet-put.json").symlink_to(lab["secret"])
    before = snapshot(lab["outside"])
    for params in ({"stamp_check": True}, {"stamp_write": True}):
        r = run(lab, "tree", str(voc), files=[], digest="d1", owner=1001, group=1001, **params)
        assert r["failed"] and r.get("refused") and ".voc.effdet-put.json" in r["msg"], r
    assert snapshot(lab["outside"]) == before


def seen_in_container(shown: list[str]) -> list[str]:
    """The lab container's paths of the module's "host path (in the lab container: path)"."""
    return [text.rsplit("(in the lab container: ", 1)[-1].rstrip(")") for text in shown]


def bundle_entry(path: str, body: bytes) -> dict:
    return dict(manifest_entry(path, body), size=len(body), in_bundle=True)


def test_a_bundle_gives_each_file_its_size_in_order_and_checks_it(lab, tmp_path):
    """The bundle has no names: each file of the manifest takes its size in order, across parts,
    and its sha1 is checked; a bundle whose size is not the files' is refused before anything is
    written; the module removes the parts once read, whatever happened."""
    bodies = {"JPEGImages/a.jpg": b"alpha" * 1000, "JPEGImages/b.jpg": b"", "Annotations/a.xml": b"<a/>"}
    parts = [tmp_path / "p0", tmp_path / "p1"]

    def put(entries: list[dict], contents: bytes, **params) -> dict:
        parts[0].write_bytes(contents[:3001])        # a file split across the two parts
        parts[1].write_bytes(contents[3001:])
        r = run(lab, "tree", "effdet-lab/t", files=entries, bundle=[str(p) for p in parts], mode="0644",
                dirs=["JPEGImages", "Annotations"], **params)
        assert not any(p.exists() for p in parts)
        return r

    entries = [bundle_entry(path, body) for path, body in bodies.items()]
    r = put(entries, b"".join(bodies.values()), flush=False)     # a part before the last: no flush
    assert "flush_s" not in r and "unpack_s" in r, r
    for path in bodies:
        (lab["b"] / "effdet-lab/t" / path).unlink()
    r = put(entries, b"".join(bodies.values()))
    assert "flush_s" in r, r
    assert sorted(seen_in_container(r["written"])) == sorted(f"/data/effdet-lab/t/{path}" for path in bodies), r
    for path, body in bodies.items():
        assert (lab["b"] / "effdet-lab/t" / path).read_bytes() == body
    # one byte short: refused before any file is touched
    (lab["b"] / "effdet-lab/t/JPEGImages/a.jpg").unlink()
    r = put(entries, b"".join(bodies.values())[:-1])
    assert r["failed"] and "bundle sent holds 5003 bytes, the files said to be in it 5004" in r["msg"], r
    assert not (lab["b"] / "effdet-lab/t/JPEGImages/a.jpg").exists()
    # the same size, other bytes: the sha1 check fails
    damaged = b"".join(bodies.values()).replace(b"alpha", b"alphA", 1)
    r = put(entries, damaged)
    assert r["failed"] and "damaged in transfer" in r["msg"], r
    # a file already right on the host is skipped over in the bundle
    r = put(entries, b"".join(bodies.values()))
    assert seen_in_container(r["written"]) == ["/data/effdet-lab/t/JPEGImages/a.jpg"], r


def test_a_file_said_to_be_in_a_bundle_needs_one(lab):
    r = run(lab, "tree", "effdet-lab/t", files=[bundle_entry("a.txt", b"alpha")], mode="0644")
    assert r["failed"] and "none was sent" in r["msg"]


def test_a_file_that_appears_while_the_bundle_is_unpacked_is_refused(lab, tmp_path, monkeypatch):
    """A name found free is made with O_EXCL: a link the lab user puts there meanwhile fails the
    write instead of being written through."""
    part = tmp_path / "p0"
    part.write_bytes(b"alpha")
    target = lab["b"] / "effdet-lab/t/a.txt"
    real_existing = fs.existing_file

    def existing_then_link(base, parent, parts):
        st = real_existing(base, parent, parts)
        if parts[-1] == "a.txt":
            target.symlink_to(lab["secret"])
        return st

    monkeypatch.setattr(fs, "existing_file", existing_then_link)
    before = lab["secret"].read_bytes()
    r = run(lab, "tree", "effdet-lab/t", files=[bundle_entry("a.txt", b"alpha")], bundle=[str(part)], mode="0644")
    assert r["failed"], r
    assert target.is_symlink() and lab["secret"].read_bytes() == before


# ---------------------------------------------------------------------------
# sync (the automl checkout, mirrored from a root-only folder)


def test_sync_mirrors_and_never_follows_what_it_finds(lab, tmp_path):
    src = tmp_path / "checkout"
    (src / "efficientdet").mkdir(parents=True)
    (src / "efficientdet" / "main.py").write_text("print(1)\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "link").symlink_to("efficientdet/main.py")
    dest = lab["b"] / "effdet-lab/automl"
    (dest / "efficientdet").mkdir(parents=True)
    (dest / "efficientdet" / "main.py").symlink_to(lab["secret"])   # planted: replaced, never written through
    (dest / "stale").write_text("old")
    (dest / "olddir").mkdir()
    (dest / "olddir" / "to-host").symlink_to(lab["outside"] / "dir")
    before = snapshot(lab["outside"])
    r = run(lab, "sync", str(dest), src=str(src), owner=0, group=0, dir_mode="0755")
    assert r["changed"] and not r.get("failed"), r
    assert (dest / "efficientdet" / "main.py").read_text() == "print(1)\n"
    assert not (dest / "efficientdet" / "main.py").is_symlink()
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert os.readlink(dest / "link") == "efficientdet/main.py"
    assert not (dest / "stale").exists() and not (dest / "olddir").exists()
    assert snapshot(lab["outside"]) == before
    assert run(lab, "sync", str(dest), src=str(src), owner=0, group=0, dir_mode="0755")["changed"] is False


def test_sync_refuses_a_link_as_the_mirror_itself(lab, tmp_path):
    src = tmp_path / "checkout"
    src.mkdir()
    (src / "x").write_text("x")
    (lab["b"] / "effdet-lab/automl").symlink_to(lab["outside"] / "dir")
    before = snapshot(lab["outside"])
    r = run(lab, "sync", "effdet-lab/automl", src=str(src), owner=0, group=0)
    assert r["failed"] and r["refused"] and snapshot(lab["outside"]) == before


# ---------------------------------------------------------------------------
# Through Ansible: the module's argument spec, effdet_safe_put and effdet_safe_fetch


def ansible_env() -> dict:
    return {**os.environ, "ANSIBLE_LIBRARY": str(REPO / "roles/effdet_tasks/library"),
            "ANSIBLE_ACTION_PLUGINS": str(REPO / "roles/effdet_tasks/action_plugins"),
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}


def playbook(tmp_path: Path, tasks: list, *args: str) -> subprocess.CompletedProcess:
    book = tmp_path / "play.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                 "tasks": tasks}]))
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(book),
                           "-e", f"ansible_python_interpreter={sys.executable}", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=ansible_env(), cwd=REPO, check=False)


def test_put_and_fetch_through_ansible(lab, tmp_path, monkeypatch):
    src = tmp_path / "voc"
    (src / "Annotations").mkdir(parents=True)
    (src / "Annotations" / "a.xml").write_text("<a/>")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"\0")
    big = os.urandom(5 * 1024 * 1024)          # over the inline limit: through the tmp folder
    (src / "big.bin").write_bytes(big)
    (src / "skip-link").symlink_to(lab["secret"])
    results = tmp_path / "results"
    common = {"base": lab["base"], "base_alias": "/data"}
    tasks = [
        {"name": "put", "effdet_safe_put": {**common, "src": str(src), "path": "effdet-lab/datasets/voc",
                                            "owner": 1001, "group": 1001, "mode": "0644", "dir_mode": "0755",
                                            "exclude": "__pycache__"}, "register": "put"},
        {"name": "fetch", "effdet_safe_fetch": {**common, "path": "effdet-lab/datasets/voc/big.bin",
                                                "dest": str(results / "big.bin")}, "register": "fetched"},
        {"name": "fetch a link", "effdet_safe_fetch": {**common, "path": "effdet-lab/runs/r1/report.md",
                                                       "dest": str(results / "report.md")}},
        {"name": "show", "ansible.builtin.debug": {"msg": "PUT={{ put.changed }} FETCHED={{ fetched.changed }}"}},
    ]
    (lab["b"] / "effdet-lab/runs/r1/report.md").symlink_to(lab["secret"])
    first = playbook(tmp_path, tasks)
    assert first.returncode == 0, first.stdout[-3000:]
    said = " ".join(first.stdout.split())
    assert "PUT=True FETCHED=True" in said
    assert "not fetched to the controller: refusing" in said and "report.md" in said and "symlink" in said, said
    voc = lab["b"] / "effdet-lab/datasets/voc"
    assert (voc / "big.bin").read_bytes() == big and (results / "big.bin").read_bytes() == big
    assert (voc / "Annotations" / "a.xml").stat().st_uid == 1001
    assert not (voc / "__pycache__").exists() and not (voc / "skip-link").exists()
    assert not (results / "report.md").exists()
    second = playbook(tmp_path, tasks)
    assert second.returncode == 0 and "PUT=False FETCHED=False" in " ".join(second.stdout.split()), second.stdout[-3000:]
    check = playbook(tmp_path, tasks, "--check", "--diff")
    assert check.returncode == 0 and "changed=0" in check.stdout, check.stdout[-3000:]
    assert SECRET.strip() not in "".join(p.read_text(errors="replace") for p in results.rglob("*") if p.is_file())


def test_many_files_go_as_one_bundle_and_a_no_change_put_is_one_comparison(lab, tmp_path, monkeypatch):
    """40 files: one bundle through the connection, in parts of 10,000 bytes (each unpacked by its
    own call, the filesystem flushed after the last only); on this first put the controller hashes
    each file as it writes it into its part, and keeps the sha1s. The next put answers from the
    stamp (and the controller's sha1 cache); one file changed on the controller: exactly that one
    is sent."""
    src = tmp_path / "voc"
    (src / "JPEGImages").mkdir(parents=True)
    bodies = {f"img {i:02d}.jpg": os.urandom(2000) for i in range(40)}
    for name, body in bodies.items():
        (src / "JPEGImages" / name).write_bytes(body)
    tasks = [{"name": "put", "effdet_safe_put": {"base": lab["base"], "src": str(src), "path": "effdet-lab/datasets/voc",
                                                 "owner": 1001, "group": 1001, "mode": "0644", "dir_mode": "0755",
                                                 "part_size": 10000},
              "register": "put"},
             {"name": "show", "ansible.builtin.debug": {"msg": "PUT={{ put.changed }} N={{ put.written | length }} "
                                                                "STAMP={{ put.stamp | default('none') }} "
                                                                "TIMINGS={{ put.timings | default({}) | to_json }}"}}]
    env_cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(env_cache))
    first = playbook(tmp_path, tasks)
    assert first.returncode == 0 and "PUT=True N=40 STAMP=none" in first.stdout, first.stdout[-3000:]
    timings = json.loads(first.stdout.split("TIMINGS=", 1)[1].split("}", 1)[0].replace('\\"', '"') + "}")
    assert timings["parts"] == 8 and "unpack_flush" in timings, timings      # 5 files of 2,000 bytes a part
    voc = lab["b"] / "effdet-lab/datasets/voc/JPEGImages"
    assert {p.name: p.read_bytes() for p in voc.iterdir()} == bodies
    cached = json.loads(next((env_cache / "effdet-lab").glob("sha1-*.json")).read_text())
    assert {rel: entry[2] for rel, entry in cached.items()} == {
        f"JPEGImages/{name}": hashlib.sha1(body).hexdigest() for name, body in bodies.items()}
    second = playbook(tmp_path, tasks)
    assert "PUT=False N=0 STAMP=holds" in second.stdout, second.stdout[-3000:]
    (src / "JPEGImages" / "img 07.jpg").write_bytes(b"changed")
    third = playbook(tmp_path, tasks)
    assert "PUT=True N=1 STAMP=none" in third.stdout, third.stdout[-3000:]
    assert (lab["b"] / "effdet-lab/datasets/voc/JPEGImages/img 07.jpg").read_bytes() == b"changed"
    check = playbook(tmp_path, tasks, "--check", "--diff")
    assert check.returncode == 0 and "changed=0" in check.stdout and "STAMP=holds" in check.stdout


def test_fetch_refuses_a_link_among_the_folders(lab, tmp_path):
    (lab["b"] / "effdet-lab/runs/r1/train-x").symlink_to(lab["outside"])
    tasks = [{"name": "fetch", "effdet_safe_fetch": {"base": lab["base"], "path": "effdet-lab/runs/r1/train-x/shadow",
                                                     "dest": str(tmp_path / "out" / "shadow")}}]
    run_ = playbook(tmp_path, tasks)
    assert run_.returncode != 0
    said = " ".join(run_.stdout.split())
    assert "refusing" in said and "train-x" in said and not (tmp_path / "out" / "shadow").exists()
    assert SECRET.strip() not in run_.stdout
