"""One frozen JobConfig per job, built from CLI > environment (SP_*) > init() > defaults.

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


@dataclass(frozen=True)
class JobConfig:
    platform: Optional[str] = None
    num_executors: Optional[int] = None
    job_id: Optional[str] = None
    data_root: str = "mpipipe-jobs"
    max_retries: int = 2
    fail_fast: bool = False
    fresh: bool = False
    dry_run: bool = False
    log_level: str = "INFO"
    debug: bool = False
    workers_per_executor: int = 1
    progress_interval: float = 2.0
    mpiexec: str = "mpiexec"
    hello_timeout: float = 120.0
    hosts: Optional[str] = None  # per-rank host overrides: "1,2=cpu(cores=8) & cuda(mem=16GiB) * 2; 3=..."
    inject_faults: Optional[str] = None  # e.g. "0.2" or "rate=0.3,kinds=exit+kill,seed=1" (see execution/faults.py)
    speculate: bool = False  # start copies of stragglers; the first result wins
    allow_changes: bool = False  # resume even if nodes changed since the journal: re-run those and what follows
    cache_dir: Optional[str] = None  # module results kept across jobs (default: <data_root>/cache)
    platform_options: Tuple[Tuple[str, str], ...] = field(default=())
    # --platform slurm (None: not set by the command line, SP_SLURM_* or init(); the site config or a default decides)
    slurm_partition: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_qos: Optional[str] = None
    slurm_time: Optional[str] = None
    slurm_nodes: Optional[int] = None
    slurm_ntasks_per_node: Optional[int] = None
    slurm_cpus_per_task: Optional[int] = None
    slurm_mem: Optional[str] = None
    slurm_gres: Optional[str] = None
    slurm_gpus: Optional[str] = None
    slurm_gpus_per_node: Optional[str] = None
    slurm_constraint: Optional[str] = None
    slurm_exclude: Optional[str] = None
    slurm_job_name: Optional[str] = None
    slurm_extra: Optional[Tuple[str, ...]] = None
    slurm_mpi: Optional[str] = None
    slurm_signal: Optional[int] = None
    slurm_requeue: Optional[bool] = None
    slurm_poll_interval: Optional[float] = None
    slurm_config: Optional[str] = None  # the site config file
    detach: bool = False  # --platform slurm: submit, print the SLURM job id and job directory, return

    def with_(self, **changes: Any) -> "JobConfig":
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in fields(JobConfig))
ENV_PREFIX = "SP_"
_OTHER_SP_VARS: "frozenset[str]" = frozenset()  # SP_* names read elsewhere (none yet)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


# The SLURM options: name -> kind. Each is the JobConfig field slurm_<name>, the flags --<name> and
# --slurm-<name>, the variable SP_SLURM_<NAME>, and the key <name> of the site config file.
SLURM_OPTIONS: Dict[str, str] = {
    "partition": "str", "account": "str", "qos": "str", "time": "time", "nodes": "count",
    "ntasks_per_node": "count", "cpus_per_task": "count", "mem": "mem", "gres": "str", "gpus": "str",
    "gpus_per_node": "str", "constraint": "str", "exclude": "str", "job_name": "str", "extra": "lines",
    "mpi": "mpi", "signal": "seconds", "requeue": "bool", "poll_interval": "interval",
}
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


def _convert(name: str, value: Any, source: str) -> Any:
    default = getattr(JobConfig(), name)
    ftype = {f.name: f.type for f in fields(JobConfig)}[name]
    where = f"{name} (from {source})"
    if value is None:
        return None
    try:
        if name.startswith("slurm_") and name[len("slurm_"):] in SLURM_OPTIONS:
            return convert_slurm(name[len("slurm_"):], value)
        if name == "platform_options":
            if isinstance(value, str):
                pairs = [kv.split("=", 1) for kv in value.split(",") if kv.strip()]
                return tuple((k.strip(), v.strip()) for k, v in pairs)
            return tuple(sorted(dict(value).items()))
        if isinstance(default, bool) or ftype in ("bool",):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if name in ("num_executors", "max_retries", "workers_per_executor"):
            n = int(value)
            low = 1 if name != "max_retries" else 0
            if n < low:
                raise ValueError(f"must be at least {low}, got {n}")
            return n
        if name in ("progress_interval", "hello_timeout"):
            x = float(value)
            if x < 0:
                raise ValueError(f"must not be negative, got {x}")
            return x
        if name == "inject_faults":
            from mpipipe.execution.faults import parse as parse_faults

            return str(parse_faults(str(value)))
        if name == "log_level":
            level = str(value).upper()
            if level not in _LOG_LEVELS:
                raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
            return level
        text = str(value)
        if name == "job_id" and (not text or "/" in text or text in (".", "..")):
            raise ValueError(f"a job id names a folder: no '/', not empty, got {value!r}")
        return text
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value for {where}: {e}") from None


def check_names(options: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {source}; valid options: {', '.join(OPTION_NAMES)}")


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
            values[name] = _convert(name, cli[name], "the command line")
        elif env_name(name) in env:
            values[name] = _convert(name, env[env_name(name)], f"${env_name(name)}")
        elif name in init:
            values[name] = _convert(name, init[name], "init()")
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
