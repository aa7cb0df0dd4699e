"""The EfficientDet stages through Ansible, in the lab containers of the lab-in-a-box.

One tiny CPU run of D0 on the lab-in-a-box's messy VOC set (labbox/demo_data.py):
every stage's real output is checked on the controller, a second run changes
nothing, and bad inputs fail clearly.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, docker_sh, playbook_command, run_playbook

RUN = f"pytest-{os.getpid()}"
RESULTS = REPO / "results" / "effdet" / RUN
SWEEP = {"effdet_tasks_run_name": RUN, "effdet_tasks_benchmark_batch_sizes": [1, 4],
         "effdet_tasks_benchmark_threads": [1], "effdet_tasks_benchmark_runs": 3,
         "effdet_tasks_benchmark_repeats": 2}


def extra_vars(tmp_path: Path, **overrides) -> str:
    path = tmp_path / "effdet-vars.json"
    path.write_text(json.dumps({**SWEEP, **overrides}))
    return f"@{path}"


@pytest.fixture(scope="module")
def effdet_run(lab_deployed, tmp_path_factory):
    shutil.rmtree(RESULTS, ignore_errors=True)
    tmp = tmp_path_factory.mktemp("effdet")
    first = run_playbook("playbooks/effdet.yml", "-e", extra_vars(tmp))
    assert first.rc == 0, first.tail(6000)
    return {"hosts": lab_deployed["hosts"], "first": first, "tmp": tmp}


def test_data_reports_reconcile_and_fix_labelimg_paths(effdet_run):
    for host in effdet_run["hosts"]:
        report = json.loads((RESULTS / host / "data" / "train-report.json").read_text())
        totals = report["totals"]
        assert report["reconciliation"]["ok"] is True
        assert totals["images_written"] == 16 and totals["images_skipped"] == 0
        assert totals["objects_in"] == totals["objects_written"] + totals["objects_dropped"]
        assert totals["objects_clipped"] > 0, "the demo set has boxes past the image edge"
        assert totals["objects_inverted_fixed"] > 0, "the demo set has boxes drawn right to left"
        assert sorted(report["label_map"]) == ["cat", "dog", "person"]
        val = json.loads((RESULTS / host / "data" / "val-report.json").read_text())
        assert val["totals"]["images_written"] == 4
        assert val["label_map"] == report["label_map"]


def test_training_progress_came_back(effdet_run):
    for host in effdet_run["hosts"]:
        lines = (RESULTS / host / "train" / "progress.jsonl").read_text().splitlines()
        steps = [json.loads(line) for line in lines if line.strip()]
        assert steps, host
        assert all(math.isfinite(s["loss"]) for s in steps)
        status = json.loads((RESULTS / host / "train" / "train_status.json").read_text())
        assert status["state"] == "finished"
        assert "[effdet]" in effdet_run["first"].output, "training progress is printed live"


def test_export_wrote_a_saved_model_that_detects_and_a_tflite(effdet_run):
    for host in effdet_run["hosts"]:
        export = json.loads((RESULTS / host / "export" / "export.json").read_text())
        assert export["ok"] is True
        assert export["saved_model"]["ok"] and export["saved_model"]["detections_shape"] == [1, 100, 7]
        assert export["tflite"]["ok"] and export["tflite"]["bytes"] > 1_000_000
        # the default sweep's tflite-int8 mode: a calibrated int8 file, and what it costs in mAP
        int8 = export["quantized"]["int8"]
        assert int8["ok"] and int8["input_dtype"] == "uint8" and int8["bytes"] < export["tflite"]["bytes"] / 2
        acc = export["accuracy"]
        assert acc["ok"] and acc["images"] == 4, acc  # the demo's validation set
        assert set(acc) >= {"float", "int8", "ap_change"} and 0 <= acc["int8"]["AP"] <= 1


def test_benchmark_sweep_is_shared_and_merged(effdet_run):
    merged = json.loads((RESULTS / "benchmark.json").read_text())
    assert len(merged["files"]) == 2 and merged["failed"] == []
    records = merged["rows"]
    hosts = {r["host"] for r in records}
    assert hosts == set(effdet_run["hosts"]), "each host measured its share of (model, batch) pairs"
    assert {r["batch"] for r in records} == {1, 4}
    assert {r["mode"] for r in records} == {"bm", "e2e", "tflite", "tflite-int8"}
    assert all(r["latency_ms"] > 0 and r["runs"] == 2 for r in records), "2 repeats of each"
    md = (RESULTS / "benchmark.md").read_text()
    assert md.count("| efficientdet-d0 |") >= 8 and "## Side by side" in md
    assert (RESULTS / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_batch_is_filled_and_fps_counts_the_images_fed(effdet_run):
    """e2e and TFLite at batch 4 run a model exported for batch 4 (it answers 4 rows for 4 images),
    fed 4 images (the 2 given ones twice), and fps is images fed / latency. (That the latency then
    grows with the batch is timed in tests/effdet's chain, which has the machine to itself: here two
    hosts and the rest of the suite share two cores.)"""
    recs = [r for host in effdet_run["hosts"]
            for r in json.loads((RESULTS / host / "benchmark" / "benchmark.json").read_text())]
    assert len(recs) == 2 * 4 * 2 and all(r["ok"] for r in recs)  # 2 batches x 4 modes x 2 repeats
    for r in recs:
        assert r["images_fed"] == r["batch"]
        assert r["fps"] == pytest.approx(1000.0 * r["images_fed"] / r["latency_ms"], rel=1e-3)
        if r["mode"] != "bm":
            assert r["distinct_images"] == min(2, r["batch"])
    b4_host = next(r["host"] for r in recs if r["batch"] == 4)
    exported = json.loads(docker_sh(
        f"effdet-lab-host-{b4_host.rsplit('-', 1)[1]}",
        f"cat /srv/effdet-lab/data/effdet-lab/runs/{RUN}/train-*/bench/exports/efficientdet-d0-b4/export.json").stdout)
    assert exported["batch_size"] == 4 and "--batch_size=4" in exported["command"]
    assert exported["saved_model"]["detections_shape"] == [4, 100, 7]
    assert exported["tflite"]["detections_shape"] == [4, 100, 7]
    assert exported["quantized"]["int8"]["detections_shape"] == [4, 100, 7]
    assert [r["repeat"] for r in recs if r["mode"] == "bm" and r["batch"] == 1] == [1, 2]
    tfl = next(r for r in recs if r["mode"] == "tflite")
    assert tfl["delegate"].startswith("XNNPACK") and tfl["runtime"] == "TFLite interpreter"


def test_each_measurement_is_printed_as_it_ends(effdet_run):
    out = effdet_run["first"].output
    for host in effdet_run["hosts"]:
        lines = [ln for ln in out.splitlines() if f"[effdet] {host}: d0 " in ln and " repeat " in ln]
        assert len(lines) == 8, lines  # 4 modes x 2 repeats of this host's batch
        assert all(" ms, " in ln and "images/s" in ln for ln in lines)


def test_annotated_images_came_back(effdet_run):
    for host in effdet_run["hosts"]:
        infer = RESULTS / host / "infer"
        images = sorted(p.name for p in infer.glob("*.jpg"))
        assert images == ["own photo 0.jpg", "own photo 1.jpg"], images
        assert all((infer / name).stat().st_size > 1000 for name in images)


def test_second_run_changes_nothing(effdet_run):
    again = run_playbook("playbooks/effdet.yml", "-e", extra_vars(effdet_run["tmp"]))
    assert again.rc == 0, again.tail(4000)
    assert again.changed() == 0, again.tail(4000)


def test_site_check_mode_with_diff_changes_nothing(effdet_run):
    """The whole site.yml in check mode with --diff, on hosts where everything has converged: every
    stage runs its read-only path and reports no change."""
    run = run_playbook("site.yml", "--check", "--diff", "-e", extra_vars(effdet_run["tmp"]))
    assert run.rc == 0, run.tail(4000)
    assert run.changed() == 0, run.tail(4000)
    assert set(effdet_run["hosts"]) <= set(run.recap), run.recap


def test_status_reports_every_host(effdet_run):
    """playbooks/status.yml, read-only: per host the GPUs, the image, the container, the training and the
    benchmark, printed and written as JSON and Markdown on the controller."""
    before = set((REPO / "results").glob("status-*.json"))
    run = run_playbook("playbooks/status.yml")
    assert run.rc == 0, run.tail(4000)
    assert run.changed() == 0, run.tail(4000)
    (report,) = set((REPO / "results").glob("status-*.json")) - before
    rows = {r["host"]: r for r in json.loads(report.read_text())}
    assert set(rows) == set(effdet_run["hosts"])
    for host, row in rows.items():
        assert row["gpus"] == [] and row["gpu_note"] == "no nvidia-smi", row
        assert row["image"].startswith("effdet-lab/lab:cpu-"), row
        assert row["container"].startswith("running since "), row
        assert row["training"]["state"] == "finished" and row["training"]["global_step"] > 0, row
        bench = row["benchmark"]
        assert bench["model"] == "efficientdet-d0", row
        assert bench["mode"] in ("bm", "e2e", "tflite", "tflite-int8") and bench["latency_ms"] > 0, row
        said = " ".join(run.output.split())
        assert f"{host}: GPUs 0 (no nvidia-smi); image effdet-lab/lab:cpu-" in said
        assert f"last benchmark efficientdet-d0 {bench['mode']} batch {bench['batch']}" in said, said[-3000:]
    table = report.with_suffix(".md").read_text()
    assert all(f"| {host} | 0 | effdet-lab/lab:cpu-" in table for host in rows), table
    assert table.count("| efficientdet-d0 ") == len(rows), table


@pytest.mark.parametrize("overrides, message", [
    ({"effdet_tasks_model_name": "efficientdet-d9"}, "effdet_tasks_model_name must be one of"),
    ({"effdet_tasks_dataset_src": "/nonexistent/voc"}, "The dataset folder /nonexistent/voc does not exist"),
    ({"effdet_tasks_hparams": {"num_classes": 7, "image_size": 128}}, "--num-classes=7 does not match the label map"),
    ({"effdet_tasks_run_name": "../escape"}, "effdet_tasks_run_name must be a plain folder name"),
], ids=["unknown-model", "missing-dataset", "num-classes-vs-label-map", "run-name"])
def test_bad_inputs_fail_clearly(effdet_run, tmp_path, overrides, message):
    run = run_playbook("playbooks/effdet.yml", "-e",
                       extra_vars(tmp_path, **{"effdet_tasks_run_name": f"{RUN}-bad", **overrides}))
    assert run.rc != 0
    assert message in " ".join(run.output.split()), run.tail(3000)


def test_corrupt_xml_is_reported_not_fatal(effdet_run, tmp_path):
    data = tmp_path / "voc"
    shutil.copytree(REPO / ".labbox" / "demo-data" / "voc", data)
    broken = sorted((data / "Annotations").glob("img_*.xml"))[0]
    broken.write_text(broken.read_text()[:120])
    run = run_playbook("playbooks/effdet.yml", "--tags", "data", "-e",
                       extra_vars(tmp_path, effdet_tasks_run_name=f"{RUN}-corrupt",
                                  effdet_tasks_dataset_name="voc-corrupt", effdet_tasks_dataset_src=str(data)))
    assert run.rc == 0, run.tail(3000)
    # A new tree of more than 16 files: one tar, which under mitogen (ansible.cfg's strategy) goes
    # through Ansible's own ssh connection, not mitogen's file service.
    said = " ".join(run.output.split())
    assert "files written, " in said and "through the tmp folder: ssh" in said, run.tail(3000)
    host = effdet_run["hosts"][0]
    report = json.loads((REPO / "results" / "effdet" / f"{RUN}-corrupt" / host / "data" / "train-report.json").read_text())
    issues = [i for i in report["issues"] if i["kind"] == "corrupt_xml"]
    assert len(issues) == 1 and broken.name in json.dumps(issues[0]), issues


def test_a_bundle_in_parts_is_unpacked_part_by_part_while_the_next_are_sent(effdet_run, tmp_path, monkeypatch):
    """effdet_safe_put over ssh with parts of 40,000 bytes: a writer thread writes the parts (hashing
    each file once, the controller's cache being empty), a sender thread sends them through
    Ansible's own ssh connection, and the module unpacks each part as soon as it is there. Every
    file arrives intact with the lab user's owner; the next put answers from the stamp."""
    host = effdet_run["hosts"][0]
    sim = f"effdet-lab-host-{host.rsplit('-', 1)[1]}"
    src = tmp_path / "many"
    (src / "JPEGImages").mkdir(parents=True)
    bodies = {f"img {i:03d}.jpg": os.urandom(3000 + i) for i in range(60)}
    for name, body in bodies.items():
        (src / "JPEGImages" / name).write_bytes(body)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(REPO / "roles" / "effdet_tasks" / "library"))   # the module, outside the role
    dest = "effdet-lab/datasets/pytest-parts"
    docker_sh(sim, f"rm -rf /srv/effdet-lab/data/{dest} /srv/effdet-lab/data/effdet-lab/datasets/.pytest-parts.*")
    book = tmp_path / "put.yml"
    shown = ("{{ {'changed': put.changed, 'written': put.written | length, 'transfer': put.transfer, "
             "'parts': (put.timings | default({})).parts | default(0), 'stamp': put.stamp | default('none')} | to_json }}")
    book.write_text(json.dumps([{"hosts": host, "become": True, "gather_facts": False, "tasks": [
        {"name": "put", "register": "put", "effdet_lab.lab.effdet_safe_put": {
            "src": str(src), "base": "/srv/effdet-lab/data", "path": dest, "owner": 1001, "group": 1001,
            "mode": "0644", "dir_mode": "0755", "part_size": 40000}},
        {"name": "show", "ansible.builtin.debug": {"msg": "PUT " + shown}}]}]))

    def put() -> dict:
        run = run_playbook(str(book))
        assert run.rc == 0, run.tail(3000)
        said = run.output.split("PUT ", 1)[1]
        return json.loads(said[:said.index("}") + 1].replace('\\"', '"'))

    assert put() == {"changed": True, "written": 60, "transfer": "ssh", "parts": 5, "stamp": "none"}
    sums = docker_sh(sim, f"cd /srv/effdet-lab/data/{dest}/JPEGImages && stat -c '%u:%g %n' * && sha1sum *").stdout
    for name, body in bodies.items():
        assert f"1001:1001 {name}" in sums and f"{hashlib.sha1(body).hexdigest()}  {name}" in sums, name
    assert put() == {"changed": False, "written": 0, "transfer": "none", "parts": 0, "stamp": "holds"}
    docker_sh(sim, f"rm -rf /srv/effdet-lab/data/{dest} /srv/effdet-lab/data/effdet-lab/datasets/.pytest-parts.*")


