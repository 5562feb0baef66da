"""What mpipipe prints on the terminal: one line per user error, and its warnings through `logging`.

An MpipipeError is a user's mistake: it prints as `mpipipe: error: ...` and exits
with the error's code, without a traceback unless --debug (or SP_DEBUG) asks.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from mpipipe.errors import MpipipeError


def wants_debug() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("SP_DEBUG", "").lower() in ("1", "true", "yes", "on")


def world_rank() -> Optional[int]:
    """This process's rank if an MPI or SLURM launcher started it, else None."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def install_error_hook() -> None:
    """An MpipipeError that escapes the user's script (say, while it builds its plan) prints as one line."""
    previous = sys.excepthook
    if getattr(previous, "_mpipipe", False):
        return

    def hook(etype, value, tb):  # type: ignore[no-untyped-def]
        if not isinstance(value, MpipipeError):
            previous(etype, value, tb)
            return
        if not wants_debug():
            if world_rank() in (None, 0):  # every rank builds the plan: one copy of the message is enough
                print(f"mpipipe: error: {value}", file=sys.stderr)
        else:
            previous(etype, value, tb)  # --debug: the traceback, and still the error's exit code
        sys.stderr.flush()
        sys.stdout.flush()
        logging.shutdown()
        os._exit(value.exit_code)

    hook._mpipipe = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def console_logging(level: str) -> None:
    """Warnings from mpipipe reach the terminal; the rank logs get everything at `level`."""
    logger = logging.getLogger("mpipipe")
    if not any(getattr(h, "_mpipipe_console", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setLevel(logging.WARNING)
        h.setFormatter(logging.Formatter("[mpipipe] %(levelname)s: %(message)s"))
        h._mpipipe_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(level)
