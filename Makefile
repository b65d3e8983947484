# Two commands do everything on a fresh machine (see README):
#   make study   the full sweep plus the comparison, on MLflow's default store (./mlflow.db)
#   make test    the whole test suite
# Each first builds the virtualenv in .venv from pyproject.toml (once; again when it changes).

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# `mlflow run` starts `python` from PATH: it must be the virtualenv's.
RUN := PATH="$(BIN):$$PATH"

.PHONY: install study test lint format clean

# Ray (backend=ray) comes with every install; the GPU's system metrics need pynvml:
# installed only where an NVIDIA driver is.
COMMA := ,
EXTRAS := dev,ray$(if $(shell command -v nvidia-smi 2>/dev/null),$(COMMA)gpu)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

study: $(STAMP)
	$(RUN) mlflow run . --env-manager local --experiment-name latent-size-study $(ARGS)

test: $(STAMP)
	$(RUN) python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
