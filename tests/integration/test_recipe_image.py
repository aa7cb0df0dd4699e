"""The recipe's own profile, tf2.1-gpu, built for real: templates/Dockerfile.j2 through the
lab_image role on a stand-in of tensorflow/tensorflow:2.1.0-gpu-py3 (issue #10).

The stand-in (labbox/context/tf2.1-standin, README there) is Debian 12 with CPython 3.6
as python3, pip 20.0.2, the tensorflow-cpu 2.1.0 wheel and the CUDA apt lists; the local
registry serves it as effdetlab/tensorflow:2.1.0-gpu-py3-standin. One bare scratch host
(scratch-7) serves the whole module: one converge (host layer, image, container, the
data stage), then every check on that one container.

The simulated host has no nvidia-smi. The profile is set by the inventory, so the real
preflight runs: it accepts a GPU profile where it cannot read a driver (nothing to
compare driver_min with) and says so, and lab_container_gpus "auto" then asks for no GPU.

Measured on a 2-core machine (2026-12-03): the stand-in's build 141 s with no layer cache
(apt, the Python tree, pip and TensorFlow 2.1 from PyPI), under 2 s once built; its first push
into the registry 35 s; the converge 146-287 s; the module 165-345 s (9 tests).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import Callable, Iterator

import pytest
import yaml

from conftest import REPO, PlaybookRun, ScratchHost, labbox, remove_scratch_host, start_scratch_host

from labbox import images, tf21base
from labbox.services import APT_URL

SCRATCH = 7
STANDIN = tf21base.HUB_NAME
RUN = "recipe-image"
KEY = REPO / ".labbox" / "id_ed25519"
USER = "lcg"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
# The data folder in the container (inventory/labbox/group_vars/gpu_hosts/lab.yml).
CTR_ROOT = "/data/effdet-lab"
# An automl-shaped git mirror, served over dumb HTTP by the lab-in-a-box's apt server.
MIRROR = REPO / ".labbox" / "apt" / "git" / "recipe-automl.git"
MIRROR_URL = f"{APT_URL}/git/recipe-automl.git"


def stub_scripts() -> dict[str, str]:
    """STUBS, not automl: main.py and model_inspect.py that define exactly the flags automl 9f1cf16
    (the tf2.1-gpu profile's pinned commit, the 2020-05 dialect) defines, per effdetlab's own table.
    The stage runner reads flag definitions to pick the dialect; nothing here trains."""
    from effdetlab.stages.dialect import FLAGS

    scripts = {}
    for script in ("main", "model_inspect"):
        flags = sorted({r.flag for r in FLAGS if r.script == script and "2020-05" in r.dialects})
        lines = ['"""effdet-lab test stub: the flags of automl 9f1cf16, no model."""',
                 "from absl import flags", ""]
        lines += [f"flags.DEFINE_string('{flag}', None, 'stub')" for flag in flags]
        scripts[f"efficientdet/{script}.py"] = "\n".join(lines) + "\n"
    return scripts


def make_mirror() -> str:
    """A bare repository with the stub scripts; returns its commit (what the inventory pins)."""
    work = MIRROR.with_name("recipe-automl-work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(MIRROR, ignore_errors=True)
    git = ["git", "-c", "user.name=effdet-lab", "-c", "user.email=labbox@effdet-lab.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "master", str(work)], check=True)
    for name, text in stub_scripts().items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "stub scripts"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(MIRROR)], check=True)
    subprocess.run(["git", "-C", str(MIRROR), "update-server-info"], check=True)
    shutil.rmtree(work, ignore_errors=True)
    return commit


def timed(step: Callable[[], object]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


@pytest.fixture(scope="module")
def standin(lab_hosts) -> dict:
    """The stand-in, built (once: its tag is a hash of what goes in) and served.

    The build touches only local images, so it runs outside the harness lock that the
    other pytest's `python -m labbox` calls wait on; the push to the registry runs under it."""
    had_it = images.image_exists(tf21base.current_ref())
    first_s = timed(tf21base.ensure_built)
    cached_s = timed(tf21base.ensure_built)
    serve_s = timed(lambda: labbox("standin"))
    print(f"\n[recipe image] stand-in {STANDIN}: build {first_s:.1f} s "
          f"({'found built' if had_it else 'built now'}), cached {cached_s:.1f} s; "
          f"`labbox standin` (serve) {serve_s:.1f} s", flush=True)
    return {"first_s": first_s, "cached_s": cached_s, "serve_s": serve_s, "built_now": not had_it}


@pytest.fixture(scope="module")
def recipe(standin) -> Iterator[dict]:
    """scratch-7 converged with the tf2.1-gpu profile on the stand-in, and the data stage run."""
    commit = make_mirror()
    host = start_scratch_host(SCRATCH)
    variables = {
        "lab_image_profile": "tf2.1-gpu",
        "lab_image_base": STANDIN,
        # pip in the image build meets the same TLS interception as the stand-in's build did.
        "lab_image_extra_ca": tf21base.extra_ca_pem(f"effdet-lab/{tf21base.NAME}:latest"),
        "effdet_tasks_run_name": RUN,
        "effdet_tasks_code_source": "git",
        "effdet_tasks_git_url": MIRROR_URL,
        "effdet_tasks_git_version": commit,
    }
    host_vars = host.inventory / "host_vars" / f"{host.name}.yml"
    host_vars.parent.mkdir(exist_ok=True)
    host_vars.write_text("---\n" + yaml.safe_dump({k: v for k, v in variables.items() if v is not None}))
    try:
        started = time.monotonic()
        run = host.play("site.yml", "--tags", "host,image,container,data", timeout=2400)
        converge_s = time.monotonic() - started
        print(f"\n[recipe image] converge of {host.name} (host, image, container, data): {converge_s:.1f} s",
              flush=True)
        assert run.rc == 0, run.tail(6000)
        yield {"host": host, "run": run, "commit": commit, "converge_s": converge_s}
    finally:
        remove_scratch_host(host)
        shutil.rmtree(MIRROR, ignore_errors=True)


def host_ip(host: ScratchHost) -> str:
    return subprocess.run(["docker", "inspect", "-f", '{{(index .NetworkSettings.Networks "effdet-lab").IPAddress}}',
                           host.container], capture_output=True, text=True, check=True).stdout.strip()


def lab_ssh(host: ScratchHost, command: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """ssh -p 5522 lcg@host from the controller, key only, as a lab member logs in."""
    proc = subprocess.run(["ssh", *SSH_OPTS, "-i", str(KEY), "-p", "5522", f"{USER}@{host_ip(host)}", command],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{command}: {proc.stderr}{proc.stdout}"
    return proc


def said(run: PlaybookRun) -> str:
    return " ".join(run.output.split())


def test_the_preflight_takes_the_profile_from_the_inventory_on_a_host_without_a_driver(recipe):
    """No nvidia-smi: no driver to hold driver_min (418.39) against, so the real preflight keeps the
    inventory's profile, says why, and the container asks for no GPU."""
    text = said(recipe["run"])
    assert f"FROM {STANDIN} (tf2.1-gpu set by the inventory (no nvidia-smi on the host))" in text, text[-4000:]
    image = recipe["host"].sh("docker inspect -f '{{.Config.Image}}' effdet-lab").stdout.strip()
    assert image.startswith("effdet-lab/lab:tf2.1-gpu-"), image
    requests = recipe["host"].sh("docker inspect -f '{{json .HostConfig.DeviceRequests}}' effdet-lab").stdout.strip()
    assert requests in ("null", "[]"), requests


def test_the_cuda_lists_of_the_base_are_removed(recipe):
    host = recipe["host"]
    base = host.sh(f"docker run --rm --entrypoint ls {STANDIN} /etc/apt/sources.list.d").stdout.split()
    assert {"cuda.list", "nvidia-ml.list"} <= set(base), base
    lab = host.sh("docker exec effdet-lab ls -A /etc/apt/sources.list.d").stdout.split()
    assert not [name for name in lab if name.startswith(("cuda", "nvidia-ml"))], lab


def test_the_lab_user_logs_in_with_sudo_sshd_and_locale(recipe):
    out = lab_ssh(recipe["host"], "id -un; id -u; sudo -n true && echo sudo-ok; sudo -n /usr/sbin/sshd -t && "
                                  "echo sshd-ok; echo $LANG; locale -a | grep -ix zh_CN.utf8").stdout.split()
    assert out[:5] == [USER, "1001", "sudo-ok", "sshd-ok", "zh_CN.UTF-8"], out
    assert out[5].lower() == "zh_cn.utf8", out


def test_the_dev_packages_are_installed(recipe):
    out = lab_ssh(recipe["host"], "dpkg-query -W -f '${Package} ${Status}\\n' uuid-dev net-tools vim gcc "
                                  "openssh-server sudo locales; "
                                  "ls /usr/include/tiffio.h /usr/include/*/tiffio.h 2>/dev/null || true").stdout
    for package in ("uuid-dev", "net-tools", "vim", "gcc", "openssh-server", "sudo", "locales"):
        assert f"{package} install ok installed" in out, out
    # libtiff5-dev: on Debian 12 a name that libtiff-dev provides, headers under the multiarch folder.
    assert "tiffio.h" in out, f"libtiff5-dev (its headers) is missing: {out}"


def test_python3_is_3_6_with_pip_20_and_tensorflow_2_1_for_the_lab_user(recipe):
    probe = ("import sys, ssl, ctypes, sqlite3, bz2, lzma, zlib, json, pip, tensorflow as tf; "
             "sqlite3.connect(':memory:').execute('select 1'); ctypes.CDLL(None); "
             "print(sys.executable, '%d.%d.%d' % sys.version_info[:3], ssl.OPENSSL_VERSION.split()[1], "
             "pip.__version__, tf.__version__)")
    out = lab_ssh(recipe["host"], f'command -v python3; python3.6 -V; pip --version; python3 -c "{probe}"').stdout
    lines = out.splitlines()
    assert lines[0] == "/usr/local/bin/python3", out
    assert lines[1] == "Python 3.6.15", out
    assert lines[2].startswith("pip 20.0.2 ") and lines[2].endswith("(python 3.6)"), out
    executable, version, _openssl, pip_version, tf_version = lines[-1].split()
    assert (version, pip_version, tf_version) == ("3.6.15", "20.0.2", "2.1.0"), out
    assert executable.startswith("/usr/local/bin/python3"), out


def test_the_profiles_pip_set_is_installed_and_pycocotools_built_for_3_6(recipe):
    host = recipe["host"]
    freeze = set(lab_ssh(host, "pip freeze").stdout.split())
    pins = {"absl-py==0.9.0", "lxml==4.5.0", "PyYAML==5.3.1", "Pillow==7.1.2", "matplotlib==3.2.1",
            "pycocotools==2.0.1", "Cython==0.29.17", "tensorflow-cpu==2.1.0", "numpy==1.18.1"}
    assert pins <= freeze, sorted(pins - freeze)
    mask = lab_ssh(host, "python3 -c 'import pycocotools._mask as m, pycocotools.coco; print(m.__file__)'")
    assert mask.stdout.strip().endswith("_mask.cpython-36m-x86_64-linux-gnu.so"), mask.stdout
    # What automl's evaluator (coco_metric.EvaluationMetric) does after every eval: COCO.loadRes of
    # a numpy array of detections, then COCOeval. pycocotools 2.0.0 dies here on Python 3 (NameError:
    # name 'unicode' is not defined), which is why the profile pins 2.0.1.
    script = (
        "import json, numpy as np, tempfile; from pycocotools.coco import COCO; "
        "from pycocotools.cocoeval import COCOeval; "
        "gt = {'images': [{'id': 1, 'width': 64, 'height': 64}], 'categories': [{'id': 1, 'name': 'c1'}], "
        "'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [8, 8, 32, 32], "
        "'area': 1024, 'iscrowd': 0}]}; "
        "f = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False); json.dump(gt, f); f.close(); "
        "coco = COCO(f.name); dt = coco.loadRes(np.array([[1, 8, 8, 32, 32, 0.9, 1]])); "
        "e = COCOeval(coco, dt, 'bbox'); e.evaluate(); e.accumulate(); e.summarize(); "
        "print('AP', round(e.stats[0], 3))")
    ap = lab_ssh(host, f'python3 -c "{script}"')
    assert ap.stdout.strip().splitlines()[-1] == "AP 1.0", ap.stdout[-2000:]


def test_the_converter_ran_on_python_3_6_with_tensorflow_2_1s_crc32c(recipe):
    results = REPO / "results" / "effdet" / RUN / recipe["host"].name / "data"
    report = json.loads((results / "train-report.json").read_text())
    assert report["reconciliation"]["ok"] is True
    assert report["totals"]["images_written"] == 16
    assert report["options"]["record_writer"] == "native-crc32c", report["options"]
    # TensorFlow 2.1 reads back every record it wrote (its reader checks each CRC).
    pattern = f"{CTR_ROOT}/runs/{RUN}/data/train/train-*-of-*.tfrecord"
    count = lab_ssh(recipe["host"], "python3 -c \"import tensorflow as tf; "
                                    f"print(sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob('{pattern}'))))\"")
    assert count.stdout.strip().splitlines()[-1] == "16", count.stdout + count.stderr


def test_the_stage_runner_reads_the_2020_05_dialect_on_python_3_6(recipe):
    """effdetlab.stages as the lab user, on the converted data, against the pinned checkout the
    setup mirrored into the data folder: the dialect is read from the scripts' flags."""
    host = recipe["host"]
    config = {"run_dir": f"{CTR_ROOT}/runs/{RUN}/stage-check", "code_source": "git",
              "code_dir": f"{CTR_ROOT}/automl", "train_file_pattern": f"{CTR_ROOT}/runs/{RUN}/data/train/*.tfrecord",
              "val_file_pattern": f"{CTR_ROOT}/runs/{RUN}/data/val/*.tfrecord", "num_examples_per_epoch": 16,
              "infer_images": f"{CTR_ROOT}/runs/{RUN}/infer-input"}
    path = f"{CTR_ROOT}/runs/{RUN}/stage-check.json"
    lab_ssh(host, f"mkdir -p {CTR_ROOT}/runs/{RUN}/stage-check && cat > {path} <<'EOF'\n{json.dumps(config)}\nEOF")
    out = json.loads(lab_ssh(host, f"cd {CTR_ROOT}/code && python3 -m effdetlab.stages commands "
                                   f"--config {path}").stdout)
    assert (out["code_source"], out["dialect"]) == ("git", "2020-05"), out
    assert "--training_file_pattern=" in out["train"] and "--use_tpu=False" in out["train"], out["train"]
    assert "python3" in out["train"], out["train"]
    status = lab_ssh(host, f"cd {CTR_ROOT}/code && python3 -m effdetlab.stages status --config {path}")
    assert status.stdout.strip(), status.stderr


def test_the_stand_in_is_built_once(standin, recipe):
    """A second ensure_built finds the image by its tag and builds nothing."""
    assert standin["cached_s"] < 30, standin
    assert images.image_exists(tf21base.current_ref())
    print(f"\n[recipe image] stand-in build {standin['first_s']:.1f} s "
          f"({'built now' if standin['built_now'] else 'found built'}), cached {standin['cached_s']:.1f} s, "
          f"served {standin['serve_s']:.1f} s; converge {recipe['converge_s']:.1f} s", file=sys.stderr)
