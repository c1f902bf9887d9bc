# Loom: the two commands. `make up` starts the cluster, `make test` runs every test.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/cluster.yaml

.PHONY: up down status test test-fast install dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

up: install
	$(BIN)/loom up -c $(CONFIG)

down: install
	$(BIN)/loom down -c $(CONFIG)

status: install
	$(BIN)/loom status -c $(CONFIG)

test: dev
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: dev
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

bench: install
	$(BIN)/python -m bench.engines --quick
	$(BIN)/python -m bench.cluster

clean:
	rm -rf data data-* .pytest_cache
