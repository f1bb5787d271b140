# Two commands matter: `make run` (serve with demo data) and `make test` (set up and pass the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-live bench venv system clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# System packages the tests use (Chromium, PostgreSQL, Redis, wrk); idempotent, skipped when present.
system:
	bash scripts/install-system.sh
	bash scripts/services.sh

# CDS_HOST / CDS_PORT (default 127.0.0.1:8080) are honoured; links follow the port unless
# CDS_PUBLIC_BASE_URL is set
run: $(STAMP)
	CDS_AUTH=off CDS_DEMO=1 $(BIN)/cds serve

test: $(STAMP) system
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-live: $(STAMP)
	$(BIN)/python -m pytest -q -m live tests/integration $(PYTEST_ARGS)

# ARGS passes options to bench/run.py, e.g. make bench ARGS="--old ../bench-old" (bench/README.md)
bench: $(STAMP) system
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .fhir-server .state .pytest_cache
