# Quick start on a fresh machine: `make demo` (set up + run the pipeline on embedded data) and
# `make test` (set up + run the tests). Both create .venv in the repository on first use.
# On a machine without a GPU, `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs
# PyTorch's CPU-only build first (no nvidia-* / triton wheels; see README, Install profiles).
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup clean serve test-serve

# dfr-serve (NVIDIA PyTriton) lives in its own venv: PyTriton 0.7 needs numpy<2, the rest wants numpy 2.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
MODEL ?= runs/demo/bundle

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(SERVE_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

demo: $(STAMP)
	$(BIN)/dfr-demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

# A real Triton server on this machine: `make serve MODEL=path/to/model.onnx` (or a bundle folder).
serve: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/dfr-serve $(MODEL)

# The tests marked `serve` start dfr-serve from its venv and talk to it from the main one.
test-serve: $(STAMP) $(SERVE_STAMP)
	DFR_SERVE_PYTHON=$(abspath $(SERVE_VENV))/bin/python $(BIN)/python -m pytest -q -m serve

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

clean:
	rm -rf $(VENV) $(SERVE_VENV) runs .pytest_cache
