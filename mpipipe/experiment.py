"""Experiments: tasks submitted from plain (not asyncio) code, run in the background, awaited at the end.

The form experimaestro users write::

    from mpipipe import Task, Param, experiment

    class Train(Task):
        epochs: Param[int] = 10
        def execute(self):
            ...

    with experiment("/data/xp", "sweep", launcher=SlurmLauncher(gpus_per_node=1)) as xp:
        Train(epochs=5).submit()                          # returns at once
        Train.C(epochs=50).submit(launcher=bigger)        # another launcher for this one
    # leaving the block waited for both; failures raise ExperimentFailed

`submit()` hands the task to a launcher's `schedule()` on an event loop that
the experiment runs in a thread of its own, so submitting never blocks. The
launcher is resolved (a DynamicLauncher's choice) and prepared (a world
joined) in the submitting thread first, because joining a world may re-launch
the script or make this rank an executor, which only the main thread may do.

A task is any mpipipe.Module (`xp.submit(module)` returns a
concurrent.futures.Future of its result); `Task` is a Module whose parameters
are annotated attributes set by keyword (`Param[...]` values identify the
result in the cache, `Meta[...]` ones do not) and whose body is `execute()`.
A task given as a parameter of another task submitted to the same experiment
runs first: the dependent one waits for it, and fails if it failed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import re
import sys
import threading
import types
import typing
import weakref
from pathlib import Path
from typing import Annotated, Any, Dict, Iterator, List, Optional, Tuple, TypeVar, Union

from mpipipe.errors import ConfigError, MpipipeError, PlanError
from mpipipe.launchers.base import Launcher
from mpipipe.module import Module, module_label

__all__ = ["Experiment", "ExperimentFailed", "Meta", "Param", "Task", "current", "experiment"]

T = TypeVar("T")

# seconds to wait for cancelled submissions to clean up (a SLURM launcher runs scancel) before leaving
CANCEL_GRACE = 60.0


class _Kind:
    """The marker inside Param[...] / Meta[...] annotations; pickles as the same module-level object."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Any:
        return (_kind, (self.name,))

    def __repr__(self) -> str:
        return self.name


_KINDS = {name: _Kind(name) for name in ("Param", "Meta")}


def _kind(name: str) -> _Kind:
    return _KINDS[name]


#: An attribute that identifies the task's result (part of the cache key): ``epochs: Param[int] = 10``.
Param = Annotated[T, _KINDS["Param"]]
#: An attribute that does not change the result (left out of the cache key): ``log_every: Meta[int] = 100``.
Meta = Annotated[T, _KINDS["Meta"]]

