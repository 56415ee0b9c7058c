# The commands the README names. Everything installs into a project venv (.venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_SCALE ?= 0.02
DEMO_SAMPLES ?= 12

.PHONY: install install-dev demo test dev bench lint format clean

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

## make test: install the dev extra and run the whole suite
test: install-dev
	$(BIN)/pytest

## make dev: the Dagster UI (webserver + daemon) on http://127.0.0.1:3000
dev: install
	$(BIN)/sc-assets init-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

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
