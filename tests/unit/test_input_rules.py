"""The input rules of lab_image, lab_container and effdet_tasks (tasks/validate.yml), without Ansible.

The patterns are read from the validate.yml files themselves ({{ name }}
references resolved) and applied the way the roles apply them, with
re.fullmatch; the effdet_hparam_rules filter and lab_image_valid_user are
called directly. The integration test tests/integration/test_hostile_values.py
runs the same rules through site.yml.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pathload import load_module

REPO = Path(__file__).resolve().parents[2]
VALIDATE = {
    "lab_image": REPO / "roles/lab_image/tasks/validate.yml",
    "lab_container": REPO / "roles/lab_container/tasks/validate.yml",
    "effdet_tasks": REPO / "roles/effdet_tasks/tasks/validate.yml",
}
REF = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


inputs = load_module(REPO / "roles/effdet_tasks/filter_plugins/effdet_inputs.py", "effdet_inputs")
lab_profile = load_module(REPO / "roles/lab_image/filter_plugins/lab_profile.py", "lab_profile")


def block_vars(role: str) -> dict:
    return yaml.safe_load(VALIDATE[role].read_text())[0]["vars"]


def pattern(role: str, name: str) -> str:
    """A pattern variable of the role's validate.yml, its {{ name }} references resolved."""
    variables = block_vars(role)
    text = str(variables[name]).strip()
    while REF.search(text):
        text = REF.sub(lambda m: str(variables[m.group(1)]).strip(), text)
    return text


def full(role: str, name: str, value: str) -> bool:
    return re.fullmatch(pattern(role, name), value) is not None


def rule(role: str, var: str, index: int = 0) -> dict:
    return [r for r in block_vars(role)[f"{role}_input_rules"] if r["var"] == var][index]


