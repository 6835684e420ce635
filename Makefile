# effnas: everything a fresh clone needs, installed into .venv by these targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint format bench clean

# torch first, pinned: 2.13.0 is the CPU wheel on this machine's disk; an unpinned torch
# (asked for by a dependency) would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (scikit-learn's digits): search -> grid -> scale -> train
## B0 and B1, one run directory per stage inside results/pipeline/<timestamp>/ (budgets for minutes).
demo: $(STAMP)
	$(VENV)/bin/effnas pipeline --target-flops 400M --phi 1..7 --train b0,b1 \
		search.trials=8 grid.max_candidates=6

# --durations: CI's log names the slowest tests (the default suite must stay under 20 minutes)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q --durations=25

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(STAMP)
	$(PY) benchmarks/bench_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