_MISSING = object()
_FIELDS: "weakref.WeakKeyDictionary[type, Dict[str, Tuple[str, Any]]]" = weakref.WeakKeyDictionary()
_TEXT_KIND = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*(Param|Meta)\s*\[")


def _annotation_kind(annotation: Any) -> Optional[str]:
    """"Param", "Meta" or None for one annotation (an object, or a string left by postponed evaluation)."""
    if isinstance(annotation, str):
        m = _TEXT_KIND.match(annotation)
        return m.group(1) if m else None
    if typing.get_origin(annotation) is Annotated:
        for item in getattr(annotation, "__metadata__", ()):
            if isinstance(item, _Kind):
                return item.name
    return None


def task_fields(cls: type) -> Dict[str, Tuple[str, Any]]:
    """name -> (kind, default or _MISSING) for the Param/Meta attributes of a Task class and its bases."""
    found = _FIELDS.get(cls)
    if found is not None:
        return found
    fields: Dict[str, Tuple[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        raw = klass.__dict__.get("__annotations__", {})
        try:  # evaluated when possible (an alias such as `P = Param` then counts too)
            hints = typing.get_type_hints(klass, include_extras=True) if raw else {}
        except Exception:  # noqa: BLE001  a name only the defining scope knows: read the text instead
            hints = {}
        for name, annotation in raw.items():
            kind = _annotation_kind(hints.get(name, annotation)) or _annotation_kind(annotation)
            if kind is not None:
                fields[name] = (kind, _MISSING)
    for name, (kind, _none) in fields.items():  # the most derived class's value is the default
        fields[name] = (kind, next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), _MISSING))
    _FIELDS[cls] = fields
    return fields


class Task(Module):
    """A single-run Module written the experimaestro way: annotated parameters, `execute()`, `submit()`.

    `Task(name=value, ...)` (or `Task.C(...)`) sets the annotated attributes;
    one without a default must be given. `Param[...]` attributes are the task's
    identity in the result cache, `Meta[...]` ones are not. `execute()` is the
    body (what `run()` calls) and its return value is the task's result.
    """

    def __init__(self, **values: Any) -> None:
        fields = task_fields(type(self))
        unknown = sorted(set(values) - set(fields))
        if unknown:
            known = ", ".join(sorted(fields)) or "none (annotate attributes with Param[...] or Meta[...])"
            raise ConfigError(f"{type(self).__name__} has no parameter {', '.join(map(repr, unknown))}; "
                              f"its parameters: {known}")
        for name, (_kind_name, default) in fields.items():
            if name in values:
                setattr(self, name, values[name])
            elif default is not _MISSING:
                setattr(self, name, copy.deepcopy(default))  # its own copy: a default list is not shared
            else:
                raise ConfigError(f"{type(self).__name__} needs a value for its parameter {name!r} (it has no "
                                  f"default); pass {type(self).__name__}({name}=...)")

    @classmethod
    def C(cls, **values: Any) -> "Task":  # noqa: N802  the name experimaestro code calls
        """The same as calling the class: a configured task, not yet submitted."""
        return cls(**values)

    def execute(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define execute()")

    def run(self, iteration_value: Any = None, iteration_index: int = 0) -> Any:
        return self.execute()

    def cache_config(self) -> Dict[str, Any]:
        """Module's identity minus the Meta[...] attributes."""
        meta = {name for name, (kind, _d) in task_fields(type(self)).items() if kind == "Meta"}
        return {k: v for k, v in super().cache_config().items() if k not in meta}

    def submit(self, launcher: Optional[Launcher] = None) -> "Task":
        """Run this task in the background in the current experiment (on `launcher`, else the experiment's).
        Returns the task itself, which may be given to other tasks as a parameter (they then run after it)."""
        Experiment.current().submit(self, launcher=launcher)
        return self

    def result(self, timeout: Optional[float] = None) -> Any:
        """What execute() returned, once it ran (waits for it); raises its failure."""
        future = self.__dict__.get("_submission")
        if future is None:
            raise PlanError(f"task {module_label(self)} was not submitted; call submit() inside `with experiment(...)`")
        return future.result(timeout)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_submission", None)  # a Future of this process: never sent to where the task runs
        return state


class ExperimentFailed(MpipipeError):
    """Tasks of an experiment failed: `failures` holds (task, exception) pairs, in submission order."""

    exit_code = 1

    def __init__(self, name: str, submitted: int, failures: List[Tuple[Module, BaseException]]) -> None:
        self.failures = failures
        shown = "\n".join(f"- {module_label(module)}: {error}" for module, error in failures)
        super().__init__(f"experiment {name}: {len(failures)} of {submitted} submitted task(s) failed; each "
                         f"failure follows\n{shown}")


class _Submission:
    def __init__(self, module: Module, future: "concurrent.futures.Future[Any]") -> None:
        self.module = module
        self.future = future


def _nested(value: Any, depth: int = 0) -> Iterator[Any]:
    """The value, and what its lists, tuples, sets and dict values hold (a few levels deep)."""
    yield value
    if depth < 3:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple, set,
                                                                                                  frozenset)) else ()
        for item in items:
            yield from _nested(item, depth + 1)


