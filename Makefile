# Two commands on a fresh machine:
#   make demo   creates .venv and runs the main job on the demo spectrum
#   make test   creates .venv (with test extras) and runs the test suite
# Also: make lint (ruff, mypy: the dev extra), make wheel-check (the built wheel in a clean venv,
# run from outside the repository, as a user installs it)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export MPLBACKEND := Agg

.PHONY: demo test env lint wheel-check bench bench-chunks

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"Python >= 3.12 needed, found {sys.version.split()[0]} (pyenv: a .python-version with 3.12 selects it)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

env: $(VENV)/.installed

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

# the main job: the background chosen per mass on the demo spectrum (task=select), then the scan with it
DEMO_RUN ?= outputs/demo
demo: env
	$(PY) -m hps_bayes task=select run_dir=$(DEMO_RUN)/select $(ARGS)
	$(PY) -m hps_bayes run_dir=$(DEMO_RUN)/scan background.selection=$(DEMO_RUN)/select/selection_demo.json overwrite=true $(ARGS)

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check hps_bayes tests benchmarks
	$(VENV)/bin/mypy

wheel-check:
	bash .ci/wheel-check $(PYTHON)

bench: env
	$(PY) benchmarks/bench_scan.py

bench-chunks: env
	$(PY) benchmarks/bench_chunks.py $(ARGS)
