"""Modules: a unit of work with an optional array of iteration values, run by a launcher.

`__init__` runs where the pipeline is driven; `run` runs wherever the launcher
puts it (another process, maybe another host), once per array element, in no
guaranteed order. A module's identity for the result cache is its class, its
`version()`, its configuration (instance attributes minus `transient`) and the
iteration value and index, so re-running a pipeline reuses what it computed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from mpipipe.errors import MpipipeError, PlanError
from mpipipe.value_key import ValueKeyError, value_digest, value_hexdigest

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
      level, a progress flag): they are left out of the cache key. Every other
      attribute is keyed by its value (mpipipe.value_key); one that cannot be
      (an open file, a socket) is a PlanError, never a guess.
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


def module_key(module: Module) -> str:
    """The cache identity of a module without its iteration: class, version and configuration, by value."""
    cls = type(module)
    try:
        return value_hexdigest(module, root=cls.__name__)
    except ValueKeyError as e:
        if e.top:
            e.note = f"if {e.top!r} does not change the result, list it in {cls.__name__}.transient"
        raise


def _shard_key(module: Module, base: str, index: Optional[int], value: Any) -> str:
    """A run's key: the module's key, its place in the array and its value (a ref by its digest)."""
    if index is None:
        return value_hexdigest((base, "single"))
    try:
        element = value_digest(value, root=f"{type(module).__name__}.array()[{index}]")
    except ValueKeyError as e:
        e.note = "array() values must be data (numbers, text, paths, arrays) or mpipipe.refs references"
        raise
    return value_hexdigest((base, index, element))


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
        return [Shard(0, None, _shard_key(module, base, None, None))], False
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise PlanError(f"module {module.name()!r}: array() must return a list of values (or None), got "
                        f"{type(values).__name__}")
    element = getattr(values, "element", None)
    if callable(element) and type(values).__module__ == "mpipipe.refs":
        items = [values.element(i) for i in range(len(values))]
    else:
        items = list(values)
    return [Shard(i, v, _shard_key(module, base, i, v)) for i, v in enumerate(items)], True


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
