# effdet-lab: the two commands of the README, and what they need.
#   make demo   converge the lab-in-a-box (HOSTS simulated GPU hosts), twice
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
PYTEST_ARGS ?=

.PHONY: demo test lint setup venv clean distclean

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

venv: $(BIN)/.installed

$(EFFDET_BIN)/.installed: requirements-effdet.txt requirements-effdet-nodeps.txt
	$(PYTHON) -m venv .venv-effdet
	$(EFFDET_BIN)/pip install -q -r requirements-effdet.txt
	$(EFFDET_BIN)/pip install -q --no-deps -r requirements-effdet-nodeps.txt
	@touch $@

setup: venv
	$(BIN)/python -m labbox services

demo: setup
	$(BIN)/python -m labbox demo --hosts $(HOSTS)

lint: venv
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production

test: setup lint $(EFFDET_BIN)/.installed
	$(EFFDET_BIN)/python -m pytest $(PYTEST_ARGS) tests/effdet
	$(BIN)/python -m pytest $(PYTEST_ARGS) --ignore=tests/effdet tests

clean: venv
	$(BIN)/python -m labbox down

distclean: venv
	$(BIN)/python -m labbox down --images
	rm -rf $(VENV) .venv-effdet .labbox
