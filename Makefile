# Every target builds .venv first (from setup.cfg) on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench bench-gpu lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	# Without its dependencies: transformers requires Hugging Face's `kernels` package, whose
	# name would shadow this repository's kernels/ (setup.cfg's [bench] lists the others).
	$(PY) -m pip install --quiet --no-deps 'transformers>=5,<6'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) launch.py demo

# The CI suite: everything but the long end-to-end runs marked `slow`, one worker per core
# (a test file stays on one worker, so its module fixtures are built once); the 15 slowest
# tests are listed at the end, to keep the suite inside its time budget.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not slow" -q -n auto --dist loadfile --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) launch.py bench

# On a machine with a GPU: the gpu-marked kernel tests and the GPU attention benchmark sized
# for a short lease (scripts/gpu_check.sh; results in runs/gpu_check). The full benchmark:
# $(PY) launch.py bench attention_gpu
bench-gpu: $(STAMP)
	PYTHON=$(PY) OUT=runs/gpu_check bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
