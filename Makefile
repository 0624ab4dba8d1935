# Quick start on a fresh machine: `make demo` (set up + run the pipeline on embedded data) and
# `make test` (set up + run the tests). Both create .venv in the repository on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/dfr-demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
