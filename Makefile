# gpo-vae: `make demo` runs the workflow on the synthetic dataset, `make test` runs the checks.
# Both create the virtual environment `.venv` on first use (Python >= 3.11).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev
# GPU=1 when an NVIDIA driver answers; override with `make GPU=0 ...` or `make GPU=1 ...`.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
# Without a GPU we ask for the CPU build by its local version label ("+cpu"), so pip can never
# fall back to the multi-GB CUDA build: it finds the CPU wheel or fails. Point TORCH_INDEX_URL
# at PyTorch's CPU wheel index (pytorch.org lists it) when your pip has no CPU wheel in reach.
TORCH_SPEC := torch==$(TORCH_VERSION)$(if $(filter 1,$(GPU)),,+cpu)
TORCH_INDEX_URL ?=
PIP_TORCH_ARGS := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL),)

comma := ,

.PHONY: install demo test test-all lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gpo-vae needs Python >= 3.11; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_TORCH_ARGS) "$(TORCH_SPEC)" || { \
	  echo "Could not install $(TORCH_SPEC). Without a GPU, give pip PyTorch's CPU wheel index:"; \
	  echo "  make TORCH_INDEX_URL=<PyTorch CPU wheel index URL> $(MAKECMDGOALS)"; exit 1; }
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@# The CausalBench evaluator cross-checks our GRN statistics in the tests. Its declared
	@# dependencies would pull a CUDA torch and downgrade pandas/anndata, and the evaluator
	@# needs only numpy + scipy, hence --no-deps.
	$(if $(filter dev,$(subst $(comma), ,$(EXTRAS))),$(BIN)/python -m pip install --quiet --no-deps causalbench==1.1.2)
	@touch $@

demo: install
	$(BIN)/redun run workflow.py main --dataset synthetic

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .redun/redun.db results .pytest_cache .ruff_cache
