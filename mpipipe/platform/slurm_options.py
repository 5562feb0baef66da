"""The SLURM options of one job: command line > SP_SLURM_* > init() > site config file > defaults.

The first three layers are merged into JobConfig's `slurm_*` fields by
mpipipe.config; this module adds the site config file (TOML or JSON) and the
defaults, and returns one frozen SlurmOptions. The site config is read only
when a job really goes to SLURM, so a broken file never stops a local run.

Site config: the file named by --slurm-config / SP_SLURM_CONFIG, else
$XDG_CONFIG_HOME/mpipipe/slurm.toml (or slurm.json), XDG_CONFIG_HOME
defaulting to ~/.config. Its keys are the option names (`ntasks_per_node` or
`ntasks-per-node`); any other key is an error that lists the valid ones.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from mpipipe.config import SLURM_OPTIONS, JobConfig, convert_slurm, slurm_time_seconds
from mpipipe.errors import ConfigError

SITE_KEYS = tuple(SLURM_OPTIONS)


@dataclass(frozen=True)
class SlurmOptions:
    """Everything sbatch/srun are asked for, typed; None means "let SLURM decide"."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: Optional[str] = None
    nodes: Optional[int] = None
    ntasks_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    gres: Optional[str] = None
    gpus: Optional[str] = None
    gpus_per_node: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    job_name: Optional[str] = None
    extra: Tuple[str, ...] = ()
    mpi: str = "auto"  # an srun --mpi plugin (pmi2, pmix, ...), "auto", or "mpiexec"
    signal: int = 120  # seconds before the time limit that the batch script is warned (0: no warning; at most
    # half the time limit unless chosen)
    requeue: bool = True  # submit with --requeue; requeue itself after the warning
    poll_interval: float = 5.0  # seconds between squeue calls while waiting

    def with_(self, **changes: Any) -> "SlurmOptions":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SlurmOptions(**values)


assert tuple(f.name for f in fields(SlurmOptions)) == SITE_KEYS, "SlurmOptions and config.SLURM_OPTIONS differ"


def default_site_config() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    folder = os.path.join(base, "mpipipe")
    toml_path = os.path.join(folder, "slurm.toml")
    json_path = os.path.join(folder, "slurm.json")
    return json_path if os.path.exists(json_path) and not os.path.exists(toml_path) else toml_path


def _parse_file(path: str) -> Mapping[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".json"):
        try:
            parsed = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise ConfigError(f"site config {path} is not valid JSON: {e}") from None
    else:
        try:
            import tomllib  # Python 3.11+
        except ImportError:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise ConfigError(f"reading the TOML site config {path} needs Python 3.11 or `pip install tomli`; "
                                  "or write it as JSON (a .json file)") from None
        try:
            parsed = tomllib.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"site config {path} is not valid TOML: {e}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"site config {path} must hold a table of options, found {type(parsed).__name__}")
    return parsed


def read_site_config(path: Optional[str], explicit: bool) -> Dict[str, Any]:
    """The site config's options, checked and typed; {} when the default file does not exist."""
    if not path:
        return {}
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"site config {path} (from --slurm-config or SP_SLURM_CONFIG) does not exist")
        return {}
    try:
        raw = _parse_file(path)
    except OSError as e:
        raise ConfigError(f"cannot read the site config {path}: {e.strerror}") from None
    values: Dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in SLURM_OPTIONS:
            unknown.append(str(key))
            continue
        if value is None:
            continue
        try:
            values[name] = convert_slurm(name, value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad value for {key} in the site config {path}: {e}") from None
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} in the site config {path}; "
                          f"valid options: {', '.join(SITE_KEYS)}")
    return values


def resolve(config: JobConfig) -> SlurmOptions:
    """The job's SlurmOptions: config (command line > SP_SLURM_* > init()) > site config > defaults."""
    explicit = config.slurm_config is not None
    site = read_site_config(config.slurm_config if explicit else default_site_config(), explicit)
    values: Dict[str, Any] = {}
    for name in SITE_KEYS:
        mine = getattr(config, f"slurm_{name}")
        if mine is not None:
            values[name] = mine
        elif name in site:
            values[name] = site[name]
    if "signal" not in values and values.get("time"):
        # nobody chose the warning: keep the default unless the time limit is shorter than twice it
        limit = slurm_time_seconds(values["time"])
        if limit is not None and limit < 2 * SlurmOptions.signal:
            values["signal"] = max(1, limit // 2)
    return SlurmOptions(**values)
