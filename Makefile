# make run   : set up, then measure every sample scan with its labels (results/)
# make test  : set up, then the whole test suite
# make bench : speed and peak memory, JSON in benchmarks/results/
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint clean sample-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,cluster]"
	touch $(STAMP)

run: setup
	$(PY) scripts/run_sample.py sample_data/manifest.csv --out results

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run.py --out benchmarks/results

lint: setup
	$(VENV)/bin/ruff check pipeline tests benchmarks scripts

sample-data: setup
	$(VENV)/bin/onfh sample-data sample_data

clean:
	rm -rf results .pytest_cache
