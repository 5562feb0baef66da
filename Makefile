# Everything runs from the project's own virtualenv (.venv), which `make install` creates.
# `make demo` and `make test` install what they need first, so each works on a fresh machine.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
# the virtualenv's bin/ first: its mpiexec is the one that matches mpi4py's MPI library
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench slurm-up slurm-down clean help

help:
	@echo "make install     create .venv and install mpipipe with its mpi and test extras"
	@echo "make demo        run examples/quickstart.py on the embedded default (local) platform"
	@echo "make test        run the whole test suite (starts mpiexec worlds and a local SLURM cluster itself)"
	@echo "make slurm-up    start a single-node SLURM cluster (needs root); make slurm-down stops it"

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[mpi,test]'
	touch $@

demo: install
	$(BIN)/python examples/quickstart.py

test: install
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS) tests

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow and not slurm" $(PYTEST_ARGS) tests

slurm-up:
	scripts/slurm-up

slurm-down:
	scripts/slurm-down

clean:
	rm -rf $(VENV) *.egg-info mpipipe-jobs .pytest_cache
