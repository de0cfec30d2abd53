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

# The image (containers/README.md). The defaults are the local route: the debootstrap base that
# containers/podman-setup.sh makes, and torch from PyPI. For the V100 image: BASE_IMAGE=python@sha256:<digest>
# TORCH_INDEX=https://download.pytorch.org/whl/cu126 ENGINE=docker.
ENGINE ?= podman
IMAGE ?= localhost/haet:0.1.0
BASE_IMAGE ?= localhost/debian-min:bookworm
TORCH_INDEX ?= https://pypi.org/simple
# A CA bundle for pip inside the build (a TLS-inspecting proxy's); passed as a build secret, not kept in the image.
PIP_CERT_FILE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
comma := ,
GIT_DIRTY = $(shell test -z "$$(git status --porcelain 2>/dev/null)" && echo false || echo true)

.PHONY: reproduce report resume test lint bench gpu-check gpu-sharing fidelity image container clean sandbox

# Challenge mode runs every submission under bubblewrap (haet/challenge/sandbox.py): installed here as root where
# apt-get can, else one line saying what to install.
sandbox:
	@command -v bwrap >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap \
		    >/dev/null 2>&1; }; }; } || { echo "make: challenge mode's sandbox needs bwrap: install bubblewrap as \
root (apt-get install bubblewrap, dnf install bubblewrap)"; exit 1; }

$(STAMP): pyproject.toml envs/requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint envs/requirements.lock --editable '.[test]'
	touch $(STAMP)

