# Two set-up commands for a fresh machine: `make demo` and `make test`. `make docs` builds the documentation
# (executing the tutorials), `make tutorials` refreshes the outputs stored in tutorials/*.ipynb.
# Each creates (or reuses) a virtual environment inside the repository and installs what it needs.
# Other Pythons: `make test PYTHON=python3.12` (own environment, .venv-python3.12).
PYTHON ?= python3.11
VENV ?= .venv-$(notdir $(PYTHON))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The shared real data the tests and tutorials read (never copied into the repository).
export HCITOOLS_DATA ?= $(abspath ../shared/data)
export MPLBACKEND ?= Agg

.PHONY: demo test docs tutorials lint env clean

$(STAMP): pyproject.toml Makefile
	@PY=$$(.ci/find-python $(PYTHON)) && echo "Creating $(VENV) with $$PY" && "$$PY" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch 2.13.0: a CPU wheel lies on this disk for Python 3.11; elsewhere pip fetches it from PyPI.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,doc]"
	@touch $@

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hcitools demo --out demo_output

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks

docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

# Execute every tutorial in place (nbclient's `jupyter execute`), one torch thread, figures inline (not the Agg
# backend exported above); stops at the first failing notebook and prints each one's wall time.
TUTORIALS ?= $(wildcard tutorials/*.ipynb)
tutorials: $(STAMP)
	@for nb in $(TUTORIALS); do \
	  start=$$(date +%s); \
	  OMP_NUM_THREADS=1 MPLBACKEND=module://matplotlib_inline.backend_inline \
	    $(BIN)/jupyter execute --inplace --timeout=300 "$$nb" || exit 1; \
	  echo "$$nb: $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf .venv-* docs/_build demo_output
