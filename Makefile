# effdet-lab: the two commands of the README, and what they need.
#   make demo   converge the lab-in-a-box (HOSTS simulated GPU hosts), twice
#               (EXECUTOR=slurm: as a Slurm cluster, the stages queued as jobs)
#   make test   lint + the whole test suite
# Both do their own setup: the venv, a Docker engine (installed and started
# if none answers), the locally built images and the lab-in-a-box services.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# TensorFlow CPU and automl's code (from PyPI) for the converter's tests.
EFFDET_BIN := .venv-effdet/bin
HOSTS ?= 1
# exec, or slurm: the hosts also form a Slurm cluster and the stages are its jobs.
EXECUTOR ?= exec
PYTEST_ARGS ?=

.PHONY: demo test lint setup venv effdet-quick clean distclean

# A venv is made once, by whichever python3 comes first on PATH; later
# changes to the requirements only run pip in it. Re-running `venv` over a
# venv made by another python3 would point it at the wrong standard library.
# `make test` makes both venvs at once: the lock keeps their apt-get apart.
define make_venv
	@if ! $(1)/bin/python -c 'import json, math, ssl' >/dev/null 2>&1; then \
	  ( flock 9; $(PYTHON) -m venv --help >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=300 python3-venv; } ) 9>/tmp/.effdet-lab-venv.lock; \
	  echo "$(PYTHON) -m venv --clear $(1)"; $(PYTHON) -m venv --clear $(1); \
	fi
endef

$(BIN)/.installed: requirements.txt
	$(call make_venv,$(VENV))
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

venv: $(BIN)/.installed

$(EFFDET_BIN)/.installed: requirements-effdet.txt requirements-effdet-nodeps.txt
	$(call make_venv,.venv-effdet)
	$(EFFDET_BIN)/pip install -q -r requirements-effdet.txt
	$(EFFDET_BIN)/pip install -q --no-deps -r requirements-effdet-nodeps.txt
	@touch $@

setup: venv
	$(BIN)/python -m labbox services

demo: setup
	$(BIN)/python -m labbox demo --hosts $(HOSTS) --executor $(EXECUTOR)

# Every language we write: YAML and Ansible, Python (ruff.toml), and the
# lab image's rendered Dockerfiles and shell (hadolint, shellcheck; .hadolint.yaml);
# and the role READMEs and the example inventory's variable list are what
# tools/role_docs.py generates from the roles' argument specs.
lint: venv
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ruff check .
	$(BIN)/python tools/lint_image.py
	$(BIN)/python tools/role_docs.py --check

# Tests that need nothing of the shared lab (labhost-1..N, the molecule host,
# results/): the unit tests and the modules that work on scratch hosts of
# their own. tests/parallel.py runs them in a second pytest beside the rest.
# The lanes are balanced by their times in CI (stop 22: main 2528 s, beside 962 s
# without the stages-as-Slurm-jobs tests, about 950 s): test_slurm.py and the
# nosuid/sudo scratch host run beside; the molecule scenario stays in the main lane.
# Fresh-clone run of fba4425 (2 cores): services, lint and the quick tests/effdet
# about 202 s (one venv after the other then), the chain 388 s alone, then main
# 2228 s and beside 2200 s side by side (92.6 % of the 2 cores busy); 2819 s in all.
# Both venvs side by side (this tree) took that first phase to 126 s.
BESIDE_TESTS := tests/unit tests/integration/test_daemon_json.py tests/integration/test_docker_engine_adopt.py \
	tests/integration/test_recipe_image.py tests/integration/test_collection.py \
	tests/integration/test_slurm.py tests/integration/test_nosuid_sudo_scratch_host.py

# First, side by side: the lab-in-a-box services, lint, and the quick tests of
# tests/effdet (converter, parsers, reports, single automl runs: about 40 s).
# Then the effdet chain test alone: it asserts timings (a batch of 4 costs
# more than 1; the stage's measurement agrees with the same command by hand),
# which another lane on the same 2 cores makes fail (tried: 2 fresh-clone runs
# with it in the second lane, one failure each). Then the two lanes.
EFFDET_ALONE := tests/effdet/test_stages.py::test_chain_train_kill_resume_export_benchmark_infer

effdet-quick: $(EFFDET_BIN)/.installed
	$(EFFDET_BIN)/python -m pytest $(PYTEST_ARGS) -p no:cacheprovider tests/effdet --deselect $(EFFDET_ALONE)

# (Both venvs are made side by side too: pip is single-threaded.)
test:
	$(MAKE) --no-print-directory -j3 --output-sync=line setup lint effdet-quick
	$(EFFDET_BIN)/python -m pytest $(PYTEST_ARGS) -p no:cacheprovider $(EFFDET_ALONE)
	$(BIN)/python tests/parallel.py --beside "$(BESIDE_TESTS)" -- $(PYTEST_ARGS) --ignore=tests/effdet tests

clean: venv
	$(BIN)/python -m labbox down

distclean: venv
	$(BIN)/python -m labbox down --images
	rm -rf $(VENV) .venv-effdet .labbox
