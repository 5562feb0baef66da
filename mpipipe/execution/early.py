"""Start-up work a rank of an MPI world does as soon as mpipipe is imported, so that it is over before the
script's first run() instead of adding to it.

- On an executor rank, its first worker process starts (execution/worker.py,
  start_early): it boots while this rank waits for MPI's start-up below.
- MPI itself: importing mpi4py initialises MPI, a barrier with every other
  rank, here (while the ranks are still at the same point of their start-up)
  rather than in connect(). It runs in this thread: mpi4py holds the
  interpreter's lock while MPI starts, so a background thread would gain
  nothing, and importing from two threads at once can deadlock on its module
  finder.

Only under an MPI launcher (its rank variables are set) and with mpi4py
installed; `SP_EARLY_START=0` turns it off (a script that sets mpi4py.rc before
importing mpi4py itself needs that, or imports mpi4py before mpipipe).
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


def begin() -> None:
    """Do the start-up work of an MPI rank (once; nothing outside an MPI launcher)."""
    if _BEGUN[0] or os.environ.get("SP_EARLY_START", "").strip().lower() in ("0", "false", "no", "off"):
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

        start_early(1)
    try:
        import mpipipe.execution.mpi_transport  # noqa: F401  (mpi4py's import initialises MPI)
    except Exception:  # noqa: BLE001  connect() imports it again and reports what is wrong
        pass
