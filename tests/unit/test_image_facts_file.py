"""The image stage's record of what it built and the EfficientDet stages' reader of it name one file."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_lab_image_and_effdet_tasks_name_the_same_facts_file():
    written = yaml.safe_load((REPO / "roles/lab_image/vars/main.yml").read_text())["lab_image_facts_file"]
    read = yaml.safe_load((REPO / "roles/effdet_tasks/vars/main.yml").read_text())["effdet_tasks_image_facts_file"]
    assert written == read
    assert written.startswith("/etc/ansible/facts.d/") and written.endswith(".fact")
