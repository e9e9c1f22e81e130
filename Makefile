# The README's two commands: `make demo` and `make test`. Each creates .venv if
# missing, installs fedscan with pip (exact pins, CPU torch), then runs.
# `make test` = the formatter check, the linter, the type checker, then the tests (CI: .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedscan-installed
# mypy reads fedscan.* from a tree of links to the role folders (the editable install's import hook
# is invisible to it); its messages are mapped back to the real paths.
TYPECHECK_TREE := build/typecheck
# The tests on 2 worker processes, one test file each at a time (module fixtures are built once):
# 746 s against ~1 000 s on one process, 2 cores (the federations keep a core busy each, not two).
TEST_WORKERS ?= 2

.PHONY: demo test lint typecheck test-all bench-ingest bench-deployment bench-byzantine bench-soak bench-classical bench-segmentation bench-volumes bench-site-training bench install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "fedscan needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedscan simulate

test: lint typecheck
	$(BIN)/python -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/fedscan
	for file in fedscan-root/*.py; do ln -s "$(CURDIR)/$$file" $(TYPECHECK_TREE)/fedscan/; done
	for role in common client server cli; do ln -s "$(CURDIR)/$$role" $(TYPECHECK_TREE)/fedscan/$$role; done
	$(BIN)/mypy | sed -E 's#^$(TYPECHECK_TREE)/fedscan/(common|client|server|cli)/#\1/#; s#^$(TYPECHECK_TREE)/fedscan/#fedscan-root/#'

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-deployment: $(STAMP)
	$(BIN)/python bench/deployment.py

bench-byzantine: $(STAMP)
	$(BIN)/python bench/byzantine.py --npz ../shared/data/pneumoniamnist_trainval.npz

bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py

bench: $(STAMP)
	$(BIN)/python bench/all.py --npz ../shared/data/pneumoniamnist_trainval.npz

bench-classical: $(STAMP)
	$(BIN)/python bench/classical.py --npz ../shared/data/pneumoniamnist_trainval.npz

clean:
	rm -rf $(VENV) runs build *.egg-info .mypy_cache .ruff_cache

bench-segmentation: $(STAMP)
	$(BIN)/python bench/segmentation.py

bench-volumes: $(STAMP)
	$(BIN)/python bench/volumes.py

bench-site-training: $(STAMP)
	$(BIN)/python bench/site_training.py
