# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned first and alone so that pip never resolves a CUDA build as a side effect of another package.
TORCH_SPEC ?= torch==2.13.0
REF := .ref/basicsr-1.4.2.tar.gz

.PHONY: venv dev demo test test-all lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e .
	touch $@

# The demo trains on scikit-image's bundled photos: the `demo` extra (scikit-image, not a core dependency).
$(VENV)/.demo: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[demo]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# BasicSR 1.4.2 is the de-facto reference for MATLAB imresize and Y-channel PSNR/SSIM. Parity tests read two of its
# source files straight from the sdist; it is never installed or imported as a package (it needs torchvision).
$(REF): | $(BIN)/python
	mkdir -p .ref && $(BIN)/pip download -q --no-deps --no-build-isolation --no-binary :all: -d .ref basicsr==1.4.2

venv: $(VENV)/.installed
dev: $(VENV)/.dev $(REF)

demo: $(VENV)/.demo
	$(BIN)/srkd demo

test: dev
	$(BIN)/python -m pytest

test-all: dev
	$(BIN)/python -m pytest -m ""

lint: dev
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .ref .pytest_cache
