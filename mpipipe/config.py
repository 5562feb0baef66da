"""One frozen JobConfig per job, built from CLI > environment (SP_*) > init() > defaults; its fields are the
one declaration of every option (flags, SP_* names, SlurmOptions and site config keys are made from them).

Unknown option names are rejected with the list of valid ones, and values are
converted once here, so the rest of the code reads typed fields. The SLURM
options (`slurm_*` fields) have one more layer below init(): the site config
file, read by the SLURM platform only (mpipipe.platform.slurm_options).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from mpipipe.errors import ConfigError


def option(default: Any, help: str, *, kind: str = "text", metavar: Optional[str] = None,
           flag: bool = True, choices: Optional[Tuple[str, ...]] = None) -> Any:
    """One job option, declared once: its field in JobConfig, its --flag, its SP_* variable and its help.

    `kind` names the converter (see convert_option); `flag=False` options are set only by SP_* or init().
    """
    return field(default=default, metadata={"help": help, "kind": kind, "metavar": metavar, "flag": flag,
                                            "choices": choices})


def slurm_option(default: Any, help: str, *, kind: str = "str", metavar: Optional[str] = None,
                 short: bool = True, action: Optional[str] = None) -> Any:
    """One SLURM option: the JobConfig field slurm_<name> (None: not chosen), the flags --slurm-<name> and,
    when `short`, --<name> (unless the script took it), SP_SLURM_<NAME>, the site config key <name>, and the
    SlurmOptions field <name> whose default is `default`."""
    return field(default=None, metadata={"help": help, "kind": "slurm", "slurm_kind": kind, "metavar": metavar,
                                         "flag": True, "short": short, "slurm_default": default,
                                         "action": action})


@dataclass(frozen=True)
class JobConfig:
    platform: Optional[str] = option(
        None, "local, mpi, slurm, or a dotted path pkg.mod:Class to your own Platform (default: auto-detect)")
    num_executors: Optional[int] = option(
        None, "executor ranks (default: the MPI world's size - 1, else the number of cores)", kind="count")
    job_id: Optional[str] = option(
        None, "job name; the same id resumes (default: script name + hash of its arguments)", kind="job_id")
    data_root: str = option("mpipipe-jobs", "folder that holds job directories (default: ./mpipipe-jobs)")
    max_retries: int = option(2, "retries of a failed task before the job fails (default: 2)", kind="count0")
    fail_fast: bool = option(False, "stop the job at the first task that fails for good", kind="bool")
    fresh: bool = option(False, "ignore the journal: run every task again", kind="bool")
    dry_run: bool = option(False, "print the plan and the platform choice; run nothing", kind="bool")
    log_level: str = option("INFO", "level of the rank logs (default: INFO)", kind="level",
                            choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    debug: bool = option(False, "show Python tracebacks for every error", kind="bool")
    workers_per_executor: int = option(1, "worker processes per executor rank (default: 1)", kind="count")
    progress_interval: float = option(2.0, "seconds between progress lines, 0 for none (default: 2)",
                                      kind="seconds")
    mpiexec: str = option("mpiexec", "the launcher --platform mpi runs", flag=False)
    hostfile: Optional[str] = option(
        None, "--platform mpi: start the world on the hosts of this file (MPICH 'host:slots' or Open MPI "
              "'host slots=N' lines), passed as the launcher's own option (MPICH -f, Open MPI --hostfile); "
              "rank 0 runs on the first host", metavar="PATH")
    mpiexec_args: Optional[str] = option(
        None, "--platform mpi: more arguments for mpiexec, split as a shell would, e.g. "
              "--mpiexec-args='-iface eth0' or '--bind-to none'", metavar="ARGS")
    hello_timeout: float = option(120.0, "seconds rank 0 waits for executors to answer", kind="seconds", flag=False)
    hosts: Optional[str] = option(
        None, "override what executor ranks offer, in the requirement language, e.g. "
              "'1,2=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2' (default: each rank probes its host)",
        metavar="RANKS=HOST;...")
    speculate: bool = option(False, "start a copy of a straggling task on another rank once most of its node is "
                                    "done; the first result wins", kind="bool")
    allow_changes: bool = option(False, "resume even though nodes changed since the journal was written: re-run "
                                        "the changed nodes and what depends on them (default: refuse and suggest "
                                        "--fresh)", kind="bool")
    cache_dir: Optional[str] = option(
        None, "where module results are kept across jobs and runs (default: <data-root>/cache)", metavar="DIR")
    shuffle_format: str = option(
        "arrow", "the form of a shuffle's intermediate files, which only the job's own next steps read: arrow "
                 "(Arrow IPC, memory-mapped when read back) or parquet (default: arrow; a partitioning node whose "
                 "files the user may read, a plan root, a named node or one with output_path=, writes Parquet)",
        kind="shuffle_format", flag=False)
    shuffle: str = option(
        "files", "how a shuffle's buckets reach the tasks that read them: files (in the job directory) or mpi (in "
                 "an MPI world: each bucket is sent to the rank that reads it and kept in that rank's memory, "
                 "spilled to local disk past --shuffle-memory; other platforms use files) (default: files)",
        kind="shuffle", choices=("files", "mpi"))
    shuffle_memory: Optional[int] = option(
        None, "--shuffle mpi: how many bytes of buckets an executor rank keeps in memory before it spills to "
              "local disk, e.g. 2GiB (default: a quarter of its host's memory, shared by the host's executor "
              "ranks)", kind="size", metavar="SIZE")
    shuffle_spill_dir: Optional[str] = option(
        None, "--shuffle mpi: the local folder for buckets past --shuffle-memory (default: the system's "
              "temporary folder)", metavar="DIR", flag=False)
    inject_faults: Optional[str] = option(
        None, "make task attempts fail on purpose, for testing: a probability such as 0.2, or "
              "'rate=0.2,kinds=exception+exit+segfault+kill+oom,seed=1,attempts=1'", kind="faults", metavar="SPEC")
    platform_options: Tuple[Tuple[str, str], ...] = option(
        (), "options for a custom platform, key=value,...", kind="pairs", flag=False)
    # --platform slurm (None: not set by the command line, SP_SLURM_* or init(); the site config or a default decides)
    slurm_partition: Optional[str] = slurm_option(None, "partition (queue) to submit to", metavar="NAME")
    slurm_account: Optional[str] = slurm_option(None, "account to charge", metavar="NAME")
    slurm_qos: Optional[str] = slurm_option(None, "quality of service", metavar="NAME")
    slurm_time: Optional[str] = slurm_option(None, "time limit: minutes, HH:MM:SS or D-HH:MM:SS", kind="time",
                                             metavar="TIME")
    slurm_nodes: Optional[int] = slurm_option(None, "nodes", kind="count", metavar="N")
    slurm_ntasks_per_node: Optional[int] = slurm_option(
        None, "ranks per node (the job has nodes x this ranks, or --num-executors + 1)", kind="count", metavar="N")
    slurm_cpus_per_task: Optional[int] = slurm_option(None, "CPUs per rank", kind="count", metavar="N")
    slurm_mem: Optional[str] = slurm_option(None, "memory per node, e.g. 8G", kind="mem", metavar="SIZE")
    slurm_gres: Optional[str] = slurm_option(None, "generic resources per node, e.g. gpu:2", metavar="SPEC")
    slurm_gpus: Optional[str] = slurm_option(None, "GPUs for the whole job, e.g. 4 or a100:4", metavar="SPEC")
    slurm_gpus_per_node: Optional[str] = slurm_option(None, "GPUs per node, e.g. 1 or a100:1", metavar="SPEC")
    slurm_constraint: Optional[str] = slurm_option(None, "node features the job needs", metavar="FEATURES")
    slurm_exclude: Optional[str] = slurm_option(None, "nodes not to use", metavar="NODES")
    slurm_job_name: Optional[str] = slurm_option(None, "SLURM job name (default: the job id)", metavar="NAME")
    slurm_extra: Optional[Tuple[str, ...]] = slurm_option(
        (), "an extra #SBATCH line, e.g. --slurm-extra=--mail-type=END (repeatable)", kind="lines",
        metavar="OPTIONS", short=False, action="append")
    slurm_mpi: Optional[str] = slurm_option(
        "auto", "srun --mpi plugin (pmi2 for MPICH, pmix for Open MPI), mpiexec to launch with the MPI library's "
                "own mpiexec, or auto (default: from the installed MPI)", kind="mpi", metavar="PLUGIN", short=False)
    slurm_signal: Optional[int] = slurm_option(
        120, "warn the job this long before its time limit or a preemption: it stops, keeps its journal and "
             "requeues itself; 0 for no warning (default: 120, at most half of --time)", kind="seconds",
        metavar="SECONDS", short=False)
    slurm_requeue: Optional[bool] = slurm_option(
        True, "submit with --requeue and requeue after the warning (default: on)", kind="bool", short=False,
        action="optional")
    slurm_poll_interval: Optional[float] = slurm_option(
        5.0, "seconds between squeue calls while waiting (default: 5)", kind="interval", metavar="SECONDS",
        short=False)
    slurm_config: Optional[str] = option(
        None, "site config file, TOML or JSON (default: ~/.config/mpipipe/slurm.toml if it exists)",
        kind="slurm_config", metavar="PATH")
    detach: bool = option(False, "submit, print the SLURM job id and job directory, and return (see mpipipe "
                                 "status)", kind="detach")

    def with_(self, **changes: Any) -> "JobConfig":
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in fields(JobConfig))
ENV_PREFIX = "SP_"
# SP_* names read elsewhere: SP_EARLY_START=0 turns off the start-up work done before the first run (an MPI rank's
# first worker at import, local executors at init(): mpipipe.execution.early)
_OTHER_SP_VARS: "frozenset[str]" = frozenset({"SP_EARLY_START"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SHUFFLES = ("files", "mpi")  # how a shuffle's buckets move (mpipipe.logical.shuffles)
_SHUFFLE_FORMATS = ("arrow", "parquet")  # what a shuffle's map tasks may write (mpipipe.logical.intermediates)


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def option_fields() -> Tuple[Any, ...]:
    """JobConfig's fields with their declarations (help, kind, metavar, flag...), in order."""
    return fields(JobConfig)


