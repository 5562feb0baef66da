"""Start-up work a rank of an MPI world begins as soon as mpipipe is imported, so that it overlaps with the
script's own imports and set-up instead of adding to its first run().

- MPI itself: importing mpi4py and MPI_Init (a barrier with every other rank)
  run in a background thread; the first MPI call of the job (connect()) finds
  them done or waits for them. Nothing else talks MPI until then, and from
  then on one thread at a time does, as before.
- On an executor rank, its first worker process starts (execution/worker.py,
  start_early): it boots while the rank joins its world.

Only under an MPI launcher (its rank variables are set) and with mpi4py
installed; `SP_EARLY_START=0` turns it off (a script that sets mpi4py.rc
itself can also import mpi4py first). A process whose script ends before any
run() waits for the MPI start-up at exit, so that MPI is finalised cleanly.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")  # set by MPI launchers (and srun's PMI)

_THREAD: Optional[threading.Thread] = None


def launcher_rank() -> Optional[int]:
    """This process's rank if an MPI launcher started it, else None."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def begin() -> None:
    """Begin the start-up work of an MPI rank (once; nothing outside an MPI launcher)."""
    global _THREAD
    if _THREAD is not None or os.environ.get("SP_EARLY_START", "").strip() in ("0", "false", "no", "off"):
        return
    rank = launcher_rank()
    if rank is None:
        return
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return
    _THREAD = threading.Thread(target=_start_mpi, name="mpipipe-mpi-start", daemon=True)
    _THREAD.start()
    import atexit

    atexit.register(wait)
    if rank > 0:
        from mpipipe.execution.worker import start_early

        start_early(1)


def _start_mpi() -> None:
    try:
        import mpipipe.execution.mpi_transport  # noqa: F401  (mpi4py's import initialises MPI)
    except BaseException:  # noqa: BLE001  connect() imports it again and reports what is wrong
        pass


def wait(timeout: float = 60.0) -> None:
    """Until the MPI start-up begun here is over (at exit: MPI is then finalised by mpi4py as usual)."""
    thread = _THREAD
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
