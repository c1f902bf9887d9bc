# Loom: the two commands. `make up` starts the cluster, `make test` runs every test.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/cluster.yaml

.PHONY: up down status test test-fast install dev bench clean

# A failed step removes what it half made (a venv without pip, a stale stamp), so that the
# next `make` starts over instead of failing on it.
.DELETE_ON_ERROR:

PY_OK := import sys; sys.exit(sys.version_info < (3, 11))

$(BIN)/python:
	@rm -rf $(VENV)
	( $(PYTHON) -c '$(PY_OK)' 2>/dev/null && $(PYTHON) -m venv $(VENV) ) \
	  || ( rm -rf $(VENV) && python3 -c '$(PY_OK)' 2>/dev/null && python3 -m venv $(VENV) ) \
	  || { rm -rf $(VENV); echo "make: need Python 3.11+ with venv (tried $(PYTHON) and python3; try PYTHON=python3.12)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

up: install
	$(BIN)/loom up -c $(CONFIG)

down: install
	$(BIN)/loom down -c $(CONFIG)

status: install
	$(BIN)/loom status -c $(CONFIG)

# The unit tests on two processes (pytest-xdist): they bind only ports picked free at run time
# and write only under their tmp_path, and most of their time is waiting, not CPU. Then the
# integration tests on two processes as well, a module's tests on one (their clusters are real
# processes on free ports under the test's own directory; most of a test is waiting for a
# node's detection or restart, not CPU). Then the fault and browser tests one at a time: their
# timings (sessions, pauses, a page's live updates) are what they check. All three always run.
UNIT_WORKERS ?= 2
INTEGRATION_WORKERS ?= 2

test: dev
	status=0; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(UNIT_WORKERS) tests/unit || status=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(INTEGRATION_WORKERS) --dist loadfile --durations=15 tests/integration || status=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests --ignore=tests/unit --ignore=tests/integration || status=$$?; \
	exit $$status

test-fast: dev
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(UNIT_WORKERS) tests/unit

bench: install
	$(BIN)/python -m bench.engines --quick
	$(BIN)/python -m bench.cluster

clean:
	rm -rf data data-* .pytest_cache
