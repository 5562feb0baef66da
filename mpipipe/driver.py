"""The Driver: parses the command line (the user's flags and mpipipe's) and runs a plan.

Built-in flags are long options only, so every short option stays free for
the user's script. The SLURM flags (--partition, --time, ...) are added when
the command line is parsed, each as --<name> and --slurm-<name>: a script that
defines its own --time keeps it, and --slurm-time still reaches SLURM.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Set

from mpipipe.config import build_config
from mpipipe.errors import MpipipeError
from mpipipe.jobmanager import JobManager, JobResult, default_job_id, report_error
from mpipipe.logical.node import LogicalPlan
from mpipipe import session

BUILTIN_FLAGS = ("platform", "num_executors", "job_id", "data_root", "max_retries", "fail_fast", "fresh",
                 "dry_run", "log_level", "debug", "workers_per_executor", "progress_interval", "hosts",
                 "inject_faults", "speculate", "allow_changes", "cache_dir")

# (name, metavar, type, help): --<name> unless the script took it, and always --slurm-<name>
SLURM_FLAGS = (
    ("partition", "NAME", str, "partition (queue) to submit to"),
    ("account", "NAME", str, "account to charge"),
    ("qos", "NAME", str, "quality of service"),
    ("time", "TIME", str, "time limit: minutes, HH:MM:SS or D-HH:MM:SS"),
    ("nodes", "N", int, "nodes"),
    ("ntasks-per-node", "N", int, "ranks per node (the job has nodes x this ranks, or --num-executors + 1)"),
    ("cpus-per-task", "N", int, "CPUs per rank"),
    ("mem", "SIZE", str, "memory per node, e.g. 8G"),
    ("gres", "SPEC", str, "generic resources per node, e.g. gpu:2"),
    ("gpus", "SPEC", str, "GPUs for the whole job, e.g. 4 or a100:4"),
    ("gpus-per-node", "SPEC", str, "GPUs per node, e.g. 1 or a100:1"),
    ("constraint", "FEATURES", str, "node features the job needs"),
    ("exclude", "NODES", str, "nodes not to use"),
    ("job-name", "NAME", str, "SLURM job name (default: the job id)"),
)
SLURM_DESTS = tuple("slurm_" + f[0].replace("-", "_") for f in SLURM_FLAGS) + (
    "slurm_extra", "slurm_mpi", "slurm_signal", "slurm_requeue", "slurm_poll_interval", "slurm_config", "detach")


class Driver:
    def __init__(self, description: Optional[str] = None, args: Optional[List[str]] = None) -> None:
        self.parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
        self._argv = args
        self._parsed: Optional[argparse.Namespace] = None
        g = self.parser.add_argument_group("mpipipe options (each also settable as SP_<NAME>, e.g. SP_PLATFORM)")
        self._group = g
        g.add_argument("--platform", default=None,
                       help="local, mpi, slurm, or a dotted path pkg.mod:Class to your own Platform (default: auto-detect)")
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
        g.add_argument("--speculate", action="store_true", default=None,
                       help="start a copy of a straggling task on another rank once most of its node is done; "
                            "the first result wins")
        g.add_argument("--allow-changes", action="store_true", default=None,
                       help="resume even though nodes changed since the journal was written: re-run the changed "
                            "nodes and what depends on them (default: refuse and suggest --fresh)")
        g.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="where module results are kept across jobs and runs (default: <data-root>/cache)")
        g.add_argument("--inject-faults", default=None, metavar="SPEC",
                       help="make task attempts fail on purpose, for testing: a probability such as 0.2, or "
                            "'rate=0.2,kinds=exception+exit+segfault+kill+oom,seed=1,attempts=1'")
        self._builtin_dests = set(BUILTIN_FLAGS) | set(SLURM_DESTS) | {"launcher_overrides"}
        self._user_options: Set[str] = set()
        self._slurm_added = False
        _install_error_hook()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add a flag of the user's script (same signature as argparse's)."""
        action = self.parser.add_argument(*args, **kwargs)
        self._user_options.update(action.option_strings)
        return action

    def _add_slurm_flags(self) -> None:
        """The SLURM group, added last so that the script's own flags win a short name (--time, --nodes...)."""
        if self._slurm_added:
            return
        self._slurm_added = True
        g = self.parser.add_argument_group(
            "SLURM options (--platform slurm; each also SP_SLURM_<NAME>, or <name> in the site config file "
            "~/.config/mpipipe/slurm.toml)")

        def names(name: str) -> List[str]:
            return [o for o in (f"--{name}", f"--slurm-{name}") if o not in self._user_options]

        for name, metavar, kind, text in SLURM_FLAGS:
            g.add_argument(*names(name), dest="slurm_" + name.replace("-", "_"), metavar=metavar, type=kind,
                           default=None, help=text)
        g.add_argument("--slurm-extra", action="append", default=None, metavar="OPTIONS",
                       help="an extra #SBATCH line, e.g. --slurm-extra=--mail-type=END (repeatable)")
        g.add_argument("--slurm-mpi", default=None, metavar="PLUGIN",
                       help="srun --mpi plugin (pmi2 for MPICH, pmix for Open MPI), mpiexec to launch with the MPI "
                            "library's own mpiexec, or auto (default: from the installed MPI)")
        g.add_argument("--slurm-signal", type=int, default=None, metavar="SECONDS",
                       help="warn the job this long before its time limit or a preemption: it stops, keeps its "
                            "journal and requeues itself; 0 for no warning (default: 120, at most half of --time)")
        g.add_argument("--slurm-requeue", action=argparse.BooleanOptionalAction, default=None,
                       help="submit with --requeue and requeue after the warning (default: on)")
        g.add_argument("--slurm-poll-interval", type=float, default=None, metavar="SECONDS",
                       help="seconds between squeue calls while waiting (default: 5)")
        g.add_argument("--slurm-config", default=None, metavar="PATH",
                       help="site config file, TOML or JSON (default: ~/.config/mpipipe/slurm.toml if it exists)")
        g.add_argument(*names("detach"), dest="detach", action="store_true", default=None,
                       help="submit, print the SLURM job id and job directory, and return (see mpipipe status)")

    def _add_set_flag(self) -> None:
        """--set, added at parse time (like the SLURM flags) so that a script's own --set keeps working."""
        if "--set" in self._user_options or any(a.dest == "launcher_overrides" for a in self.parser._actions):
            return
        self._group.add_argument("--set", dest="launcher_overrides", action="append", default=None,
                                 metavar="KEY=VALUE",
                                 help="override a value of the launcher configs built with "
                                      "mpipipe.launchers.from_config(), e.g. --set launchers.0.priority=3 or "
                                      "--set options.partition=gpu; VALUE is read as JSON if it parses, else as "
                                      "text (repeatable)")

    def _parse(self) -> argparse.Namespace:
        if self._parsed is None:
            self._add_set_flag()
            self._add_slurm_flags()
            self._parsed = self.parser.parse_args(self._argv)
            ns = vars(self._parsed)
            # launchers, executors and from_config() made from here on see the command line's options too
            session.use_command_line({k: ns[k] for k in BUILTIN_FLAGS + SLURM_DESTS if ns.get(k) is not None},
                                     {k: v for k, v in ns.items() if k not in self._builtin_dests},
                                     ns.get("launcher_overrides") or ())
        return self._parsed

    def get_arguments(self) -> Dict[str, Any]:
        """The user's own flags as a dict (mpipipe's flags are left out)."""
        ns = vars(self._parse())
        return {k: v for k, v in ns.items() if k not in self._builtin_dests}

    def builtin_arguments(self) -> Dict[str, Any]:
        ns = vars(self._parse())
        return {k: ns[k] for k in BUILTIN_FLAGS + SLURM_DESTS if ns.get(k) is not None}

    def run(self, plan: LogicalPlan, launchers: Optional[Dict[str, Any]] = None) -> Optional[JobResult]:
        """Run the plan on the chosen platform; returns on rank 0 only (other ranks exit here).

        `launchers` maps node names to launchers for a launcher per step ("" is the default; None or a
        world launcher keeps a node on the world's executors)."""
        builtins = self.builtin_arguments()
        debug = bool(builtins.get("debug"))
        try:
            config = build_config(builtins, init=session.init_options())
            debug = config.debug
            _console_logging(config.log_level)
            user_args = self.get_arguments()
            if not config.job_id:  # the platform needs the job directory before the world exists (SLURM)
                config = config.with_(job_id=default_job_id(user_args))
            return JobManager(config, user_args).run(plan, launchers)
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
        if not isinstance(value, MpipipeError):
            previous(etype, value, tb)
            return
        if not _wants_debug():
            if _world_rank() in (None, 0):  # every rank builds the plan: one copy of the message is enough
                print(f"mpipipe: error: {value}", file=sys.stderr)
        else:
            previous(etype, value, tb)  # --debug: the traceback, and still the error's exit code
        sys.stderr.flush()
        sys.stdout.flush()
        logging.shutdown()
        os._exit(value.exit_code)

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
