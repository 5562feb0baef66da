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

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Mapping, Optional

from mpipipe.config import SLURM_DEFAULTS, SLURM_OPTIONS, JobConfig, convert_slurm, option_fields, slurm_time_seconds
from mpipipe.errors import ConfigError

SITE_KEYS = tuple(SLURM_OPTIONS)


def _with(self: Any, **changes: Any) -> Any:
    """A copy with some options changed."""
    return dataclasses.replace(self, **changes)


def _build_options_class() -> Any:
    """SlurmOptions, made from the SLURM options declared in mpipipe.config.JobConfig (one declaration each):
    every field named as the option, with the option's SLURM default."""
    specs = [(f.name[len("slurm_"):], f.type, dataclasses.field(default=f.metadata["slurm_default"]))
             for f in option_fields() if f.metadata.get("kind") == "slurm"]
    doc = 'Everything sbatch/srun are asked for, typed; None means "let SLURM decide".'
    cls = dataclasses.make_dataclass("SlurmOptions", specs, frozen=True, namespace={"with_": _with, "__doc__": doc})
    cls.__module__ = __name__  # pickled by reference, like a class written here
    return cls


if TYPE_CHECKING:
    class SlurmOptions:  # what type checkers see of the class made at import: a dataclass of any options
        __dataclass_fields__: ClassVar[Dict[str, Any]]

        def __init__(self, **options: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def with_(self, **changes: Any) -> SlurmOptions: ...
else:
    SlurmOptions = _build_options_class()


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
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
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
        if limit is not None and limit < 2 * SLURM_DEFAULTS["signal"]:
            values["signal"] = max(1, limit // 2)
    return SlurmOptions(**values)
