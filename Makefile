# Two commands, nothing by hand:
#   make reproduce   set up .venv, then run every notebook (small scale), figures -> figures/
#   make test        set up .venv, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Real data lies beside the project on the project's machines; elsewhere the
# default is data/ (see data/README.md for the fetch step).
SHARED_DATA := $(abspath ../shared/data)
AFFCONS_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/.),$(SHARED_DATA),$(abspath data))
export AFFCONS_DATA_DIR
# Keep pip quiet about the machine's optional local indexes; errors still show.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup reproduce test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel 2> >(grep -v "is ignored: it is neither" >&2)
	$(PY) -m pip install -q -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(PY) -m affcons_lib.reproduce --notebooks notebooks --runs runs --figures figures

test: setup
	$(PY) -m pytest -q

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
