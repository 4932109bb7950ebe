# wasp: `make run` to see it work, `make test` to check it. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup tools js run test lint format crds cluster-up cluster-down cluster-status bench clean

setup: $(VENV)/.installed

# The real front-end pieces the tests drive (npm socket.io-client).
js: tests/js/node_modules/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Kubernetes control plane, etcd, kwok, helm, kubeconform: built once per machine
# into ~/.cache/wasp (override with WASP_CACHE), reused afterwards.
tools:
	hack/tools.sh >/dev/null

run: setup
	$(BIN)/wasp dev

test: lint tools js
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

crds: setup
	$(BIN)/python -m wasp.crd --write

cluster-up: setup tools
	$(BIN)/python -m tests.support.cluster up

cluster-down: setup
	$(BIN)/python -m tests.support.cluster down

cluster-status: setup
	$(BIN)/python -m tests.support.cluster status

# nginx and wrk (Debian packages) for the proxy benchmark; root installs them.
bench: setup tools js
	hack/tools.sh --bench >/dev/null
	command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; }
	$(BIN)/python -m bench $(BENCH)

clean: cluster-down
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