def defaults(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


@pytest.mark.parametrize("name", ["curl", "python3-dev", "libtiff5-dev", "g++", "libc6:amd64", "vim=2:9.0.1378-2",
                                  "docker.io", "openssh-server=1:9.2p1-2+deb12u3"])
def test_debian_package_names_pass(name):
    assert full("lab_image", "lab_image_re_deb", name)


@pytest.mark.parametrize("name", ["curl; touch /pwned", "curl\nRUN touch /pwned", "$(id)", "--allow-unauthenticated",
                                  "Curl", "curl vim", "curl\n", "c", "vim=latest", "vim=1.0;id"])
def test_hostile_package_names_fail(name):
    assert not full("lab_image", "lab_image_re_deb", name)


def test_every_default_package_passes():
    d = defaults("roles/lab_image/defaults/main.yml")
    for profile in d["lab_image_profiles"].values():
        for pkg in profile["apt_packages"]:
            assert full("lab_image", "lab_image_re_deb", pkg), pkg
        for pkg in profile["pip_build_packages"] + profile["pip_packages"] + profile["pip_nodeps_packages"]:
            assert full("lab_image", "lab_image_re_pip", pkg), pkg
        assert full("lab_image", "lab_image_re_ref", profile["base"]), profile["base"]
        assert full("lab_image", "lab_image_re_profile", "tf2.15-gpu")
    for pkg in d["lab_image_dev_packages"]:
        assert full("lab_image", "lab_image_re_deb", pkg), pkg


@pytest.mark.parametrize("req", ["numpy<2", "absl-py==1.4.0", "PyYAML==6.0.2", "tflite-model-maker==0.4.3",
                                 "requests[socks,security]>=2.31,<3", "torch==2.1.0+cpu", "foo~=1.4", "bar!=1.5.*"])
def test_pip_requirements_pass(req):
    assert full("lab_image", "lab_image_re_pip", req)


@pytest.mark.parametrize("req", ["numpy; touch /pwned", "numpy ; python_version<'3'", "requests @ https://x/r.whl",
                                 "--index-url=http://evil", "-r /etc/shadow", "numpy==1.0 --no-binary :all:",
                                 "git+https://github.com/x/y", "numpy\n", "numpy == 1.0"])
def test_hostile_pip_requirements_fail(req):
    assert not full("lab_image", "lab_image_re_pip", req)


@pytest.mark.parametrize("ref", ["debian:bookworm", "tensorflow/tensorflow:2.1.0-gpu-py3", "effdetlab/tensorflow:2.15.1-cpu",
                                 "registry.lab:5000/tf/tf:2.15", "localhost:5000/x", "[::1]:5000/a/b:c",
                                 "nvidia/cuda@sha256:" + "a" * 64, "a.b-c__d/e:Tag_1.x"])
def test_image_references_pass(ref):
    assert full("lab_image", "lab_image_re_ref", ref)
    assert full("lab_container", "lab_container_re_ref", ref)


@pytest.mark.parametrize("ref", ["debian:bookworm; id", "debian:bookworm\nRUN id", "Debian:bookworm", "debian bookworm",
                                 "debian:", "-debian", "debian:bookworm\n", "debian@sha256:abc"])
def test_hostile_image_references_fail(ref):
    assert not full("lab_image", "lab_image_re_ref", ref)
    assert not full("lab_container", "lab_container_re_ref", ref)


def test_repository_takes_no_tag():
    assert full("lab_image", "lab_image_re_repo", "effdet-lab/lab")
    assert not full("lab_image", "lab_image_re_repo", "effdet-lab/lab:latest")


@pytest.mark.parametrize("locale,ok", [("zh_CN.UTF-8", True), ("en_US.UTF-8", True), ("ast_ES.UTF-8", True),
                                       ("zh_CN.UTF-8; id", False), ("zh_CN.UTF-8\n", False), ("zh_CN", False),
                                       ("C.UTF-8", False), ("zh_CN.GB2312", False)])
def test_locale(locale, ok):
    assert (re.fullmatch(rule("lab_image", "lab_image_locale")["pattern"], locale) is not None) is ok


@pytest.mark.parametrize("url,ok", [("http://mirrors.lab.example/ubuntu", True), ("https://m.lab:8443/pypi/simple", True),
                                    ("http://[fd00::1]:3142/debian", True), ("http://u:p@m.lab/debian", False),
                                    ("http://m.lab/debian#x", False), ("http://m.lab/debian&x", False),
                                    ("ftp://m.lab/", False), ("http://m.lab/a b", False)])
def test_mirror_urls(url, ok):
    assert full("lab_image", "lab_image_re_url", url) is ok


def test_proxy_may_carry_credentials_but_no_spaces():
    assert full("lab_image", "lab_image_re_proxy", "http://user:p%40ss@proxy.lab:3128")
    assert not full("lab_image", "lab_image_re_proxy", "http://proxy.lab:3128 evil")


@pytest.mark.parametrize("path,ok", [("/var/lib/effdet-lab/image-context", True), ("/srv/x", True), ("/", False),
                                     ("/srv", False), ("/var/lib/../../etc", False), ("/srv//x", False),
                                     ("/srv/./x", False), ("/srv/x/", False), ("srv/x", False)])
def test_build_dir_is_a_folder_of_its_own(path, ok):
    assert full("lab_image", "lab_image_re_own_dir", path) is ok


@pytest.mark.parametrize("user,ok", [("lcg", True), ("_svc", True), ("lcg\n", False), ("lcg\nroot", False),
                                     ("lcg ALL=(ALL) NOPASSWD: ALL", False)])
def test_user_names_are_matched_in_full(user, ok):
    assert lab_profile.lab_image_valid_user(user) is ok


@pytest.mark.parametrize("volume,ok", [
    ("/srv/effdet-lab/data:/data", True), ("/home/lcg/data:/data:ro", True), ("datasets:/data", True),
    ("/srv/x:/y:ro,Z", True), ("/:/host", True),                       # / is a path; the system rule refuses it
    ("/srv/effdet-lab/../../etc:/x", False), ("srv/data:/data", False), ("/srv/data", False),
    ("/srv/data:/data:rw,exec", False), ("/srv/data:data", False), ("/srv/data/:/data", False),
    ("/srv/data:/data; id", False), ("/srv/data:/data\n", False), ("/srv/./data:/data", False)])
def test_volume_format(volume, ok):
    assert full("lab_container", "lab_container_re_volume", volume) is ok


def system_pattern() -> str:
    v = block_vars("lab_container")
    trees = "|".join(re.escape(t) for t in v["lab_container_system_trees"])
    folders = "|".join(re.escape(f) for f in v["lab_container_system_folders"])
    return f"/|/({trees})(/.*)?|/({folders})"


@pytest.mark.parametrize("source,system", [
    ("/", True), ("/etc", True), ("/etc/ssh", True), ("/usr/local/bin", True), ("/boot", True), ("/proc", True),
    ("/sys/fs", True), ("/dev/nvidia0", True), ("/var/run/docker.sock", True), ("/run/docker.sock", True),
    ("/var/lib/docker", True), ("/var/lib/docker/volumes", True), ("/home", True), ("/var", True), ("/root/.ssh", True),
    ("/srv/effdet-lab/data", False), ("/home/lcg/data", False), ("/data/datasets", False), ("/tmp/x", False),
    ("/var/lib/effdet-lab", False), ("/etcetera", False)])
def test_system_paths(source, system):
    assert (re.fullmatch(system_pattern(), source) is not None) is system


@pytest.mark.parametrize("address,ok", [("0.0.0.0", True), ("127.0.0.1", True), ("10.0.10.21", True), ("[::1]", True),
                                        ("[::]", True), ("[fd00::10]", True), ("::1", False), ("256.0.0.1", False),
                                        ("localhost", False), ("0.0.0.0; id", False), ("1.2.3", False)])
def test_bind_address(address, ok):
    r = rule("lab_container", "lab_container_ssh_bind_address")
    assert (re.fullmatch(pattern("lab_container", "lab_container_re_ipv4") + r"|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\]",
                         address) is not None) is ok
    assert "lab_container_re_ipv4" in r["pattern"]


@pytest.mark.parametrize("name,ok", [("voc", True), ("train", True), ("run-2026.12_a", True), ("..", False),
                                     ("../../etc", False), ("a..b", False), (".hidden", False), ("a/b", False),
                                     ("default\n", False), ("x" * 65, False), ("", False)])
def test_folder_names(name, ok):
    assert full("effdet_tasks", "effdet_tasks_re_name", name) is ok


@pytest.mark.parametrize("size,ok", [("32", True), ("128", True), ("512", True), ("640x480", True), ("1536", True),
                                     ("16", False), ("0", False), ("640x", False), ("640X480", False),
                                     ("640x16", False), ("-128", False), ("128.0", False)])
def test_image_size(size, ok):
    assert full("effdet_tasks", "effdet_tasks_re_image_size", size) is ok


@pytest.mark.parametrize("ref,ok", [("9f1cf1613d567bbf7d7cb3101ed007623069f823", True), ("v1.2", True),
                                    ("release/2020-05", True), ("--upload-pack=id", False), ("a..b", False),
                                    ("-x", False)])
def test_git_refs(ref, ok):
    assert full("effdet_tasks", "effdet_tasks_re_git_ref", ref) is ok


@pytest.mark.parametrize("url,ok", [("https://github.com/google/automl.git", True), ("git@github.com:google/automl.git", True),
                                    ("ssh://git@git.lab:2222/mirrors/automl.git", True), ("ext::sh -c id", False),
                                    ("--upload-pack=id", False), ("file:///etc", False)])
def test_git_urls(url, ok):
    assert (re.fullmatch(rule("effdet_tasks", "effdet_tasks_git_url")["pattern"], url) is not None) is ok


def hparam_failures(hparams: dict, var: str = "effdet_tasks_hparams") -> list[tuple[str, object]]:
    rules = inputs.effdet_hparam_rules({var: hparams}, pattern("effdet_tasks", "effdet_tasks_re_hparam_name"),
                                       pattern("effdet_tasks", "effdet_tasks_re_hparam_value"),
                                       pattern("effdet_tasks", "effdet_tasks_re_image_size"))
    return [(r["rule"], r["value"]) for r in rules if not r["ok"]]


def test_hparams_of_the_lab_pass():
    assert hparam_failures({"image_size": 128, "moving_average_decay": 0}) == []
    assert hparam_failures({"num_classes": 3, "image_size": "640x480", "nms_configs.method": "gaussian",
                            "jitter_min": 0.1, "use_keras_model": False}) == []


@pytest.mark.parametrize("hparams,rule", [
    ({"num_classes": 0}, inputs.NUM_CLASSES_RULE), ({"num_classes": True}, inputs.NUM_CLASSES_RULE),
    ({"num_classes": "3x"}, inputs.NUM_CLASSES_RULE), ({"image_size": 16}, inputs.IMAGE_SIZE_RULE),
    ({"image_size": 128.0}, inputs.IMAGE_SIZE_RULE), ({"moving_average_decay": "0,num_classes=1"}, inputs.VALUE_RULE),
    ({"a": "x\ny"}, inputs.VALUE_RULE), ({"a": [1, 2]}, inputs.VALUE_RULE), ({"a": {"b": 1}}, inputs.VALUE_RULE),
    ({"bad key": 1}, inputs.NAME_RULE), ({"a=b": 1}, inputs.NAME_RULE)])
def test_each_bad_hparam_breaks_exactly_one_rule(hparams, rule):
    failures = hparam_failures(hparams)
    assert failures == [(rule, hparams)], failures


def test_hparams_that_are_not_a_mapping():
    assert hparam_failures("image_size=128") == [(inputs.MAPPING_RULE, "image_size=128")]


def test_every_rule_names_its_variable_and_one_rule():
    for role, path in VALIDATE.items():
        for item in block_vars(role)[f"{role}_input_rules"]:
            assert item["var"].startswith(role), (role, item["var"])
            assert item["rule"] and "value" in item, item
            kinds = [k for k in ("pattern", "min", "ok") if k in item]
            assert len(kinds) == 1, (path.name, item["var"], kinds)


def declared_rules() -> list[tuple[str, dict]]:
    """Every input rule the roles declare: their validate.yml files and docker_daemon's vars."""
    found = [(role, r) for role in VALIDATE for r in block_vars(role)[f"{role}_input_rules"]]
    found += [("docker_daemon", r) for r in defaults("roles/docker_daemon/vars/main.yml")["docker_daemon_input_rules"]]
    return found


@pytest.mark.parametrize("role, declared", declared_rules(), ids=lambda x: x if isinstance(x, str) else x["var"])
def test_every_declared_rule_has_one_kind(role, declared):
    """One kind per rule, as effdet_lab.lab.input_rule_failures (plugins/filter/input_rules.py) reads them."""
    assert {"var", "value", "rule"} <= set(declared), declared
    kinds = [kind for kind in ("ok", "min", "pattern") if kind in declared]
    assert len(kinds) == 1, (role, declared["var"], kinds)
    assert ("max" in declared) == ("min" in declared), declared["var"]
    assert "each" not in declared or "pattern" in declared, declared["var"]
    assert declared["var"].startswith(role + "_"), declared["var"]
