"""The Launcher: where the runs of a module go, and the result cache in front of it.

`await launcher.schedule(module)` looks every run of the module up in the
result cache, hands the missing ones to the launcher's `run_shards` (a world's
executors, a SLURM array, ...), and returns the result, or the results in
array order. Runs that fail after their retries raise ModuleFailed, which
carries the other runs' results and every failure.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from mpipipe.errors import ConfigError, PlanError
from mpipipe.launchers.connectors import check_connector
from mpipipe.module import (DelayedSubmission, Module, ModuleFailed, RunInProgress, RunStopped, Shard, ShardFailure,
                            ASKED, can_checkpoint, module_label, set_current_run, shards_of)
from mpipipe.module_cache import ResultCache, read_result, write_result
from mpipipe import console, context

log = logging.getLogger("mpipipe.modules")


def say(text: str) -> None:
    """One line about a module's progress, on the terminal like the scheduler's (mpipipe.console)."""
    console.say(f"[mpipipe] {text}")


def checkpoint_path(result_path: str) -> str:
    """Where a run's checkpoint lives: beside its result, so every start of that run finds it."""
    return f"{result_path}.checkpoint"


def load_checkpoint(result_path: str, label: str) -> Optional[Dict[str, Any]]:
    """The saved checkpoint record of a run ({"resume", "saves", "time"}), or None; a damaged or untrusted one is
    set aside with a warning (the run then starts over)."""
    path = checkpoint_path(result_path)
    if not os.path.exists(path):
        return None
    try:
        record = read_result(path)
        if not isinstance(record, dict) or not isinstance(record.get("resume"), DelayedSubmission):
            raise ValueError(f"it holds a {type(record).__name__}, not a checkpoint record")
        return record
    except Exception as e:  # noqa: BLE001  unpickling a user's module may fail in any way
        say(f"{label}: its checkpoint {path} cannot be used ({type(e).__name__}: {e}); the run starts over")
        return None


SAVES_SHOWN_EVERY = 60.0  # seconds between two lines about checkpoints a run saves itself


def _saver(result_path: str, label: str, saves: List[int]) -> Any:
    shown = [0.0]

    def save(resume: DelayedSubmission, why: str) -> bool:
        saves[0] += 1
        write_result(checkpoint_path(result_path), {"resume": resume, "saves": saves[0], "time": time.time(),
                                                    "pid": os.getpid()})
        if why != ASKED or time.monotonic() - shown[0] >= SAVES_SHOWN_EVERY:  # a run may save after every step
            say(f"{label}: checkpoint {saves[0]} saved ({why})")
            shown[0] = time.monotonic()
        return True

    return save


class _OnTerm:
    """While a run that can checkpoint is in progress in the main thread: SIGTERM saves its checkpoint, then
    stops the run (`stop`, a SLURM element) or leaves the signal to the handler before (a world's worker,
    where rank 0 decides when to stop)."""

    def __init__(self, run: RunInProgress, stop: bool) -> None:
        self.run = run
        self.stop = stop
        self.previous: Any = None
        self.installed = False
        self.stopping = False

    def __enter__(self) -> "_OnTerm":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopping:
            return  # SLURM and the batch script may both send it: one checkpoint is enough
        if self.stop:
            self.stopping = True
        try:
            saved = self.run.save("SIGTERM")
        except Exception as e:  # noqa: BLE001  a broken checkpoint() must not hide the stop
            say(f"{self.run.label}: checkpoint() failed on SIGTERM ({type(e).__name__}: {e}); nothing saved")
            saved = False
        if self.stop:
            raise RunStopped(f"stopped by SIGTERM; {'its checkpoint is saved' if saved else 'no checkpoint saved'}")
        if callable(self.previous):
            self.previous(signum, frame)


def run_shard(module: Module, shard: Shard, result_path: str, stop_on_term: bool = False) -> Dict[str, Any]:
    """The body of one run, wherever it executes: load its value, run it (from its checkpoint if one was
    saved), write its result atomically, then drop the checkpoint. With `stop_on_term`, SIGTERM saves a
    checkpoint and raises RunStopped; without, it saves one and the run goes on."""
    from mpipipe.refs import resolve

    label = f"{module_label(module)}[{shard.index}]"
    record = load_checkpoint(result_path, label) if can_checkpoint(module) else None
    if record is not None:
        running: DelayedSubmission = record["resume"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("time", 0))))
        say(f"{label}: resuming from checkpoint {record.get('saves', '?')} (saved {when})")
    else:
        running = DelayedSubmission(module, resolve(shard.value), shard.index)
    saves = [int(record.get("saves", 0)) if record is not None else 0]
    run = RunInProgress(running, label, _saver(result_path, label, saves))
    previous = set_current_run(run)
    try:
        with _OnTerm(run, stop_on_term) if can_checkpoint(running.function) else contextlib.nullcontext():
            result = running.call()
    except Exception:
        _drop_checkpoint(result_path)  # a run that raised starts over on its retry, as it would without one
        raise
    finally:
        set_current_run(previous)
    write_result(result_path, result)
    _drop_checkpoint(result_path)
    return {"result": result_path}


def _drop_checkpoint(result_path: str) -> None:
    try:
        os.unlink(checkpoint_path(result_path))
    except FileNotFoundError:
        pass


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
        config = context.current().config()
        return ResultCache(self.cache_dir or config.cache_dir or os.path.join(config.data_root, "cache"))

    def _scratch(self, label: str) -> str:
        """Where results go when the cache is off: under the job directory, removed once read."""
        config = context.current().config()
        return os.path.join(config.data_root, str(config.job_id), "module-results", label,
                            f"{os.getpid()}-{time.time_ns()}")

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
        comment = " ".join(str(module.comment() or "").split())
        if comment:
            say(f"module {label}: {comment}")
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
