# gpo-vae: `make demo` runs the workflow on the synthetic dataset, `make test` runs the checks.
# Both create the virtual environment `.venv` on first use (Python >= 3.11).

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= dev
# GPU=1 when an NVIDIA driver answers; override with `make GPU=0 ...` or `make GPU=1 ...`.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
# Without a GPU we first ask pip for the CPU build (`torch==<version>+cpu`, ~200 MB): it comes from
# TORCH_INDEX_URL when given (PyTorch's CPU wheel index, listed on PyTorch's website) or from any
# index or wheel folder your pip is configured with. When no CPU build is in reach we install
# PyPI's torch==<version> instead: the build that bundles the CUDA libraries (about 2.7 GB to
# download, 4.7 GB installed), which runs on CPU as well; the install says so.
TORCH_INDEX_URL ?=
# DRY_RUN=1: resolve every install step without installing (what `make install-check` runs).
DRY_RUN ?=
PIP := $(BIN)/python -m pip
PIP_DRY := $(if $(DRY_RUN),--dry-run --ignore-installed --no-deps,)
CHECK_VENV ?= /tmp/gpo-vae-install-check
# Test processes (pytest-xdist); a module's tests stay in one process (they share fixtures).
TEST_WORKERS ?= 2

comma := ,

.PHONY: install install-check demo test test-all docs lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gpo-vae needs Python >= 3.11; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	@if [ "$(GPU)" = 1 ]; then \
	  echo "GPU found: installing torch==$(TORCH_VERSION) (with CUDA)"; \
	  $(PIP) install --quiet $(PIP_DRY) "torch==$(TORCH_VERSION)"; \
	elif [ -n "$(TORCH_INDEX_URL)" ]; then \
	  $(PIP) install --quiet $(PIP_DRY) --extra-index-url "$(TORCH_INDEX_URL)" "torch==$(TORCH_VERSION)+cpu"; \
	elif $(PIP) install --quiet $(PIP_DRY) "torch==$(TORCH_VERSION)+cpu" 2>/dev/null; then \
	  echo "installed the CPU build torch==$(TORCH_VERSION)+cpu"; \
	else \
	  echo "No CPU-only build of torch $(TORCH_VERSION) is visible to pip: installing PyPI's torch==$(TORCH_VERSION),"; \
	  echo "which bundles the CUDA libraries (about 2.7 GB to download, 4.7 GB installed) and runs on CPU too."; \
	  echo "For the CPU build (~200 MB): make TORCH_INDEX_URL=<PyTorch's CPU wheel index> $(MAKECMDGOALS)"; \
	  $(PIP) install --quiet $(PIP_DRY) "torch==$(TORCH_VERSION)"; \
	fi
ifeq ($(DRY_RUN),)
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	@# The CausalBench evaluator cross-checks our GRN statistics in the tests. Its declared
	@# dependencies would pull a CUDA torch and downgrade pandas/anndata, and the evaluator
	@# needs only numpy + scipy, hence --no-deps.
	$(if $(filter dev,$(subst $(comma), ,$(EXTRAS))),$(PIP) install --quiet --no-deps causalbench==1.1.2)
	@touch $@
endif

# The install a user gets whose pip sees PyPI alone (no wheel folder, no pip config): the torch
# step of `make install` resolved in a fresh venv, then every other requirement resolved against
# the project's venv (whose torch already satisfies the range). CI runs it on every submission.
install-check: install
	rm -rf $(CHECK_VENV)
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(MAKE) --no-print-directory VENV=$(CHECK_VENV) DRY_RUN=1 GPU=0 $(CHECK_VENV)/.installed
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(PIP) install --quiet --dry-run -e ".[$(EXTRAS)]"
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(PIP) install --quiet --dry-run --no-deps causalbench==1.1.2
	rm -rf $(CHECK_VENV)
	@echo "install-check: every install step resolves with PyPI alone"

demo: install
	$(BIN)/redun run workflow.py main --dataset synthetic

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "slow or not slow"

docs: install
	$(BIN)/mkdocs build --strict --quiet
	@echo "docs: site/index.html"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .redun/redun.db results .pytest_cache .ruff_cache
