"""Modules: a unit of work with an optional array of iteration values, run by a launcher.

`__init__` runs where the pipeline is driven; `run` runs wherever the launcher
puts it (another process, maybe another host), once per array element, in no
guaranteed order. A module's identity for the result cache is its class, its
`version()`, its configuration (instance attributes minus `transient`) and the
iteration value and index, so re-running a pipeline reuses what it computed.

A module may hold its settings as one config (`Module(config)`, e.g. a Hydra
DictConfig, kept as `self.config` and keyed by value), and `Module.build(config,
**overrides)` makes a module from a config whose `_target_` names its class.

A module that defines `checkpoint(*args, **kwargs)` can be resumed: the
launcher calls it (on SIGTERM, or when the run calls `self.save_checkpoint()`)
with the run's arguments, and saves what it returns next to the run's result;
the next start of that run (a requeue, a retry, the same command again)
continues from there instead of starting over.
"""
from __future__ import annotations

import copy
import importlib
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mpipipe.errors import ConfigError, MpipipeError, PlanError
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
    - `checkpoint(iteration_value, iteration_index)` (optional, submitit's
      contract): what to run instead when this run starts again: a copy of the
      module holding its progress, a DelayedSubmission(module, *args), or None.
      It is called on SIGTERM and by `self.save_checkpoint()`; a kill -9 keeps
      only what the last save_checkpoint() saved.
    """

    transient: Sequence[str] = ()
    config: Any = None  # the module's config when it was built with one (Module(config))

    def __init__(self, config: Any = None) -> None:
        # only a given config becomes an attribute: modules that call super().__init__() keep their cache keys
        if config is not None:
            self.config = config

    @classmethod
    def build(cls, config: Any, **overrides: Any) -> "Module":
        """The module a config describes: its `_target_` class, called with the config (overrides merged in).

        As stopes' StopesModule.build: the config (a DictConfig, a structured
        config or dataclass, or a mapping) must have a `_target_`; the
        overrides are merged into a copy (deeply, OmegaConf's merge for
        OmegaConf configs), interpolations are resolved, and the target is
        called with the whole config as its one argument. A config with a
        nested `config` key (stopes' older layout) is called with its keys as
        keyword arguments, the overrides going into `config`.
        """
        return build_module(config, overrides, cls)

    def save_checkpoint(self) -> bool:
        """Save what checkpoint() returns now, so that a run killed later (kill -9, a lost node) restarts
        from here; False when no launcher runs this module in this process (nothing saved)."""
        run = current_run()
        if run is None:
            return False
        return run.save(ASKED)

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
        items = [element(i) for i in range(len(values))]
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


# --- building a module from a config ---------------------------------------------------------------------------


def locate_target(target: str, where: str) -> Any:
    """The object named by "pkg.mod:Name" or "pkg.mod.Name" (Name may be dotted: Outer.Inner)."""
    module_name, colon, attr = target.partition(":")
    if colon:
        candidates = [(module_name, attr)]
    else:
        parts = target.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    if not candidates or not all(p for m, a in candidates for p in m.split(".") + a.split(".")):
        raise ConfigError(f"{where}: _target_ {target!r} is not a class path; write it as pkg.module:Class")
    for module_name, attr in candidates:
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # no such module: try a shorter module path
            raise ConfigError(f"{where}: _target_ {target!r}: importing {module_name!r} failed: {e}") from None
        except ImportError as e:
            raise ConfigError(f"{where}: _target_ {target!r}: importing {module_name!r} failed: {e}") from None
        obj: Any = found
        for name in attr.split("."):
            if not hasattr(obj, name):
                raise ConfigError(f"{where}: _target_ {target!r}: {module_name!r} has no attribute {attr!r}; "
                                  "check the spelling")
            obj = getattr(obj, name)
        return obj
    raise ConfigError(f"{where}: _target_ {target!r} cannot be imported: no such module; check the spelling and "
                      "that its folder is on PYTHONPATH")


def _omegaconf() -> Any:
    """OmegaConf's module if the program uses it (a config of that kind cannot exist otherwise)."""
    return sys.modules.get("omegaconf")


def _is_omegaconf(config: Any) -> bool:
    oc = _omegaconf()
    return oc is not None and isinstance(config, (oc.DictConfig, oc.ListConfig))


def _merged(base: Any, overrides: Any) -> Any:
    """A plain mapping with `overrides` merged in depth (mappings into mappings, anything else replaced)."""
    if isinstance(base, Mapping) and isinstance(overrides, Mapping):
        out = dict(base)
        for key, value in overrides.items():
            out[key] = _merged(out[key], value) if key in out else value
        return out
    return overrides


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _prepared(config: Any, overrides: Dict[str, Any], where: str) -> Any:
    """A copy of the config with the overrides merged in and its interpolations resolved, detached from the
    config it came from (so that a module does not carry the whole pipeline's config with it)."""
    if is_dataclass(config) and not isinstance(config, type):
        try:
            from omegaconf import OmegaConf
        except ImportError:
            return replace(config, **overrides) if overrides else copy.deepcopy(config)
        config = OmegaConf.structured(config)
    if _is_omegaconf(config):
        from omegaconf import OmegaConf

        try:
            merged = OmegaConf.merge(config, overrides) if overrides else copy.deepcopy(config)
            OmegaConf.resolve(merged)  # the copy still sees its parent: ${...} to the rest of the config work
            return OmegaConf.create(merged)  # detached, of the same structured type
        except Exception as e:  # noqa: BLE001  OmegaConf raises its own error classes
            raise ConfigError(f"{where}: the overrides {sorted(overrides)} cannot be merged into the config "
                              f"({_one_line(e)}); use keys the config has") from None
    if isinstance(config, Mapping):
        return _merged(copy.deepcopy(dict(config)), overrides)
    if overrides:
        raise ConfigError(f"{where}: overrides need a mapping, a dataclass or an OmegaConf config, got a "
                          f"{type(config).__name__}; pass the config as one of those")
    return config


def _target_of(config: Any) -> Any:
    if isinstance(config, Mapping) and not _is_omegaconf(config):
        return config.get("_target_")
    return getattr(config, "_target_", None)


def build_module(config: Any, overrides: Dict[str, Any], expected: type) -> "Module":
    """Module.build(): see there."""
    where = f"{expected.__name__}.build()"
    target = _target_of(config)
    if not isinstance(target, str) or not target.strip():
        found = type(config).__name__
        raise ConfigError(f"{where}: the config ({found}) has no _target_ naming the module's class; add "
                          "_target_: pkg.module.ClassName to it")
    cls = locate_target(target.strip(), where)
    nested = (config.get("config") if isinstance(config, Mapping) else getattr(config, "config", None)) is not None
    if nested:
        warnings.warn(f"{target}: a config with a nested `config` key is stopes' older layout; put the module's "
                      "settings at the top level of its config", DeprecationWarning, stacklevel=3)
        full = _prepared(config, {"config": overrides} if overrides else {}, where)
        items = full.items() if isinstance(full, Mapping) else vars(full).items()
        kwargs = {str(k): v for k, v in items if k != "_target_"}
        built = _call_target(cls, target, where, (), kwargs)
    else:
        built = _call_target(cls, target, where, (_prepared(config, overrides, where),), {})
    if not isinstance(built, Module):
        raise ConfigError(f"{where}: _target_ {target!r} made a {type(built).__name__}, not a module; name a "
                          "subclass of mpipipe.Module (or StopesModule)")
    if not isinstance(built, expected):
        raise ConfigError(f"{where}: _target_ {target!r} made a {type(built).__name__}, which is not a "
                          f"{expected.__name__}; call Module.build() or name a subclass of {expected.__name__}")
    return built


def _call_target(cls: Any, target: str, where: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    if not callable(cls):
        raise ConfigError(f"{where}: _target_ {target!r} names a {type(cls).__name__}, not a class")
    return cls(*args, **kwargs)


# --- checkpoints ---------------------------------------------------------------------------------------------------


class DelayedSubmission:
    """What to run when a stopped run starts again: `function(*args, **kwargs)` (for a module, its run()).

    A module's checkpoint() may return one (submitit's DelayedSubmission has the same shape and works too),
    a module (run again with the same iteration value and index), or None (nothing to save).
    """

    def __init__(self, function: Any, *args: Any, **kwargs: Any) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def call(self) -> Any:
        if isinstance(self.function, Module):
            return self.function.run(*self.args, **self.kwargs)
        return self.function(*self.args, **self.kwargs)

    @property
    def module(self) -> Optional["Module"]:
        return self.function if isinstance(self.function, Module) else None

    def __repr__(self) -> str:
        return f"DelayedSubmission({type(self.function).__name__}, {len(self.args)} arg(s), {sorted(self.kwargs)})"


def can_checkpoint(module: Any) -> bool:
    """Whether the module defines checkpoint() (submitit's contract)."""
    return callable(getattr(module, "checkpoint", None))


def as_resume(returned: Any, running: "DelayedSubmission", label: str) -> Optional[DelayedSubmission]:
    """What checkpoint() returned, as the run to start next time (None: nothing to save)."""
    if returned is None:
        return None
    if isinstance(returned, DelayedSubmission):
        return returned
    if isinstance(returned, Module):
        return DelayedSubmission(returned, *running.args, **running.kwargs)
    function = getattr(returned, "function", None)
    args, kwargs = getattr(returned, "args", None), getattr(returned, "kwargs", None)
    if callable(function) and isinstance(args, (tuple, list)) and isinstance(kwargs, Mapping):
        return DelayedSubmission(function, *args, **dict(kwargs))  # submitit's DelayedSubmission
    raise PlanError(f"{label}: checkpoint() returned a {type(returned).__name__}; return a copy of the module "
                    "holding its progress, a DelayedSubmission(module, *args), or None")


class RunInProgress:
    """The run this thread executes for a launcher, so that save_checkpoint() knows what to save and where."""

    def __init__(self, running: DelayedSubmission, label: str, saver: Callable[[DelayedSubmission, str], bool]) -> None:
        self.running = running
        self.label = label
        self._saver = saver
        self.saving = False

    def save(self, why: str) -> bool:
        """Call checkpoint() of the running module and save what it returns; False when there is nothing."""
        module = self.running.function
        if not can_checkpoint(module) or self.saving:
            return False
        self.saving = True
        try:
            resume = as_resume(module.checkpoint(*self.running.args, **self.running.kwargs), self.running,
                               self.label)
            return False if resume is None else self._saver(resume, why)
        finally:
            self.saving = False


_RUNS = threading.local()
ASKED = "asked by the run"  # why a checkpoint saved through save_checkpoint() was saved


def current_run() -> Optional[RunInProgress]:
    """The run in progress in this thread, or None."""
    return getattr(_RUNS, "run", None)


def set_current_run(run: Optional[RunInProgress]) -> Optional[RunInProgress]:
    """Make `run` the current one; returns the one it replaces (to put back after)."""
    previous = current_run()
    _RUNS.run = run
    return previous


class RunStopped(BaseException):
    """Raised in a run stopped by SIGTERM after its checkpoint was saved. Like KeyboardInterrupt it is not an
    Exception, so that `except Exception` in a run does not swallow the stop."""


def module_requirements(module: "Module") -> Any:
    """requirements() in a form launchers take: an object with `as_resources()` (stopes' Requirements) is
    converted; anything else is returned as it is."""
    spec = module.requirements()
    convert = getattr(spec, "as_resources", None)
    return convert() if callable(convert) and not isinstance(spec, type) else spec
