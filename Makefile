# Quick start on a fresh machine: `make demo` (set up + run the pipeline on embedded data) and
# `make test` (set up + run the tests). Both create .venv in the repository on first use.
# On a machine without a GPU, `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs
# PyTorch's CPU-only build first (no nvidia-* / triton wheels; see README, Install profiles).
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
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
