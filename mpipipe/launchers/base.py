"""The Launcher: where the runs of a module go, and the result cache in front of it.

`await launcher.schedule(module)` looks every run of the module up in the
result cache, hands the missing ones to the launcher's `run_shards` (a world's
executors, a SLURM array, ...), and returns the result, or the results in
array order. Runs that fail after their retries raise ModuleFailed, which
carries the other runs' results and every failure.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from mpipipe.errors import ConfigError, PlanError
from mpipipe.launchers.connectors import check_connector
from mpipipe.module import Module, ModuleFailed, Shard, ShardFailure, module_label, shards_of
from mpipipe.module_cache import ResultCache, read_result, write_result

log = logging.getLogger("mpipipe.modules")


def say(text: str) -> None:
    """One line about a module's progress, on stderr like the scheduler's progress."""
    print(f"[mpipipe] {text}", file=sys.stderr, flush=True)


def run_shard(module: Module, shard: Shard, result_path: str) -> Dict[str, Any]:
    """The body of one run, wherever it executes: load its value, run it, write its result atomically."""
    from mpipipe.refs import resolve

    value = resolve(shard.value)
    result = module.run(value, shard.index)
    write_result(result_path, result)
    return {"result": result_path}


@dataclass
class ShardJob:
    """What a launcher is asked to run: the module, the runs still missing, and where each writes its result."""

    module: Module
    label: str
    shards: List[Shard]
    paths: List[str]
    is_array: bool


class Launcher:
    """Base of all launchers: `priority` (for DynamicLauncher), `schedule()`, `config(**overrides)`.

    A subclass implements `run_shards(job)`, returning the failures (empty when
    every run wrote its result); `describe()` names where the runs go.
    `cache=False` runs everything and keeps nothing; `cache_dir` overrides
    --cache-dir for this launcher. `connector` is where processes start: only
    this machine (None or LocalConnector) is supported.
    """

    def __init__(self, priority: float = 0, *, cache: bool = True, cache_dir: Optional[str] = None,
                 tags: Sequence[str] = (), connector: Any = None) -> None:
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise ConfigError(f"a launcher's priority must be a number, got {priority!r}")
        self.priority = priority
        self.cache = bool(cache)
        self.cache_dir = cache_dir
        self.tags = tuple(tags)
        self.connector = check_connector(connector, type(self).__name__)

    # --- what subclasses define ------------------------------------------------------

    async def run_shards(self, job: ShardJob) -> List[ShardFailure]:
        raise NotImplementedError(f"{type(self).__name__} does not define run_shards()")

    def describe(self) -> str:
        return type(self).__name__

    def prepare(self) -> None:
        """Called before the cache is read (a world launcher joins its world here)."""

    def resolve(self, module: Module) -> "Launcher":
        """The launcher that runs `module` if it is scheduled now: this one, or for a launcher that chooses
        among others (DynamicLauncher, LauncherMap) the one it chooses. Lets a caller join a world from the
        main thread before scheduling from another."""
        return self

    # --- derived launchers -------------------------------------------------------------

    def config(self, **overrides: Any) -> "Launcher":
        """A copy of this launcher with some of its settings changed (the original is untouched)."""
        new = copy.copy(self)
        for name, value in overrides.items():
            if name.startswith("_") or not hasattr(self, name) or callable(getattr(self, name)):
                settable = sorted(k for k in vars(self) if not k.startswith("_"))
                raise ConfigError(f"{type(self).__name__} has no setting {name!r}; settable: {', '.join(settable)}")
            setattr(new, name, check_connector(value, type(self).__name__) if name == "connector" else value)
        return new

    # --- scheduling --------------------------------------------------------------------

    def result_cache(self) -> ResultCache:
        from mpipipe.session import current_config

        config = current_config()
        return ResultCache(self.cache_dir or config.cache_dir or os.path.join(config.data_root, "cache"))

    def _scratch(self, label: str) -> str:
        """Where results go when the cache is off: under the job directory, removed once read."""
        from mpipipe.session import current_config

        config = current_config()
        return os.path.join(config.data_root, str(config.job_id), "module-results", label, f"{os.getpid()}-{time.time_ns()}")

    async def schedule(self, module: Module) -> Any:
        """Run the module (every element of its array) and return its result (a list, in array order)."""
        if not isinstance(module, Module):
            raise PlanError(f"schedule() takes a mpipipe.Module, got {type(module).__name__}")
        shards, is_array = shards_of(module)
        label = module_label(module)
        if not shards:  # an empty array: nothing to run, and no world to join for it
            say(f"module {label}: an empty array, nothing to run")
            return []
        self.prepare()
        results: List[Any] = [None] * len(shards)
        cache = self.result_cache()
        missing: List[Shard] = []
        for shard in shards:
            found, value = cache.lookup(module, shard) if self.cache else (False, None)
            if found:
                results[shard.index] = value
            else:
                missing.append(shard)
        cached = len(shards) - len(missing)
        runs = f"{len(shards)} run(s)" if is_array else "1 run"
        if not missing:
            say(f"module {label}: {runs}, all found in the cache")
            return results if is_array else results[0]
        scratch = None if self.cache else self._scratch(label)
        paths = [cache.result_path(module, s) if scratch is None else os.path.join(scratch, f"{s.index}.pkl")
                 for s in missing]
        say(f"module {label}: {runs}, {cached} found in the cache, {len(missing)} to run on {self.describe()}")
        started = time.monotonic()
        failures = await self.run_shards(ShardJob(module, label, missing, paths, is_array))
        failed = {f.index for f in failures}
        for shard, path in zip(missing, paths):
            if shard.index in failed:
                continue
            try:
                results[shard.index] = read_result(path)
            except (OSError, EOFError, ValueError) as e:
                failures.append(ShardFailure(shard.index, shard.value, f"its result {path} cannot be read: {e}"))
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        took = time.monotonic() - started
        if failures:
            say(f"module {label}: {len(failures)} of {len(missing)} run(s) failed ({took:.1f} s)")
            raise ModuleFailed(label, results, failures)
        say(f"module {label}: {len(missing)} run(s) done on {self.describe()} in {took:.1f} s")
        return results if is_array else results[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} priority={self.priority}>"
