"""lab_image on the lab-in-a-box: built once per session, never rebuilt when nothing changed.

Also holds the helpers the other test_lab_*.py modules import.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time

import yaml

from conftest import INVENTORY, REPO, run_playbook

KEY = REPO / ".labbox" / "id_ed25519"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
CONTAINER = "effdet-lab"
USER = "lcg"
PORT = 5522


def host_port(host: str) -> int:
    inv = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    return int(inv["all"]["children"]["gpu_hosts"]["hosts"][host]["ansible_port"])


def host_sh(host: str, command: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    """A command on the simulated host itself (as root, like Ansible)."""
    proc = subprocess.run(["ssh", *SSH_OPTS, "-i", str(KEY), "-p", str(host_port(host)), "root@127.0.0.1", command],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}{proc.stdout}"
    return proc


def host_ip(host: str) -> str:
    name = f"effdet-lab-host-{host.rsplit('-', 1)[1]}"
    return subprocess.run(["docker", "inspect", "-f", '{{(index .NetworkSettings.Networks "effdet-lab").IPAddress}}',
                           name], capture_output=True, text=True, check=True).stdout.strip()


def lab_ssh(host: str, command: str, user: str = USER, *extra: str) -> subprocess.CompletedProcess:
    """ssh -p 5522 user@host, from the controller through the published port."""
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(KEY), *extra, "-p", str(PORT), f"{user}@{host_ip(host)}",
                           command], capture_output=True, text=True, timeout=60, check=False)


def in_container(host: str, command: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess:
    return host_sh(host, f"docker exec -u {user} {CONTAINER} sh -c {shlex.quote(command)}", check=check)


def image_ref(host: str) -> str:
    return host_sh(host, f"docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER}").stdout.strip()


def test_rebuild_skipped_when_nothing_changed(lab_deployed):
    started = time.monotonic()
    run = run_playbook("playbooks/image.yml")
    elapsed = time.monotonic() - started
    assert run.rc == 0, run.tail(4000)
    assert run.changed() == 0, run.tail(4000)
    assert run.output.count("unchanged, not rebuilt") == len(lab_deployed["hosts"]), run.tail(3000)
    sizes = [line.split("msg: ", 1)[1].strip(" '") for line in run.output.splitlines() if "MiB over" in line]
    report = {"no_change_rerun_s": round(elapsed, 1), "first_run_s": round(lab_deployed["image_run_s"], 1),
              "size_over_base": sizes}
    out = REPO / "results" / "lab-image.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(report)


def test_check_mode_and_diff_report_nothing(lab_deployed):
    run = run_playbook("playbooks/image.yml", "--check", "--diff")
    assert run.rc == 0 and run.changed() == 0, run.tail(4000)


def test_tag_carries_the_context_hash(lab_deployed):
    for host in lab_deployed["hosts"]:
        ref = image_ref(host)
        assert ref.startswith("effdet-lab/lab:cpu-") and len(ref.rsplit("-", 1)[1]) == 12, ref


def test_effdet_python_packages_are_in_the_image(lab_deployed):
    """The profile's pinned packages (what automl's EfficientDet imports, tflite-model-maker without its
    dependencies) are installed by the image build and importable by the lab user."""
    host = lab_deployed["hosts"][0]
    dockerfile = host_sh(host, "cat /var/lib/effdet-lab/image-context/cpu/Dockerfile").stdout
    assert "python3 -m pip install --no-cache-dir --no-deps tflite-model-maker==0.4.3" in dockerfile
    assert "pycocotools==2.0.8" in dockerfile and "tensorflow-model-optimization==0.7.5" in dockerfile
    probe = ("import importlib.util as u; "
             "print(all(u.find_spec(m) for m in ('pycocotools', 'lxml', 'yaml', 'tensorflow_model_optimization', "
             "'tensorflow_examples.lite.model_maker.third_party.efficientdet.model_inspect')))")
    assert in_container(host, f'python3 -c "{probe}"', user=USER).stdout.strip() == "True"
    history = host_sh(host, f"docker history --no-trunc --format '{{{{.CreatedBy}}}}' {image_ref(host)}").stdout
    assert "--no-deps tflite-model-maker==0.4.3" in history


def test_user_uid_gid(lab_deployed):
    for host in lab_deployed["hosts"]:
        out = in_container(host, "id lcg; getent passwd lcg").stdout
        assert "uid=1001(lcg) gid=1001(lcg)" in out, out
        assert ":/home/lcg:/bin/bash" in out


def test_sudo_passwordless_by_default(lab_deployed):
    for host in lab_deployed["hosts"]:
        assert in_container(host, "sudo -n id -u", user=USER).stdout.strip() == "0"
        assert in_container(host, "visudo -cf /etc/sudoers.d/effdet-lab").returncode == 0


def test_locale_present(lab_deployed):
    for host in lab_deployed["hosts"]:
        out = in_container(host, "locale -a; echo LANG=$LANG").stdout
        assert "zh_CN.utf8" in out and "LANG=zh_CN.UTF-8" in out, out


def test_no_host_keys_or_secrets_baked_in(lab_deployed):
    for host in lab_deployed["hosts"]:
        ref = image_ref(host)
        files = host_sh(host, f"docker run --rm --network none --entrypoint sh {ref} -c "
                              "'ls /etc/ssh/host_keys /etc/ssh/ssh_host_* 2>/dev/null; "
                              "ls /etc/apt/apt.conf.d /tmp /root'", check=False).stdout
        assert "ssh_host_" not in files and "build-ca" not in files, files
        history = host_sh(host, f"docker history --no-trunc {ref}").stdout
        assert "PRIVATE KEY" not in history and "BEGIN CERTIFICATE" not in history


def test_sshd_effective_config(lab_deployed):
    for host in lab_deployed["hosts"]:
        conf = in_container(host, "/usr/sbin/sshd -T").stdout.lower()
        for line in ("permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no",
                     "authenticationmethods publickey", "allowusers lcg"):
            assert line in conf, line
        assert in_container(host, "test -d /run/sshd").returncode == 0


def test_older_images_are_pruned_but_not_the_ones_in_use(lab_deployed):
    """After a rebuild, older images of the profile go, except the newest lab_image_keep_previous and any
    that a container uses; the current image and the profile's moving tag stay. Three stand-ins for
    earlier builds are made on one host (the last one used by a stopped container)."""
    host = lab_deployed["hosts"][0]
    current = image_ref(host)
    fakes = [f"effdet-lab/lab:cpu-00000000000{i}" for i in range(3)]
    for i, tag in enumerate(fakes):
        host_sh(host, f"printf 'FROM {current}\\nLABEL effdet-lab.test=stale-{i}\\n' | docker build -q -t {tag} -")
        time.sleep(1.1)  # distinct creation times, oldest first
    host_sh(host, f"docker create --name effdet-lab-test-old-user {fakes[2]} true")
    try:
        run = run_playbook("playbooks/image.yml", "--limit", host)
        assert run.rc == 0, run.tail(3000)
        left = set(host_sh(host, "docker images --format '{{.Repository}}:{{.Tag}}' effdet-lab/lab").stdout.split())
        # fakes[2] is in use; of the others the newest (fakes[1]) is kept, fakes[0] is removed.
        assert fakes[0] not in left and {fakes[1], fakes[2], current, "effdet-lab/lab:cpu"} <= left, left
        again = run_playbook("playbooks/image.yml", "--limit", host)
        assert again.rc == 0 and again.changed() == 0, again.tail(3000)
    finally:
        host_sh(host, "docker rm -f effdet-lab-test-old-user", check=False)
        host_sh(host, f"docker rmi -f {' '.join(fakes)}", check=False)
