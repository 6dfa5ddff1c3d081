# make run   : set up, then onfh batch on the sample cohort (results/), ending with the report's path
# make test  : set up, then the whole test suite
# make bench : speed and peak memory of analyze, segmentation, compare and batch; JSON in benchmarks/results/
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test bench lint clean sample-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,cluster,napari]"
	touch $(STAMP)

# The napari tests need a virtual X screen with OpenGL (QT_QPA_PLATFORM=offscreen has no GL for vispy).
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
	libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
	libxcb-cursor0 libdbus-1-3 dicom3tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); }

run: setup
	$(VENV)/bin/onfh batch sample_data/manifest.csv --out results

test: setup system-deps
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) -m pytest -q -rs

# Each script writes its JSON into benchmarks/results (analyze.json, segment.json, compare.json, batch.json,
# batch_x4.json).
# pyradiomics (the yardstick of run.py) lives in its own venv: 3.0.1 is the release that builds on
# Python 3.11 (3.1.0's sdist lacks its C headers) and it needs numpy < 2 at build and run time.
BENCHMARKS := run segment compare batch
RADIOMICS_VENV := benchmarks/.venv-radiomics
RADIOMICS_PY := $(RADIOMICS_VENV)/bin/python

$(RADIOMICS_VENV)/.installed:
	test -x $(RADIOMICS_PY) || $(PYTHON) -m venv $(RADIOMICS_VENV)
	$(RADIOMICS_PY) -m pip install -q --disable-pip-version-check "numpy<2" setuptools wheel versioneer
	$(RADIOMICS_PY) -m pip install -q --disable-pip-version-check --no-build-isolation pyradiomics==3.0.1
	touch $@

bench: setup $(RADIOMICS_VENV)/.installed
	for b in $(BENCHMARKS); do test ! -f benchmarks/$$b.py || PYRADIOMICS_PYTHON=$(RADIOMICS_PY) \
		$(PY) benchmarks/$$b.py --out benchmarks/results || exit 1; done
	$(PY) benchmarks/batch.py --copies 4 --out benchmarks/results  # a 48-task cohort: batch_x4.json

lint: setup
	$(VENV)/bin/ruff check pipeline tests benchmarks scripts

sample-data: setup
	$(VENV)/bin/onfh sample-data sample_data

clean:
	rm -rf results .pytest_cache