class Experiment:
    """A `with` block that runs submitted tasks in the background and waits for all of them when it ends.

    `workdir` becomes the job's data root (job folders and the result cache go
    under it) and `name` its job id, as init(data_root=..., job_id=...) would:
    the command line and SP_* variables still win; None keeps the job's own.
    `launcher` runs every task submitted without one (default: the job's own
    world, mpipipe.WorldLauncher()). Leaving the block waits for every
    submitted task and raises ExperimentFailed if any failed; leaving it with
    an exception (or Ctrl-C while waiting) cancels the tasks still running.
    """

    _stack: List["Experiment"] = []
    _lock = threading.Lock()

    def __init__(self, workdir: Union[str, Path, None] = None, name: Optional[str] = None, *,
                 launcher: Optional[Launcher] = None) -> None:
        if launcher is not None and not isinstance(launcher, Launcher):
            raise ConfigError(f"experiment(launcher=...) takes a mpipipe Launcher, got {type(launcher).__name__}")
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise ConfigError(f"an experiment's name is a non-empty string (it becomes the job id), got {name!r}")
        self.workdir = None if workdir is None else Path(workdir).expanduser().absolute()
        self.name = name
        self.launcher = launcher
        self._submissions: List[_Submission] = []
        self._by_id: Dict[int, _Submission] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._restore: Optional[Dict[str, Any]] = None
        self._state = "new"

    # --- the block ------------------------------------------------------------------------------------------

    @classmethod
    def current(cls) -> "Experiment":
        """The innermost experiment whose block is running."""
        with cls._lock:
            if not cls._stack:
                raise PlanError("submit() needs a running experiment: call it inside `with experiment(...):`")
            return cls._stack[-1]

    def __enter__(self) -> "Experiment":
        if self._state != "new":
            raise PlanError(f"experiment {self.label} was already used; make a new experiment(...) for a new block")
        self._configure()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mpipipe-experiment-{self.label}",
                                        daemon=True)
        self._thread.start()
        self._state = "open"
        with Experiment._lock:
            Experiment._stack.append(self)
        return self

    def __exit__(self, etype: Any, value: Any, tb: Any) -> None:
        try:
            if etype is None:
                self.wait()
            else:
                self._cancel_running()
        finally:
            self._state = "closed"
            with Experiment._lock:
                if self in Experiment._stack:
                    Experiment._stack.remove(self)
            self._stop_loop()
            self._unconfigure()

    @property
    def label(self) -> str:
        return self.name or "(unnamed)"

    def _configure(self) -> None:
        """workdir and name as init() options, so that launchers see them (lower than command line and SP_*)."""
        if self.workdir is None and self.name is None:
            return
        from mpipipe import session

        previous = session.init_options()
        options = dict(previous)
        if self.workdir is not None:
            options["data_root"] = str(self.workdir)
        if self.name is not None:
            options["job_id"] = self.name
        session.init(**options)
        self._restore = previous

    def _unconfigure(self) -> None:
        if self._restore is not None:
            from mpipipe import session

            session.init(**self._restore)
            self._restore = None

    # --- submitting ------------------------------------------------------------------------------------------

    def submit(self, module: Module, launcher: Optional[Launcher] = None) -> "concurrent.futures.Future[Any]":
        """Schedule `module` on `launcher` (else the experiment's) in the background; a Future of its result.

        Submitting the same object again returns the first submission's Future.
        """
        if self._state != "open":
            raise PlanError(f"experiment {self.label} is not running; submit inside its `with` block")
        if not isinstance(module, Module):
            raise PlanError(f"submit() takes a mpipipe.Module or Task, got {type(module).__name__}; subclass "
                            "mpipipe.Task (or mpipipe.Module) for the work to run")
        if launcher is not None and not isinstance(launcher, Launcher):
            raise ConfigError(f"submit(launcher=...) takes a mpipipe Launcher, got {type(launcher).__name__}")
        known = self._by_id.get(id(module))
        if known is not None:
            return known.future
        chosen = launcher or self.launcher or self._default_launcher()
        target = chosen.resolve(module)
        target.prepare()  # here, not in the loop's thread: joining a world may re-launch or serve
        after = [self._by_id[id(v)] for v in self._parameters(module) if id(v) in self._by_id]
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._run(module, target, after), self._loop)
        submission = _Submission(module, future)
        self._submissions.append(submission)
        self._by_id[id(module)] = submission
        if isinstance(module, Task):
            module.__dict__["_submission"] = future
        return future

    def _default_launcher(self) -> Launcher:
        from mpipipe.launchers.world import WorldLauncher

        self.launcher = WorldLauncher()
        return self.launcher

    @staticmethod
    def _parameters(module: Module) -> Iterator[Any]:
        for name, value in vars(module).items():
            if not name.startswith("_"):
                yield from _nested(value)

    @staticmethod
    async def _run(module: Module, target: Launcher, after: List[_Submission]) -> Any:
        for dependency in after:
            try:
                await asyncio.wrap_future(dependency.future)
            except asyncio.CancelledError:
                raise
            except BaseException:
                raise PlanError(f"task {module_label(module)} did not run: it takes task "
                                f"{module_label(dependency.module)}, which failed") from None
        return await target.schedule(module)

    # --- waiting -----------------------------------------------------------------------------------------------

    def wait(self) -> None:
        """Until every submitted task ended; raises ExperimentFailed naming those that failed."""
        futures = [s.future for s in self._submissions]
        try:
            concurrent.futures.wait(futures)
        except BaseException:
            self._cancel_running()
            raise
        failures: List[Tuple[Module, BaseException]] = []
        for s in self._submissions:
            if s.future.cancelled():
                failures.append((s.module, PlanError("it was cancelled")))
            elif s.future.exception() is not None:
                failures.append((s.module, s.future.exception()))  # type: ignore[arg-type]
        if failures:
            raise ExperimentFailed(self.label, len(self._submissions), failures)

    def _cancel_running(self) -> None:
        """Cancel what still runs, and give it CANCEL_GRACE seconds to clean up (scancel its arrays)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=CANCEL_GRACE)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(CANCEL_GRACE + 5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            try:  # threads of asyncio.to_thread (squeue calls) end before the loop does
                asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(CANCEL_GRACE)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            loop.call_soon_threadsafe(loop.stop)
        thread.join(CANCEL_GRACE)
        if not thread.is_alive():
            loop.close()

    def __repr__(self) -> str:
        where = f" in {self.workdir}" if self.workdir else ""
        return f"<experiment {self.label}{where}: {len(self._submissions)} task(s), {self._state}>"


#: The innermost running experiment (experimaestro code calls experiment.current()).
current = Experiment.current


class _CallableModule(types.ModuleType):
    """This module, callable: `experiment(workdir, name, launcher=...)` makes an Experiment.

    `mpipipe.experiment` is both this module and the name experimaestro code
    calls. Python binds an imported submodule over a package attribute of the
    same name, so a class called `experiment` would be hidden by the module (or
    hide it) depending on import order; instead the module itself is the
    callable, and its attribute `experiment` is the module too, so every import
    form gives the same object.
    """

    def __call__(self, workdir: Union[str, Path, None] = None, name: Optional[str] = None, *,
                 launcher: Optional[Launcher] = None) -> Experiment:
        return Experiment(workdir, name, launcher=launcher)


sys.modules[__name__].__class__ = _CallableModule
experiment = sys.modules[__name__]