# The SLURM options: name -> kind, from JobConfig's slurm_option() fields. Each is the JobConfig field
# slurm_<name>, the flags --<name> and --slurm-<name>, the variable SP_SLURM_<NAME>, and the key <name> of the
# site config file.
SLURM_OPTIONS: Dict[str, str] = {f.name[len("slurm_"):]: f.metadata["slurm_kind"] for f in fields(JobConfig)
                                 if f.metadata.get("kind") == "slurm"}
SLURM_DEFAULTS: Dict[str, Any] = {f.name[len("slurm_"):]: f.metadata["slurm_default"] for f in fields(JobConfig)
                                  if f.metadata.get("kind") == "slurm"}
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(text: str) -> Optional[int]:
    """Seconds of a SLURM time limit ("30", "4:00:00", "1-12", "2-0:30:00"); None for UNLIMITED/INFINITE."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(f"expected a SLURM time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS), got {text!r}")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = (nums + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + mi) * 60 + s
    if len(nums) == 1:  # minutes
        return nums[0] * 60
    if len(nums) == 2:  # MM:SS
        return nums[0] * 60 + nums[1]
    return (nums[0] * 60 + nums[1]) * 60 + nums[2]


def convert_slurm(name: str, value: Any) -> Any:
    """One SLURM option's value, checked and typed; raises ValueError saying what was expected."""
    kind = SLURM_OPTIONS[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if kind in ("count", "seconds"):
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        n = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
        low = 1 if kind == "count" else 0
        if n < low:
            raise ValueError(f"must be at least {low}, got {n}")
        return n
    if kind == "interval":
        x = float(value)
        if not x > 0:
            raise ValueError(f"must be more than 0 seconds, got {value!r}")
        return x
    if kind == "lines":
        if isinstance(value, str):
            text = value.strip()
            lines = json.loads(text) if text.startswith("[") else text.splitlines()
        else:
            lines = list(value)
        out = []
        for line in lines:
            if not isinstance(line, str):
                raise ValueError(f"expected #SBATCH option lines (strings), got {line!r}")
            line = line.strip()
            if line.startswith("#SBATCH"):
                line = line[len("#SBATCH"):].strip()
            if not line:
                continue
            if not line.startswith("-") or "\n" in line or "\r" in line:
                raise ValueError(f"expected sbatch options such as --mail-type=END, one per line, got {line!r}")
            out.append(line)
        return tuple(out)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected text, got {value!r}")
    text = str(value).strip()
    if not text or "\n" in text or "\r" in text:
        raise ValueError(f"expected one non-empty line, got {value!r}")
    if kind == "time":
        if isinstance(value, int):
            text = str(value)  # minutes, as sbatch reads a bare number
        slurm_time_seconds(text)
    elif kind == "mem" and not re.match(r"^\d+[KMGT]?B?$", text, re.IGNORECASE):
        raise ValueError(f"expected a size such as 4000 (MB), 8G or 1T, got {value!r}")
    elif kind == "mpi" and not re.match(r"^[A-Za-z0-9_]+$", text):
        raise ValueError(f"expected auto, mpiexec or an srun --mpi plugin (pmi2, pmix, ...), got {value!r}")
    return text


_KINDS = {f.name: f.metadata["kind"] for f in fields(JobConfig)}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _one_of(text: str, allowed: Tuple[str, ...], given: Any) -> str:
    """`text` (the value as spelled for comparing) if it is one of `allowed`."""
    if text not in allowed:
        raise ValueError(f"expected one of {', '.join(allowed)}, got {given!r}")
    return text


def convert_option(name: str, value: Any, source: str) -> Any:
    """One option's value from `source`, checked and typed by its declared kind."""
    kind = _KINDS[name]
    where = f"{name} (from {source})"
    if value is None:
        return None
    try:
        if kind == "slurm":
            return convert_slurm(name[len("slurm_"):], value)
        if kind == "pairs":
            if isinstance(value, str):
                pairs = [kv.split("=", 1) for kv in value.split(",") if kv.strip()]
                return tuple((k.strip(), v.strip()) for k, v in pairs)
            return tuple(sorted(dict(value).items()))
        if kind in ("bool", "detach"):
            return _bool(value)
        if kind in ("count", "count0"):
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError(f"expected a whole number, got {value!r}")
            n = int(value)
            low = 0 if kind == "count0" else 1
            if n < low:
                raise ValueError(f"must be at least {low}, got {n}")
            return n
        if kind == "seconds":
            x = float(value)
            if x < 0:
                raise ValueError(f"must not be negative, got {x}")
            return x
        if kind == "faults":
            from mpipipe.execution.faults import parse as parse_faults

            return str(parse_faults(str(value)))
        if kind == "shuffle":
            return _one_of(str(value).strip().lower(), SHUFFLES, value)
        if kind == "size":
            from mpipipe.errors import RequirementError
            from mpipipe.requirements import parse_size

            try:
                return parse_size(value)
            except RequirementError as e:
                raise ValueError(str(e)) from None
        if kind == "shuffle_format":
            return _one_of(str(value).strip().lower(), _SHUFFLE_FORMATS, value)
        if kind == "level":
            return _one_of(str(value).upper(), _LOG_LEVELS, value)
        text = str(value)
        if kind == "job_id" and (not text or "/" in text or text in (".", "..")):
            raise ValueError(f"a job id names a folder: no '/', not empty, got {value!r}")
        return text
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value for {where}: {e}") from None


def check_names(options: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {source}; "
                          f"valid options: {', '.join(OPTION_NAMES)}")


def build_config(cli: Optional[Mapping[str, Any]] = None, env: Optional[Mapping[str, str]] = None,
                 init: Optional[Mapping[str, Any]] = None) -> JobConfig:
    """Merge the layers; the first that sets an option wins: CLI, environment, init(), defaults."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    init = dict(init or {})
    check_names(cli, "the command line")
    check_names(init, "init()")
    values: Dict[str, Any] = {}
    for name in OPTION_NAMES:
        if name in cli:
            values[name] = convert_option(name, cli[name], "the command line")
        elif env_name(name) in env:
            values[name] = convert_option(name, env[env_name(name)], f"${env_name(name)}")
        elif name in init:
            values[name] = convert_option(name, init[name], "init()")
    unknown_env = sorted(k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() not in OPTION_NAMES
                         and k not in _OTHER_SP_VARS)
    if unknown_env:
        logging.getLogger("mpipipe.config").warning(
            "ignoring unknown environment variable(s) %s; valid: %s", ", ".join(unknown_env),
            ", ".join(env_name(n) for n in OPTION_NAMES))
    cfg = JobConfig(**values)
    if cfg.fresh and env.get("SLURM_RESTART_COUNT", "0").strip() not in ("", "0"):
        # a requeued SLURM job runs the same command again: it resumes; --fresh was for its first start
        logging.getLogger("mpipipe.config").info("SLURM restarted this job: resuming from the journal (--fresh "
                                                 "applied to its first start only)")
        cfg = cfg.with_(fresh=False)
    root = os.path.abspath(os.path.expanduser(cfg.data_root))
    return cfg.with_(data_root=root)
