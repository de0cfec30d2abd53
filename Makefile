# Two commands set everything up on a fresh machine:
#   make reproduce   create .venv, install the pinned stack, run the pipeline on the embedded default data
#   make test        the same set-up, then lint and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records that .venv holds exactly what pyproject.toml and the lock ask for; editing either reinstalls.
STAMP := $(VENV)/.haet-installed
CORES ?= all

.PHONY: reproduce test lint bench clean

$(STAMP): pyproject.toml envs/requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint envs/requirements.lock --editable '.[test]'
	touch $(STAMP)

reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)

# `snakemake --lint` joins this target once every rule names its container (issue 6): until then it fails on
# "Specify a conda environment or container for each rule" alone.
lint: $(STAMP)
	$(BIN)/ruff check haet tests
	$(BIN)/ruff format --check haet tests

test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-columns=mean,stddev,ops
	$(BIN)/haet bench

clean:
	rm -rf results/*/ .snakemake
