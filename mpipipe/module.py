"""Modules: a unit of work with an optional array of iteration values, run by a launcher.

`__init__` runs where the pipeline is driven; `run` runs wherever the launcher
puts it (another process, maybe another host), once per array element, in no
guaranteed order. A module's identity for the result cache is its class, its
`version()`, its configuration (instance attributes minus `transient`) and the
iteration value and index, so re-running a pipeline reuses what it computed.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from mpipipe.errors import MpipipeError, PlanError

_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class Module:
    """Subclass it and define `run`; the other methods have defaults.

    - `array()`: None for a single run, or a list of N values: `run` is called N
      times with (value, index). An ArrayRef from mpipipe.refs works too, and
      each run then loads only its own element.
    - `requirements()`: what one run needs (a requirement string such as
      "cpu(cores=2, mem=4GiB)", a Resources, or a dict), or None.
    - `version()`: bump it to invalidate cached results.
    - `validate(result, iteration_value, iteration_index)`: False rejects a cached result
      (e.g. the file it names is gone), which is then computed again.
    - `transient`: names of attributes that do not change the result (a log
      level, a progress flag): they are left out of the cache key.
    """

    transient: Sequence[str] = ()

    def run(self, iteration_value: Any = None, iteration_index: int = 0) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define run()")

    def array(self) -> Optional[Sequence[Any]]:
        return None

    def requirements(self) -> Any:
        return None

    def name(self) -> str:
        return type(self).__name__

    def comment(self) -> str:
        return ""

    def version(self) -> str:
        return "0"

    def validate(self, result: Any, iteration_value: Any = None, iteration_index: int = 0) -> bool:
        return True

    def cache_config(self) -> Dict[str, Any]:
        """What decides the result besides the iteration: instance attributes minus transient and private ones."""
        state = dict(vars(self))
        return {k: v for k, v in state.items() if k not in set(self.transient) and not k.startswith("_")}


def stable_text(value: Any, _depth: int = 0) -> str:
    """A text that is the same in every process for equal values (no memory addresses, sorted keys)."""
    if _depth > 50:
        raise PlanError("a module's configuration nests more than 50 levels deep; mark such attributes transient")
    d = _depth + 1
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (pathlib.PurePath,)):
        return f"path:{os.fspath(value)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[" + ",".join(stable_text(v, d) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "set{" + ",".join(sorted(stable_text(v, d) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted((stable_text(k, d), stable_text(v, d)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    digest = getattr(value, "digest", None)
    if isinstance(digest, str) and type(value).__module__ == "mpipipe.refs":
        return f"ref:{digest}"  # a stored value: its content digest, never the value itself
    if isinstance(value, Module):
        return f"module:{type(value).__module__}.{type(value).__qualname__}@{value.version()}" + \
            stable_text(value.cache_config(), d)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"{type(value).__qualname__}" + stable_text(fields, d)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist) and type(value).__module__.startswith("numpy"):
        return f"{type(value).__qualname__}:{getattr(value, 'dtype', '')}:" + stable_text(tolist(), d)
    if callable(value):
        from mpipipe.logical.node import code_fingerprint

        return f"code:{code_fingerprint(value)}"
    if hasattr(value, "__dict__"):
        return f"{type(value).__module__}.{type(value).__qualname__}" + stable_text(vars(value), d)
    return f"{type(value).__qualname__}:{value!r}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def module_key(module: Module) -> str:
    """The cache identity of a module without its iteration: class, version and configuration."""
    cls = type(module)
    return digest(f"{cls.__module__}.{cls.__qualname__}|{module.version()}|{stable_text(module.cache_config())}")


@dataclass(frozen=True)
class Shard:
    """One run of a module: its place in the array, its value (or a reference to it) and its cache key."""

    index: int
    value: Any
    key: str


def shards_of(module: Module) -> "tuple[List[Shard], bool]":
    """(the runs of a module, whether it is an array). Values of an ArrayRef stay references."""
    base = module_key(module)
    values = module.array()
    if values is None:
        return [Shard(0, None, digest(f"{base}|single"))], False
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise PlanError(f"module {module.name()!r}: array() must return a list of values (or None), got "
                        f"{type(values).__name__}")
    element = getattr(values, "element", None)
    if callable(element) and type(values).__module__ == "mpipipe.refs":
        items = [values.element(i) for i in range(len(values))]
    else:
        items = list(values)
    return [Shard(i, v, digest(f"{base}|{i}|{stable_text(v)}")) for i, v in enumerate(items)], True


def module_label(module: Module) -> str:
    """The module's name, made usable as a folder and node name."""
    name = _NAME_RE.sub("-", str(module.name())).strip("-.") or type(module).__name__
    return name[:80]


@dataclass
class ShardFailure:
    """A run that failed after all its attempts."""

    index: int
    value: Any
    error: str
    traceback: str = ""
    log: str = ""
    attempts: int = 1

    def render(self, module: str) -> str:
        tb = f"\n{self.traceback.rstrip()}" if self.traceback.strip() else ""
        where = f"\n--- log: {self.log}" if self.log else ""
        return f"{module}[{self.index}] failed after {self.attempts} attempt(s): {self.error}{tb}{where}"


class ModuleFailed(MpipipeError):
    """Some runs of a module failed: `results` has the others' results (None where failed), `failures` each failure."""

    exit_code = 1

    def __init__(self, module: str, results: List[Any], failures: List[ShardFailure]) -> None:
        self.module = module
        self.results = results
        self.failures = sorted(failures, key=lambda f: f.index)
        shown = "\n".join(f.render(module) for f in self.failures[:5])
        more = f"\n... and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        super().__init__(f"module {module}: {len(self.failures)} of {len(results)} run(s) failed\n{shown}{more}")
