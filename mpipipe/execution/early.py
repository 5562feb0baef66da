"""Start-up work a rank of an MPI world does as soon as mpipipe is imported, so that it is over before the
script's first run() instead of adding to it.

- On an executor rank, its first worker process starts (execution/worker.py,
  start_early): it boots while the script imports the rest and builds its plan.
  It is forked from the rank (execution/forked.py) when that is safe: one
  thread, no MPI loaded yet, no module of the script's half-imported. It is
  the moment all ranks and their workers compete for the cores, and a fork
  spares the CPU of a new interpreter importing the worker's modules.
- MPI itself is not started here: a rank that has called MPI_Init and then
  leaves with an error (a plan that fails to build on every rank) makes
  MPICH's launcher kill the other ranks before rank 0's one-line message is
  out; ranks that never started MPI leave as plain processes.

Only under an MPI launcher (its rank variables are set) and with mpi4py
installed; `SP_EARLY_START=0` turns it off.
"""
from __future__ import annotations

import os
from typing import Optional

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")  # set by MPI launchers (and srun's PMI)

_BEGUN = [False]


def launcher_rank() -> Optional[int]:
    """This process's rank if an MPI launcher started it, else None."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def turned_off() -> bool:
    """SP_EARLY_START=0: nothing starts before the first run() (here, nor local executors at init())."""
    return os.environ.get("SP_EARLY_START", "").strip().lower() in ("0", "false", "no", "off")


def begin() -> None:
    """Do the start-up work of an MPI rank (once; nothing outside an MPI launcher)."""
    if _BEGUN[0] or turned_off():
        return
    _BEGUN[0] = True
    rank = launcher_rank()
    if rank is None:
        return
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return
    if rank > 0:
        from mpipipe.execution.worker import start_early

        start_early(1, fork=True)  # forked, not a new interpreter, where that is safe (execution/forked.py)
