"""Lint what the lab image is built from: every profile's rendered Dockerfile
(hadolint, which checks each RUN's shell with ShellCheck's rules too) and the
shell scripts of the build context (shellcheck), plus the repository's own
shell (.ci/run).

The context is rendered by Ansible from the lab_image role's own defaults,
vars, filters and templates, exactly as roles/lab_image/tasks/choose.yml
renders it on a host: one in-memory "host" per profile, so one
ansible-playbook run renders them all. An extra CA is set so that the
Dockerfile's optional steps render too.

    python tools/lint_image.py [--keep DIR]

Exit 0 when both linters are clean; 1 with their findings otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "lab_image"
BIN = Path(sys.executable).parent
# Shell files of the build context, by context name (the rest are configs).
SHELL_FILES = ("sshd-setup", "entrypoint")
REPO_SHELL = (REPO / ".ci" / "run",)

RENDER = """\
- name: Render the lab image's build context, one profile per in-memory host
  hosts: all
  connection: local
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  vars:
    role_path: "{role}"
    lab_image_profile_name: "{{{{ inventory_hostname }}}}"
    lab_image_base_ref: "{{{{ lab_image_profiles_all[inventory_hostname].base }}}}"
    lab_image_cuda_apt_fix: "{{{{ lab_image_profiles_all[inventory_hostname].cuda_apt_fix | default(false) | bool }}}}"
    lab_image_extra_ca: "-----BEGIN CERTIFICATE-----\\nlint\\n-----END CERTIFICATE-----"
  tasks:
    - name: Make the profile's folder
      ansible.builtin.file:
        path: "{out}/{{{{ inventory_hostname }}}}"
        state: directory
        mode: "0755"
    - name: Render every context file
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', lab_image_templates_dir ~ '/' ~ item.value,
                   template_vars={{'lab_image_context_file': item.key}}) }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}/{{{{ item.key }}}}"
        mode: "0644"
      loop: "{{{{ lab_image_context_templates | dict2items }}}}"
{extra_tasks}"""


def profiles() -> List[str]:
    """The profiles the role ships (roles/lab_image/defaults/main.yml)."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return sorted(defaults["lab_image_profiles"])


def render(out: Path, extra_tasks: str = "") -> Dict[str, Path]:
    """Render every profile's context into out/<profile>/; {profile: folder}.

    extra_tasks: more tasks (YAML, indented as the play's task list) that run
    with the role's variables for each profile; "{out}" in them is out.
    """
    names = profiles()
    play = out / "render.yml"
    play.write_text(RENDER.format(role=ROLE, out=out, extra_tasks=extra_tasks.replace("{out}", str(out))))
    # Ansible's own defaults (an empty config: a missing one would fall back to
    # the repository's ansible.cfg), and the role's filters by their FQCN from
    # this checkout as the collection effdet_lab.lab.
    (out / "empty.cfg").write_text("")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_CONFIG": str(out / "empty.cfg"), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
           "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", ",".join(names) + ",", str(play),
                        "-e", f"ansible_python_interpreter={sys.executable}"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    if r.returncode != 0:
        raise SystemExit(f"rendering the build context failed:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return {name: out / name for name in names}


def run(argv: List[str]) -> tuple[int, str]:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    return r.returncode, (r.stdout + r.stderr).strip()


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}:{os.environ.get('PATH', '')}")
    if not found:
        raise SystemExit(f"{name} not found: it comes from requirements.txt (make venv)")
    return found


def lint(folders: Dict[str, Path]) -> List[str]:
    """Findings, one block per file that has any."""
    hadolint, shellcheck = tool("hadolint"), tool("shellcheck")
    config = REPO / ".hadolint.yaml"
    findings = []
    for name, folder in folders.items():
        rc, out = run([hadolint, "--config", str(config), "--no-color", str(folder / "Dockerfile")])
        if rc != 0:
            findings.append(f"hadolint, profile {name}:\n{out}")
        for shell in SHELL_FILES:
            rc, out = run([shellcheck, "--shell=sh", "--severity=style", str(folder / shell)])
            if rc != 0:
                findings.append(f"shellcheck, profile {name}, {shell}:\n{out}")
    for path in REPO_SHELL:
        rc, out = run([shellcheck, "--severity=style", str(path)])
        if rc != 0:
            findings.append(f"shellcheck, {path.relative_to(REPO)}:\n{out}")
    return findings


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="render into this folder (kept) instead of a temporary one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lint-image-") as tmp:
        out = args.keep.resolve() if args.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        folders = render(out)
        findings = lint(folders)
    for block in findings:
        print(block, end="\n\n")
    print(f"lint_image: {len(folders)} profiles ({', '.join(folders)}), {len(findings)} file(s) with findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
