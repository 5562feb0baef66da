"""mpipipe's command-line flags, declared once for the Driver and for scripts that only call init().

Built-in flags are long options only, so every short option stays free for
the user's script. The SLURM flags (--partition, --time, ...) are added at
parse time, each as --<name> and --slurm-<name>: a script that defines its own
--time keeps it, and --slurm-time still reaches SLURM.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

GROUP_TITLE = "mpipipe options (each also settable as SP_<NAME>, e.g. SP_PLATFORM)"

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


def add_builtin_flags(g: Any) -> None:
    """mpipipe's own job options, into an argparse parser or argument group."""
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


def add_set_flag(g: Any) -> None:
    """--set KEY=VALUE: overrides for launcher configs built with mpipipe.launchers.from_config()."""
    g.add_argument("--set", dest="launcher_overrides", action="append", default=None,
                   metavar="KEY=VALUE",
                   help="override a value of the launcher configs built with "
                        "mpipipe.launchers.from_config(), e.g. --set launchers.0.priority=3 or "
                        "--set options.partition=gpu; VALUE is read as JSON if it parses, else as "
                        "text (repeatable)")


def add_slurm_flags(parser: argparse.ArgumentParser, taken: Set[str]) -> None:
    """The SLURM group, added last so that the script's own flags (in `taken`) win a short name (--time...)."""
    g = parser.add_argument_group(
        "SLURM options (--platform slurm; each also SP_SLURM_<NAME>, or <name> in the site config file "
        "~/.config/mpipipe/slurm.toml)")

    def names(name: str) -> List[str]:
        return [o for o in (f"--{name}", f"--slurm-{name}") if o not in taken]

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


def builtin_parser(add_help: bool = True, description: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser with mpipipe's job options in their group (the SLURM group and --set come at parse time)."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False, add_help=add_help)
    add_builtin_flags(parser.add_argument_group(GROUP_TITLE))
    return parser


def parse_known(argv: Sequence[str]) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """mpipipe's flags out of a command line that also carries a script's own flags.

    Returns (the built-in options that were given, the --set overrides, the rest of argv
    untouched). A bad value of one of mpipipe's flags exits 2 with argparse's message;
    flags mpipipe does not know are left for the script.
    """
    parser = builtin_parser(add_help=False)
    parser.error = _one_line_error  # type: ignore[method-assign]
    add_set_flag(parser)
    add_slurm_flags(parser, set())
    ns, rest = parser.parse_known_args(list(argv))
    values = vars(ns)
    builtins = {k: values[k] for k in BUILTIN_FLAGS + SLURM_DESTS if values.get(k) is not None}
    return builtins, list(values.get("launcher_overrides") or ()), rest


def _one_line_error(message: str) -> None:
    """A bad value of one of mpipipe's flags, in a script whose usage line mpipipe does not know."""
    print(f"mpipipe: error: {message} (see the mpipipe options in the README, or a Driver script's --help)",
          file=sys.stderr)
    raise SystemExit(2)
