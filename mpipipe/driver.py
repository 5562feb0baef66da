"""The Driver: parses the command line (the user's flags and mpipipe's) and runs a plan.

Built-in flags are long options only, so every short option stays free for
the user's script.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from mpipipe.config import build_config
from mpipipe.errors import MpipipeError
from mpipipe.jobmanager import JobManager, JobResult, report_error
from mpipipe.logical.node import LogicalPlan
from mpipipe import session

BUILTIN_FLAGS = ("platform", "num_executors", "job_id", "data_root", "max_retries", "fail_fast", "fresh",
                 "dry_run", "log_level", "debug", "workers_per_executor", "progress_interval", "hosts")


class Driver:
    def __init__(self, description: Optional[str] = None, args: Optional[List[str]] = None) -> None:
        self.parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
        self._argv = args
        self._parsed: Optional[argparse.Namespace] = None
        g = self.parser.add_argument_group("mpipipe options (each also settable as SP_<NAME>, e.g. SP_PLATFORM)")
        g.add_argument("--platform", default=None,
                       help="local, mpi, or a dotted path pkg.mod:Class to your own Platform (default: auto-detect)")
        g.add_argument("--num-executors", type=int, default=None,
                       help="executor ranks (default: the MPI world's size - 1, else the number of cores)")
        g.add_argument("--job-id", default=None, help="job name; the same id resumes (default: script name + hash of its arguments)")
        g.add_argument("--data-root", default=None, help="folder that holds job directories (default: ./mpipipe-jobs)")
        g.add_argument("--max-retries", type=int, default=None, help="retries of a failed task before the job fails (default: 2)")
        g.add_argument("--fail-fast", action="store_true", default=None, help="stop the job at the first task that fails for good")
        g.add_argument("--fresh", action="store_true", default=None, help="ignore the journal: run every task again")
        g.add_argument("--dry-run", action="store_true", default=None, help="print the plan and the platform choice; run nothing")
        g.add_argument("--log-level", default=None, type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="level of the rank logs (default: INFO)")
        g.add_argument("--debug", action="store_true", default=None, help="show Python tracebacks for every error")
        g.add_argument("--workers-per-executor", type=int, default=None, help="worker processes per executor rank (default: 1)")
        g.add_argument("--progress-interval", type=float, default=None, help="seconds between progress lines, 0 for none (default: 2)")
        g.add_argument("--hosts", default=None, metavar="RANKS=HOST;...",
                       help="override what executor ranks offer, in the requirement language, e.g. "
                            "'1,2=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2' (default: each rank probes its host)")
        self._builtin_dests = set(BUILTIN_FLAGS)
        _install_error_hook()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add a flag of the user's script (same signature as argparse's)."""
        return self.parser.add_argument(*args, **kwargs)

    def _parse(self) -> argparse.Namespace:
        if self._parsed is None:
            self._parsed = self.parser.parse_args(self._argv)
        return self._parsed

    def get_arguments(self) -> Dict[str, Any]:
        """The user's own flags as a dict (mpipipe's flags are left out)."""
        ns = vars(self._parse())
        return {k: v for k, v in ns.items() if k not in self._builtin_dests}

    def builtin_arguments(self) -> Dict[str, Any]:
        ns = vars(self._parse())
        return {k: ns[k] for k in BUILTIN_FLAGS if ns.get(k) is not None}

    def run(self, plan: LogicalPlan) -> Optional[JobResult]:
        """Run the plan on the chosen platform; returns on rank 0 only (other ranks exit here)."""
        builtins = self.builtin_arguments()
        debug = bool(builtins.get("debug"))
        try:
            config = build_config(builtins, init=session.init_options())
            debug = config.debug
            _console_logging(config.log_level)
            return JobManager(config, self.get_arguments()).run(plan)
        except MpipipeError as e:
            report_error(e, debug)


def _wants_debug() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("SP_DEBUG", "").lower() in ("1", "true", "yes", "on")


def _world_rank() -> Optional[int]:
    """This process's rank if an MPI or SLURM launcher started it, else None."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def _install_error_hook() -> None:
    """An MpipipeError that escapes the user's script (say, while it builds its plan) prints as one line."""
    previous = sys.excepthook
    if getattr(previous, "_mpipipe", False):
        return

    def hook(etype, value, tb):  # type: ignore[no-untyped-def]
        if isinstance(value, MpipipeError) and not _wants_debug():
            if _world_rank() in (None, 0):  # every rank builds the plan: one copy of the message is enough
                print(f"mpipipe: error: {value}", file=sys.stderr)
            sys.stderr.flush()
            sys.stdout.flush()
            logging.shutdown()
            os._exit(value.exit_code)
        previous(etype, value, tb)

    hook._mpipipe = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _console_logging(level: str) -> None:
    """Warnings from mpipipe reach the terminal; the rank logs get everything at `level`."""
    logger = logging.getLogger("mpipipe")
    if not any(getattr(h, "_mpipipe_console", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setLevel(logging.WARNING)
        h.setFormatter(logging.Formatter("[mpipipe] %(levelname)s: %(message)s"))
        h._mpipipe_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(level)
