# Set-up and entry points. Every target creates .venv and installs the package when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench bench-check lint clean

$(INSTALLED): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/imgclf demo --config configs/digits.yaml

test: $(INSTALLED)
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python bench/run.py

bench-check: $(INSTALLED)
	$(BIN)/python bench/run.py --check

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf data runs bench/results .pytest_cache
