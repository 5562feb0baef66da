"""One frozen JobConfig per job, built from CLI > environment (SP_*) > init() > defaults.

Unknown option names are rejected with the list of valid ones, and values are
converted once here, so the rest of the code reads typed fields.
"""
from __future__ import annotations

import dataclasses
import logging
import os
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
    platform_options: Tuple[Tuple[str, str], ...] = field(default=())

    def with_(self, **changes: Any) -> "JobConfig":
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in fields(JobConfig))
ENV_PREFIX = "SP_"
_OTHER_SP_VARS = frozenset()  # SP_* names read elsewhere (none yet)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def _convert(name: str, value: Any, source: str) -> Any:
    default = getattr(JobConfig(), name)
    ftype = {f.name: f.type for f in fields(JobConfig)}[name]
    where = f"{name} (from {source})"
    if value is None:
        return None
    try:
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
    root = os.path.abspath(os.path.expanduser(cfg.data_root))
    return cfg.with_(data_root=root)
