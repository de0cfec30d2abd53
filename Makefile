# Two commands set everything up on a fresh machine:
#   make reproduce   create .venv, install the pinned stack, run the pipeline on the embedded default data
#   make test        the same set-up, then lint and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records that .venv holds exactly what pyproject.toml and the lock ask for; editing either reinstalls.
STAMP := $(VENV)/.haet-installed
CORES ?= all
STUDY ?= default
# Rules call `haet`: the venv's bin goes first on PATH for every command below.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: reproduce test lint bench container clean

$(STAMP): pyproject.toml envs/requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint envs/requirements.lock --editable '.[test]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(RUN) snakemake --cores $(CORES)
	$(RUN) haet report audit results/$(STUDY)/tables/*.json

lint: $(STAMP)
	$(BIN)/ruff check haet tests
	$(BIN)/ruff format --check haet tests
	$(RUN) snakemake --lint
	$(BIN)/hadolint containers/Dockerfile

test: lint
	$(RUN) python -m pytest

bench: $(STAMP)
	$(RUN) python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-columns=mean,stddev,ops
	$(RUN) haet bench

# Needs a Docker engine and Apptainer (not on CI): the image, then the .sif the Snakefile's container: names.
container:
	docker build -f containers/Dockerfile -t haet:0.1.0 .
	apptainer build --force containers/haet.sif docker-daemon://haet:0.1.0

clean:
	rm -rf results/*/ .snakemake
