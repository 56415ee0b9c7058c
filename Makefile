# The commands the README names. Everything installs into a project venv (.venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_SCALE ?= 0.02
# make dev listens on loopback only unless told otherwise (make dev HOST=0.0.0.0)
HOST ?= 127.0.0.1
PORT ?= 3000
DEMO_SAMPLES ?= 12

.PHONY: install install-dev demo test dev bench lint format clean cluster-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## make demo: install, write demo data into data/ if it holds no samples, ingest it
demo: install
	@if ! ls data/*_count_matrix.csv.gz >/dev/null 2>&1; then \
		$(BIN)/sc-assets demo-data data --scale $(DEMO_SCALE) --samples $(DEMO_SAMPLES); \
	fi
	$(BIN)/sc-assets ingest --data-dir data --storage-dir storage

## The browser of the UI test (sc_assets_tests/integration/test_ui.py): Debian's chromium,
## installed only when /usr/bin/chromium is missing and apt-get can run (as root); the package
## lists are refreshed only if a first attempt fails. Without it the test skips, saying why.
.PHONY: chromium
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the browser test"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq chromium >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
			|| echo "warning: could not install chromium: the browser test will skip"; \
		else \
			echo "no /usr/bin/chromium and no root apt-get to install it: the browser test will skip"; \
		fi; \
	fi

## make test: install the dev extra (and Chromium) and run the whole suite
test: install-dev chromium
	$(BIN)/pytest -n 2 --durations=15

## make cluster-demo: the demo series ingested by two dagster-celery workers on two simulated
## hosts (network namespaces, private tmpfs) into object storage (moto's S3 API), with the
## PostgreSQL and RabbitMQ of 127.0.0.1 and deploy/'s files; needs root. Prints which host ran
## each sample, then stops and removes everything.
cluster-demo: install-dev
	$(BIN)/python -m sc_assets_tests.integration.cluster_demo --samples $(DEMO_SAMPLES) \
		--scale $(DEMO_SCALE)

## make dev: the Dagster UI (webserver + daemon) on http://127.0.0.1:3000 (HOST=, PORT= to change)
dev: install
	$(BIN)/sc-assets init-home
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

## make bench: full-size benchmarks (minutes; results go into BENCHMARKS.md)
bench: install-dev
	$(BIN)/python -m benchmarks

lint: install-dev
	$(BIN)/ruff check sc_assets sc_assets_tests benchmarks
	$(BIN)/ruff format --check sc_assets sc_assets_tests benchmarks

format: install-dev
	$(BIN)/ruff check --fix sc_assets sc_assets_tests benchmarks
	$(BIN)/ruff format sc_assets sc_assets_tests benchmarks

clean:
	rm -rf $(VENV) storage .dagster_home test-output
