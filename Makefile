# Set-up and entry points. Every target creates .venv and installs the package when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test images bench bench-check lint config-reference clean

$(INSTALLED): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/imgclf demo --config configs/digits.yaml

# Two pytest-xdist workers, a test file each at a time: 11 min instead of 18 on 2 cores (much of
# a test's time is waiting on the subprocesses and servers it starts).
test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The training and `imgclf serve` images with podman (docs/deployment.md): the base is built from
# Debian bookworm with debootstrap once, then layers are cached. Root, with podman, buildah,
# debootstrap and runc installed; VARIANT=gpu for TensorFlow's CUDA wheels (tagged :gpu).
VARIANT ?= cpu
images:
	VARIANT=$(VARIANT) deploy/containers/build.sh

bench: $(INSTALLED)
	$(BIN)/python bench/run.py

bench-check: $(INSTALLED)
	$(BIN)/python bench/run.py --check

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# docs/configuration.md from the schema; tests/configs/test_reference.py fails when it is stale.
config-reference: $(INSTALLED)
	$(BIN)/python -m configs.reference --out docs/configuration.md

clean:
	rm -rf data runs bench/results .pytest_cache
