# alignlab — everything a fresh machine needs, from two commands: `make demo` and `make test`.
# Targets are idempotent: a second run only checks stamps and returns in about a second.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.alignlab-installed
# torch first, pinned to the CPU wheel on disk: packages that depend on plain `torch`
# (sentence-transformers, accelerate) would otherwise pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all,dev

.PHONY: help setup system-deps demo demo-quick test test-slow lint bench results-docs clean

help:
	@echo "make demo       run the main job on the embedded defaults (ShapesWorld, tiny models)"
	@echo "make test       run the fast offline test suite"
	@echo "make test-slow  run the slow tests too"
	@echo "make lint       ruff check + format check, import layers (lint-imports), mypy on core/models/train"
	@echo "make bench      run the benchmarks in benchmarks/"
	@echo "make results-docs  re-render docs/results/*.md and docs/RESULTS.md from docs/results/*.json"

setup: $(STAMP) system-deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Debian packages, only when missing and only as root: WordNet 3.0 (alignlab.ambiguity) and a CJK font
# (Chinese captions on the demo's contact sheet), and headless Chromium for the report's browser test.
# Without them those features explain what is missing.
DEB_WANTED := /usr/share/wordnet/data.noun:wordnet-base /usr/share/wordnet/index.sense:wordnet-sense-index \
              /usr/share/fonts/truetype/wqy/wqy-microhei.ttc:fonts-wqy-microhei \
              /usr/bin/chromium:chromium
system-deps:
	@missing=""; for pair in $(DEB_WANTED); do f=$${pair%%:*}; pkg=$${pair##*:}; \
	  [ -f "$$f" ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: Debian packages missing and not root:$$missing (see README: System packages)"; \
	  fi; \
	fi

demo: setup
	$(VENV)/bin/alignlab demo --out demo-out

demo-quick: setup
	$(VENV)/bin/alignlab demo --out demo-out --quick

test: setup
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

# House rules CI enforces: ruff (lint, 110-column lines, format), the import layers of DESIGN.md
# (import-linter, contract in pyproject.toml)
# and mypy on core, models and train.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# docs/results/NAME.md and docs/RESULTS.md from the stored results (docs/results/NAME.json); to publish a
# new run: cp runs/experiment-NAME/results.json docs/results/NAME.json, then this.
results-docs: setup
	@for n in repro dcd pesf snare 3am commonit; do \
	  $(VENV)/bin/alignlab experiment $$n --render docs/results/$$n.json --to docs/results/$$n.md || exit 1; done
	$(VENV)/bin/alignlab experiment summary --to docs/RESULTS.md

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