reproduce: $(STAMP) sandbox
	$(RUN) snakemake --cores $(CORES)
	$(RUN) haet report audit results/$(STUDY)/tables/*.json
	$(RUN) snakemake --report results/$(STUDY)/report.html

# The HTML report of a finished study: rule graph, tables, figures, runs.csv, each with its caption.
# Another study: make report STUDY=paper SNAKEMAKE_ARGS="--configfile workflow/config/paper.yaml"
SNAKEMAKE_ARGS ?=
report: $(STAMP)
	$(RUN) snakemake --report results/$(STUDY)/report.html $(SNAKEMAKE_ARGS)

# After Snakemake was killed (kill -9, a lost terminal): drop its stale lock and go on where it stopped. Run it
# only when no other Snakemake is working in this folder.
resume: $(STAMP)
	$(RUN) snakemake --unlock
	$(MAKE) reproduce

lint: $(STAMP)
	$(BIN)/ruff check haet tests
	$(BIN)/ruff format --check haet tests
	$(RUN) snakemake --lint
	$(BIN)/hadolint containers/Dockerfile

test: lint sandbox
	$(RUN) python -m pytest

bench: $(STAMP)
	$(RUN) python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-columns=mean,stddev,ops
	$(RUN) haet bench

# The check a session runs on a lent GPU, in under 5 minutes: the tests of the CUDA paths, `haet bench` on the real
# CIFAR-10 subset (500 + 100 images a class: eager and captured step, bare loop, the data alone), N epoch-budget
# trainings sharing the GPU (total images/s, overhead per training), and the paper's submission (SENet-18 at width
# 0.67, the default recipe) for 240 epochs with each step, each printing its figures. The variables shrink it for a
# check on the CPU (tests/test_train.py runs it so). `make gpu-sharing` is the full sharing measurement (N = 1, 2,
# 4, 8 at 240 epochs, eager and captured: about 10 minutes on an H200).
CIFAR ?= ../shared/data/cifar10
GPU_CHECK_DIR ?= results/gpu-check
GPU_CHECK_SUBSET ?= {"data": {"dataset": "imagefolder", "root": "$(CIFAR)"}, \
	"subsets": {"train_per_class": 500, "val_per_class": 100}}
GPU_CHECK_TESTS ?= tests/test_train.py tests/test_autoaugment.py tests/test_step.py
GPU_CHECK_BENCH ?= --epochs 6 --workers 12
GPU_CHECK_EPOCHS ?= 240
GPU_CHECK_TRAIN ?=
GPU_CHECK_CAPTURE ?= eager cuda-graph
GPU_CHECK_SHARE ?= 1 4
GPU_CHECK_SHARE_EPOCHS ?= 20
GPU_CHECK_SHARE_ARGS ?=

gpu-check: $(STAMP)
	$(if $(GPU_CHECK_TESTS),$(RUN) python -m pytest -q -p no:cacheprovider $(GPU_CHECK_TESTS))
	mkdir -p $(GPU_CHECK_DIR)
	$(RUN) haet data subset --config '$(GPU_CHECK_SUBSET)' --run 0 --out $(GPU_CHECK_DIR)/subset.json
	$(RUN) haet bench --manifest $(GPU_CHECK_DIR)/subset.json $(GPU_CHECK_BENCH)
	$(RUN) haet bench --manifest $(GPU_CHECK_DIR)/subset.json --share $(GPU_CHECK_SHARE) \
		--epochs $(GPU_CHECK_SHARE_EPOCHS) --capture $(GPU_CHECK_CAPTURE) $(GPU_CHECK_SHARE_ARGS)
	for capture in $(GPU_CHECK_CAPTURE); do \
		$(RUN) haet train --quiet --manifest $(GPU_CHECK_DIR)/subset.json \
			--out $(GPU_CHECK_DIR)/paper-recipe-$$capture.json --model SENet18 --width 0.67 $(GPU_CHECK_TRAIN) \
			--config '{"budget": {"seconds": null, "max_epochs": $(GPU_CHECK_EPOCHS)}, "runtime": {"capture": "'$$capture'"}}' \
			|| exit 1; \
	done

gpu-sharing: $(STAMP)
	$(MAKE) gpu-check GPU_CHECK_TESTS= GPU_CHECK_BENCH="--epochs 2 --recipes paper" GPU_CHECK_EPOCHS=1 \
		GPU_CHECK_SHARE="1 2 4 8" GPU_CHECK_SHARE_EPOCHS=240

# The fidelity study (README "Does it reproduce?"): `haet plan` predicts its time, Snakemake runs it (stopped with
# Ctrl-C's signal after FIDELITY_LIMIT_S; a second `make fidelity` goes on from the runs that finished), the
# audit re-derives its table, and the report (its first page: the paper's numbers beside the harness's) is written. FIDELITY_CONFIGS adds layers: workflow/config/fidelity-table2.yaml (Table 2's NAS
# models), fidelity-clock.yaml (the 600-s clock), fidelity-mini-imagenet.yaml (Table 4, with the cache).
FIDELITY_CONFIGS ?= workflow/config/paper.yaml workflow/config/fidelity.yaml
FIDELITY_STUDY ?= fidelity
FIDELITY_LIMIT_S ?= 540
FIDELITY_IMAGES_PER_S ?= 19920
FIDELITY_SHARING_SPEEDUP ?= 2.5

fidelity: $(STAMP)
	$(RUN) haet plan $(addprefix --config ,$(FIDELITY_CONFIGS)) --target fidelity \
		--images-per-s $(FIDELITY_IMAGES_PER_S) --sharing-speedup $(FIDELITY_SHARING_SPEEDUP)
	$(RUN) timeout --signal INT --kill-after 60 $(FIDELITY_LIMIT_S) \
		snakemake --cores $(CORES) --configfile $(FIDELITY_CONFIGS) -- fidelity
	$(RUN) haet report audit results/$(FIDELITY_STUDY)/tables/fidelity.json
	$(RUN) snakemake --report results/$(FIDELITY_STUDY)/report.html --configfile $(FIDELITY_CONFIGS) -- fidelity
	cat results/$(FIDELITY_STUDY)/tables/fidelity.md

image:
	$(ENGINE) build --network host -f containers/Dockerfile -t $(IMAGE) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_INDEX=$(TORCH_INDEX) \
		--build-arg HAET_GIT_COMMIT=$$(git rev-parse HEAD) --build-arg HAET_GIT_DIRTY=$(GIT_DIRTY) \
		$(if $(PIP_CERT_FILE),--secret id=pip_cert$(comma)src=$(PIP_CERT_FILE)) .

# Apptainer's image for clusters, from the image in the local Docker engine (needs apptainer).
container: image
	apptainer build --force containers/haet.sif docker-daemon://$(IMAGE)

clean:
	rm -rf results/*/ .snakemake
