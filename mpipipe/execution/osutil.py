"""Process hygiene shared by every process mpipipe starts."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Dict, Mapping, Optional

# variables a launcher gives its MPI ranks; a child that inherits them may try to join the world
_MPI_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "PRTE_", "MPIR_")


def child_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for a non-MPI child process of an MPI rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_PREFIXES)}
    env.pop("MPIPIPE_WORLD_SIZE", None)
    if extra:
        env.update(extra)
    return env


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to signal this process when its parent dies (no orphans after a kill -9)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hints = {"SIGSEGV": " (segmentation fault)", "SIGKILL": " (killed: out of memory or by a signal)",
                 "SIGABRT": " (aborted)", "SIGBUS": " (bus error)"}
        return f"killed by {name}{hints.get(name, '')}"
    return f"exited with code {returncode}"


class RankLogHandler(logging.FileHandler):
    """A rank's log file. A write that fails (a full disk) drops that record instead of printing a traceback
    on the job's terminal for every message; a job that cannot write its journal stops with one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
