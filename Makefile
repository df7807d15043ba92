# Quick start:   make demo   (set up + run the built-in demo end to end)
#                make test   (set up + run the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned to the tested version; which build pip fetches (CPU or CUDA) depends
	# on its index: the README's Quick start and docs/gpus.md. A torch==2.13.0 already in the venv is kept.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/taxoclass run

# the cluster tests alone first (they time `ray up` and its steps), then the rest on two workers, which overlap the
# time tests spend waiting on Ray and subprocesses; both passes run, and either's failure fails the target
test: $(STAMP)
	@status=0; \
	WANDB_MODE=offline scripts/private_net.sh $(PY) -m pytest -q -m cluster tests || status=$$?; \
	WANDB_MODE=offline scripts/private_net.sh $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder \
	  -m "not cluster" --durations=15 tests || status=$$?; \
	exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check taxoclass tune scripts tests

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
