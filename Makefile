# Two commands on a fresh machine:
#   make demo   creates .venv and runs the main job on the demo spectrum
#   make test   creates .venv (with test extras) and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export MPLBACKEND := Agg

.PHONY: demo test env lint bench bench-chunks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"Python >= 3.12 needed, found {sys.version.split()[0]} (pyenv: a .python-version with 3.12 selects it)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

env: $(VENV)/.installed

demo: env
	$(PY) -m hps_bayes $(ARGS)

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check hps_bayes tests benchmarks
	$(VENV)/bin/mypy

bench: env
	$(PY) benchmarks/bench_scan.py

bench-chunks: env
	$(PY) benchmarks/bench_chunks.py $(ARGS)
