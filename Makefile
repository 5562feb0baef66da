# Everything runs from the project's own virtualenv (.venv), which `make install` creates.
# `make demo` and `make test` install what they need first, so each works on a fresh machine.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
# the virtualenv's bin/ first: its mpiexec is the one that matches mpi4py's MPI library
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=

# known-good versions (scripts/lock writes them; make lock refreshes them on purpose)
CONSTRAINTS := constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS)
LATEST_VENV := .venv-latest

.PHONY: install demo test test-fast test-latest check lock bench slurm-up slurm-down clean help

help:
	@echo "make install     create .venv and install mpipipe with its mpi and test extras"
	@echo "make demo        run examples/quickstart.py on the embedded default (local) platform"
	@echo "make test        run the whole test suite (starts mpiexec worlds and a local SLURM cluster itself)"
	@echo "make test-latest run the suite against the newest releases of every dependency (in $(LATEST_VENV))"
	@echo "make check       type-check mpipipe (mypy) and lint mpipipe, tests and scripts (ruff); CI runs it"
	@echo "make lock        refresh constraints.txt (the known-good versions make install uses) from the newest releases"
	@echo "make slurm-up    start a single-node SLURM cluster (needs root); make slurm-down stops it"

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[mpi,test]'
	$(BIN)/python -m compileall -q mpipipe  # an editable install is not byte-compiled: every rank would compile it
	touch $@

demo: install
	$(BIN)/python examples/quickstart.py

test: install
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS) tests

# the newest release of every dependency, no constraints: drift shows here before users meet it. The newest mypy
# and ruff may find what the pinned ones do not: their verdict is make check's (pinned), so their tests are left out.
LATEST_DESELECT := --deselect tests/test_packaging.py::test_mypy_finds_nothing_in_the_files_kept_clean \
	--deselect tests/test_packaging.py::test_ruff_finds_nothing_in_the_files_kept_clean

test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager \
		-e '.[mpi,test]'
	$(LATEST_VENV)/bin/python -m pip list --disable-pip-version-check --format=freeze | grep -iE '^(cloudpickle|duckdb|pyarrow|pandas|numpy|mpi4py|mpich|click)='
	PATH=$(abspath $(LATEST_VENV))/bin:$$PATH $(LATEST_VENV)/bin/python -m pytest -q -ra $(LATEST_DESELECT) \
		$(PYTEST_ARGS) tests

lock:
	PYTHON=$(PYTHON) scripts/lock

# mypy and ruff at their pinned versions, with the settings in pyproject.toml; both run, and either failing fails
check: install
	@status=0; \
	echo "mypy mpipipe"; $(BIN)/python -m mypy mpipipe || status=1; \
	echo "ruff check mpipipe tests scripts"; $(BIN)/ruff check mpipipe tests scripts || status=1; \
	exit $$status

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow and not slurm" $(PYTEST_ARGS) tests

# smallpond pins pyarrow 16.1 and polars 0.20, and 0.15 needs a DuckDB below 1.5 (it imports duckdb.typing):
# it gets a virtualenv of its own inside .venv, so the project's packages stay as they are. If it cannot be
# installed, the benchmarks say so (from install.log) and run without it.
SMALLPOND_VENV := $(abspath $(VENV))/bench-smallpond

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench/run_all.py

$(VENV)/.installed-bench: $(VENV)/.installed setup.cfg
	$(PIP_INSTALL) -e '.[mpi,test,bench]'
	@test -x $(SMALLPOND_VENV)/bin/python || $(BIN)/python -m venv $(SMALLPOND_VENV) || true
	@$(SMALLPOND_VENV)/bin/python -m pip install --disable-pip-version-check 'smallpond==0.15.0' 'duckdb>=1.2,<1.5' \
		> $(SMALLPOND_VENV)/install.log 2>&1 \
		|| echo "smallpond could not be installed (see $(SMALLPOND_VENV)/install.log); the benchmarks run without it"
	touch $@

slurm-up:
	scripts/slurm-up

slurm-down:
	scripts/slurm-down

clean:
	rm -rf $(VENV) $(LATEST_VENV) *.egg-info mpipipe-jobs .pytest_cache
