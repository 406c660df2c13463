# pipelex-server — `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install serve test test-fast lint format bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project and its pinned dependencies

serve: $(STAMP) ## serve on http://127.0.0.1:8081 with embedded defaults (SQLite in ./data, in-process runs)
	$(BIN)/pipelex-server serve

test: $(STAMP) ## run the whole test suite (needs PostgreSQL at 127.0.0.1:5432)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the suite without the slow integration tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP) ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP) ## run the benchmarks (prints numbers; see docs/benchmarks.md)
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_temporal.py

lock: ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet -e '.[dev]'
	(echo "# Exact versions the project is tested with (pip constraints). Regenerate: make lock"; \
	 .lock-venv/bin/pip freeze --exclude-editable) > requirements.lock && rm -rf .lock-venv

clean: ## remove the virtualenv, caches and local run data
	rm -rf $(VENV) .pytest_cache .ruff_cache data