def test_git_source_checks_out_the_pinned_commit_from_a_mirror(effdet_run, tmp_path):
    """code_source git with the URL pointed at a mirror: the pinned commit, not the branch head, is
    checked out on the host. The mirror (served by the lab-in-a-box over dumb HTTP) holds no automl
    code, so the stage that needs it must then say so clearly."""
    work = tmp_path / "automl"
    git = ["git", "-c", "user.name=effdet-lab", "-c", "user.email=labbox@effdet-lab.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "master", str(work)], check=True)
    (work / "efficientdet").mkdir()
    (work / "efficientdet" / "README.md").write_text("mirror used by effdet-lab's tests\n")
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "pinned"], check=True)
    pinned = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    (work / "efficientdet" / "later.txt").write_text("a later commit that must not be checked out\n")
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "later"], check=True)
    mirror = REPO / ".labbox" / "apt" / "git" / "automl.git"
    shutil.rmtree(mirror, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirror)], check=True)
    subprocess.run(["git", "-C", str(mirror), "update-server-info"], check=True)
    host = effdet_run["hosts"][0]
    run = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "train", "-e", extra_vars(
        tmp_path, effdet_tasks_code_source="git", effdet_tasks_git_version=pinned,
        effdet_tasks_git_url="http://effdet-lab-apt:8080/git/automl.git"))
    assert run.rc != 0
    said = " ".join(run.output.split())
    assert "no main.py + model_inspect.py there" in said, run.tail(3000)
    assert f"starting training on {host} failed (exit 2): effdetlab.stages train: error: code_dir" in said, said[-3000:]
    checked_out = subprocess.run(["docker", "exec", f"effdet-lab-host-{host.rsplit('-', 1)[1]}", "git", "-C",
                                  "/srv/effdet-lab/data/effdet-lab/automl", "rev-parse", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    assert checked_out == pinned
    # A stage after train, for a configuration never trained, says so before anything changes.
    export = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "export", "-e", extra_vars(
        tmp_path, effdet_tasks_code_source="git", effdet_tasks_git_version=pinned,
        effdet_tasks_git_url="http://effdet-lab-apt:8080/git/automl.git", effdet_tasks_hparams={"image_size": 256}))
    assert export.rc != 0 and "Run the train stage first" in " ".join(export.output.split()), export.tail(3000)


def test_training_killed_with_its_container_resumes_on_the_next_run(effdet_run, tmp_path):
    """The lab container dies mid-training (docker kill, as in a crash or a power cut). The play reports
    the failed training; the next run of the same play starts training again, which resumes from the
    last checkpoint and finishes, its step count continuing."""
    host = effdet_run["hosts"][0]
    sim = f"effdet-lab-host-{host.rsplit('-', 1)[1]}"
    run_name = f"{RUN}-resume"
    args = ["playbooks/effdet.yml", "--limit", host, "--tags", "data,train", "-e", extra_vars(
        tmp_path, effdet_tasks_run_name=run_name, effdet_tasks_num_examples_per_epoch=48,
        effdet_tasks_save_checkpoints_steps=2, effdet_tasks_train_poll_seconds=2)]
    cmd, env = playbook_command(*args)
    play = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = f"/srv/effdet-lab/data/effdet-lab/runs/{run_name}"
    deadline = time.monotonic() + 600
    while True:
        ckpts = docker_sh(sim, f"ls {runs}/train-*/model/ 2>/dev/null || true").stdout.split()
        steps = [int(n.split("-")[1].split(".")[0]) for n in ckpts if n.startswith("model.ckpt-") and n.endswith(".index")]
        if any(step > 0 for step in steps):
            break
        assert play.poll() is None, (play.stdout.read() if play.stdout else "")[-3000:]
        assert time.monotonic() < deadline, "no checkpoint past step 0 within 10 minutes"
        time.sleep(1)
    docker_sh(sim, "docker kill effdet-lab >/dev/null; sleep 1; docker start effdet-lab >/dev/null || true")
    first_output = play.communicate(timeout=600)[0]
    assert play.returncode != 0, first_output[-3000:]
    said = " ".join(first_output.split())
    assert "training failed: train process" in said and "is gone without recording an exit status" in said, \
        first_output[-3000:]

    again = run_playbook(*args)
    assert again.rc == 0, again.tail(4000)
    results = REPO / "results" / "effdet" / run_name / host / "train"
    status = json.loads((results / "train_status.json").read_text())
    assert status["state"] == "finished" and status["attempt"] == 2, status
    resumed_at = int(status["resumed_from"].rsplit("-", 1)[1])
    assert 0 < resumed_at < 12 and status["global_step"] == 12, status
    progress = [json.loads(line) for line in (results / "progress.jsonl").read_text().splitlines() if line.strip()]
    assert {p["attempt"] for p in progress} == {1, 2}
    assert [p["step"] for p in progress if p["attempt"] == 2][0] == resumed_at
    assert "Restoring parameters from" in (results / "train.log").read_text()


def test_each_stage_alone_runs_with_the_values_given_now(effdet_run, tmp_path):
    """playbooks/effdet.yml alone (no image play in this invocation) takes the image profile from the image
    stage's record on the host, for the image the lab container runs; --tags export and --tags infer, after
    a change of their own variables, run with the new values (each writes its own config), not with the
    ones the train stage last wrote."""
    host = effdet_run["hosts"][0]
    first = " ".join(effdet_run["first"].output.split())
    assert "image profile cpu (from /etc/ansible/facts.d/effdet_lab_image.fact, for effdet-lab/lab:cpu-" in first
    changed = {"effdet_tasks_min_score_thresh": 0.25, "effdet_tasks_image_size": 384,
               "effdet_tasks_benchmark_modes": ["bm", "e2e", "tflite"]}
    export = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "export",
                          "-e", extra_vars(tmp_path, **changed))
    assert export.rc == 0, export.tail(4000)
    exported = json.loads((RESULTS / host / "export" / "export.json").read_text())
    assert exported["ok"] and exported["min_score_thresh"] == 0.25, exported
    infer = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "infer", "-e", extra_vars(tmp_path, **changed))
    assert infer.rc == 0, infer.tail(4000)
    inferred = json.loads((RESULTS / host / "infer" / "infer.json").read_text())
    assert inferred["min_score_thresh"] == 0.25 and list(inferred["image_size"]) == [384, 384], inferred


