# pipelex-server — `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: `make serve` needs the runtime dependencies only; test, lint, format and bench also need the [dev] extras.
# Either order works on a fresh clone; editing pyproject.toml or the lock re-installs on the next target.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install serve test test-fast lint format bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(RUNTIME_STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

install: $(DEV_STAMP) ## create .venv and install the project, its pinned dependencies and the dev tools

serve: $(RUNTIME_STAMP) ## serve on http://127.0.0.1:8081 with embedded defaults (SQLite in ./data, in-process runs)
	$(BIN)/pipelex-server serve

test: $(DEV_STAMP) ## run the whole test suite (PostgreSQL: the local server, else a throwaway one, else skipped)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(DEV_STAMP) ## the suite without the slow integration tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(DEV_STAMP) ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(DEV_STAMP) ## run the benchmarks (prints numbers; see docs/benchmarks.md)
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_temporal.py

lock: ## re-resolve requirements.lock from pyproject.toml in a scratch venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet -e '.[dev]'
	(echo "# Exact versions the project is tested with (pip constraints). Regenerate: make lock"; \
	 .lock-venv/bin/pip freeze --exclude-editable) > requirements.lock && rm -rf .lock-venv

clean: ## remove the virtualenv, caches and local run data
	rm -rf $(VENV) .pytest_cache .ruff_cache data
