# The two commands of the README are `make run` and `make test`; everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AUTHSVC_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test protos lint typecheck bench clean

$(STAMP): pyproject.toml clients/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "authsvc needs Python 3.11 or newer: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ./clients -e '.[dev]'
	@touch $(STAMP)

## run: migrate, bootstrap a dev admin client on first run, serve gRPC (:50051) and HTTP (:8080).
run: $(STAMP)
	$(BIN)/authsvc serve --dev

## test: lint, types, then the whole suite, a worker per core (each test module on one worker, so
## its module-scoped servers start once). PostgreSQL tests run when AUTHSVC_TEST_POSTGRES_URL is
## set (.ci/run sets it).
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -n auto --dist loadfile

## protos: regenerate clients/authsvc_client/v1 from protos/ (a test fails if they drift apart).
protos: $(STAMP)
	$(BIN)/python protos/generate.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: every figure as a ratio against a baseline measured in the same run (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info clients/*.egg-info