def test_a_stage_alone_takes_the_profile_only_for_the_image_the_container_runs(effdet_run):
    """The image stage's record names the profile of the image it built. Where it names another image than
    the one the lab container runs, the stage refuses before changing anything; where it names the running
    image, its profile decides the automl source (tf2.1-gpu: the pinned git commit)."""
    host = effdet_run["hosts"][0]
    sim = f"effdet-lab-host-{host.rsplit('-', 1)[1]}"
    record = "/etc/ansible/facts.d/effdet_lab_image.fact"
    saved = docker_sh(sim, f"cat {record}").stdout
    image = json.loads(saved)["image"]
    try:
        planted = json.dumps({"image": "effdet-lab/lab:cpu-0123456789ab", "profile": "cpu"})
        docker_sh(sim, f"printf '%s' '{planted}' > {record}")
        stale = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "data", "--check")
        said = " ".join(stale.output.split())
        assert stale.rc != 0 and f"it runs {image}, and the record of the image stage {record} names " \
            "effdet-lab/lab:cpu-0123456789ab" in said, said[-3000:]
        assert stale.changed() == 0
        docker_sh(sim, f"""printf '%s' '{json.dumps({"image": image, "profile": "tf2.1-gpu"})}' > {record}""")
        recipe = run_playbook("playbooks/effdet.yml", "--limit", host, "--tags", "data", "--check")
        said = " ".join(recipe.output.split())
        assert f"image profile tf2.1-gpu (from {record}, for {image}); automl code: git@" in said, said[-3000:]
    finally:
        docker_sh(sim, f"printf '%s' '{saved}' > {record}")
