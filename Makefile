# Clearway developer commands. `make demo` and `make test` do all their own set-up.
SHELL := /bin/bash
PY_BASE ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := deploy/tools/node_modules/.bin/buf

.PHONY: setup browser protos protos-check lint test unit demo bench infra-up infra-down infra-status clean-infra portal soak faults

$(STAMP): pyproject.toml
	@command -v $(PY_BASE) >/dev/null || PY_BASE=python3; \
	  test -x $(PY) || $${PY_BASE:-python3} -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BUF): deploy/tools/package.json
	cd deploy/tools && npm install --no-audit --no-fund --silent
	touch $(BUF)

setup: $(STAMP) $(BUF) browser

## browser: headless Chromium from Debian's packages, for the portal's browser tests
browser:
	@bash deploy/browser.sh >/dev/null

## protos: regenerate Python code + stubs from protos/ and lint them
protos: setup
	$(PY) -m clearway.protogen
	cd protos && ../$(BUF) lint

## lint: ruff, ruff format --check, mypy, buf lint, dependency audit (pip-audit, npm audit:
## fails on a known vulnerability; says "NOT performed" and passes when no advisory service
## answers, unless CLEARWAY_AUDIT_STRICT=1; docs/security.md)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && ../$(BUF) lint
	$(PY) -m clearway.dependency_audit

infra-up: setup
	$(BIN)/clearway infra up
infra-down: setup
	$(BIN)/clearway infra down
infra-status: setup
	$(BIN)/clearway infra status
## clean-infra: stop the local servers and delete their data
clean-infra: setup
	$(BIN)/clearway infra clean

## test: everything, against real Kafka, PostgreSQL and Redis
test: setup lint
	$(BIN)/clearway infra up
	$(BIN)/pytest

## unit: the fast tests that need no servers
unit: setup
	$(BIN)/pytest services -m "not integration"

## portal: the travellers' web portal on http://127.0.0.1:8080 (needs accounts running)
portal: setup
	$(BIN)/clearway serve portal

## demo: a simulated network day end to end
demo: setup
	$(BIN)/clearway infra up
	$(BIN)/clearway demo

## bench: benchmarks, printing figures and ratios
bench: setup
	$(PY) bench/fares_engine.py
	$(PY) bench/pipeline.py
	$(PY) bench/settlement_close.py
	$(PY) bench/ingest.py
	$(PY) bench/accounts_history.py

## soak: the fleet at a steady tap rate for 30 minutes; fails on memory growth, lag, error lines
soak: setup
	$(BIN)/clearway infra up
	$(BIN)/clearway soak --minutes 30

## faults: a day of 20,000 cards under 100 SIGKILLs and Kafka/PostgreSQL/Redis restarts,
## checked against a fault-free run of the same day (SEED=… repeats a run; default random)
faults: setup
	$(BIN)/clearway faults $(if $(SEED),--seed $(SEED))
