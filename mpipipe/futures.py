"""A `concurrent.futures.Executor` on mpipipe's scheduler, for libraries that accept any executor.

`submit(fn, *args)` becomes a one-task node of the world's live run and `map`
one node with a task per item, so calls are journaled, retried when a worker
dies, and share the executors with modules scheduled at the same time. An
exception raised by `fn` is the future's exception (not retried, as with any
executor); a task whose worker died on every attempt fails with
TaskFailedError and the path of its log.
"""
from __future__ import annotations

import base64
import concurrent.futures
import itertools
import os
import pickle
import threading
import traceback
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from mpipipe.errors import PlanError, TaskFailedError
from mpipipe.logical.node import Context, LogicalPlan, Node

INLINE_BYTES = 16 * 1024  # results up to this size travel in the journal record; larger ones in a file
_CALLS = itertools.count(1)


def _pack(outcome: Tuple[bool, Any], spill: str) -> Dict[str, Any]:
    """A call's (ok, value or exception), small enough for the journal or else written to `spill`."""
    from mpipipe import pickling

    try:
        blob = pickling.dumps(outcome)
    except Exception as e:  # noqa: BLE001  an unpicklable result or exception
        blob = pickling.dumps((False, TypeError(f"the call's {'result' if outcome[0] else 'exception'} cannot be "
                                                   f"pickled: {type(e).__name__}: {e}")))
    if len(blob) <= INLINE_BYTES:
        return {"inline": base64.b64encode(blob).decode()}
    from mpipipe.module_cache import write_result

    write_result(spill, outcome)
    return {"file": spill}


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a task, attached as its __cause__."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


def _unpack(value: Dict[str, Any]) -> Tuple[bool, Any]:
    if "inline" in value:
        ok, got = pickle.loads(base64.b64decode(value["inline"]))
    else:
        with open(value["file"], "rb") as f:
            ok, got = pickle.load(f)
        os.remove(value["file"])
    if ok:
        return True, got
    if isinstance(got, tuple):
        exc, text = got
        exc.__cause__ = RemoteTraceback(text)
        return False, exc
    return False, got


class CallNode(Node):
    """Partition i calls fn(*args, **kwargs) of calls[i]; the outcome, even an exception, is the task's value."""

    kind = "call"

    def __init__(self, ctx: Context, calls: List[Tuple[Callable[..., Any], tuple, dict]], name: str,
                 spill_dir: str) -> None:
        self.calls = calls
        self.spill_dir = spill_dir
        super().__init__(ctx, (), len(calls), name=name)

    def describe(self) -> str:
        names = sorted({getattr(fn, "__qualname__", type(fn).__name__) for fn, _, _ in self.calls})
        return "calls of " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")

    def run_task(self, task: Any) -> Any:
        fn, args, kwargs = self.calls[task.partition]
        try:
            outcome: Tuple[bool, Any] = (True, fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001  the caller's future gets it, with the remote traceback as its cause
            outcome = (False, (e, traceback.format_exc()))
        return _pack(outcome, os.path.join(self.spill_dir, f"{task.partition}.a{task.attempt}.pkl"))


class Executor(concurrent.futures.Executor):
    """submit / map / shutdown on a world's executors (`launcher`: a WorldLauncher; default: the job's platform).

    The first call joins the world: under mpiexec the executor ranks serve from
    there and exit, so build the Executor early in the script.
    """

    def __init__(self, launcher: Any = None) -> None:
        from mpipipe.launchers.world import WorldLauncher

        self.launcher = launcher or WorldLauncher()
        if not isinstance(self.launcher, WorldLauncher):
            raise PlanError("mpipipe.futures.Executor runs on a world launcher (DirectLauncher, MpiLauncher or "
                            f"WorldLauncher), got {type(self.launcher).__name__}")
        self._lock = threading.Lock()
        self._pending: "set[concurrent.futures.Future[Any]]" = set()
        self._waiting: "List[Tuple[Tuple[Callable[..., Any], tuple, dict], concurrent.futures.Future[Any]]]" = []
        self._queued = False  # a request for the waiting calls is in the scheduler's inbox
        self._world: Optional[Tuple[Any, Any]] = None  # (JobManager, Runtime) once joined
        self._batches: "Dict[int, Tuple[str, List[concurrent.futures.Future[Any]]]]" = {}  # node id -> its calls
        self._shutdown = False

    def _submit_calls(self, calls: List[Tuple[Callable[..., Any], tuple, dict]]
                      ) -> "List[concurrent.futures.Future[Any]]":
        """Queue calls; those that arrive before the scheduler takes them become one node (one task each)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._world is None or self._world[1].closed:
            self._world = self.launcher.join()  # joining builds the config and finds the world: once
        jm, rt = self._world
        futures: "List[concurrent.futures.Future[Any]]" = [concurrent.futures.Future() for _ in calls]
        for f in futures:
            f.set_running_or_notify_cancel()
        with self._lock:
            self._waiting.extend(zip(calls, futures))
            self._pending.update(futures)
            queue_one = not self._queued
            self._queued = True
        if queue_one:
            spill = os.path.join(rt.job_dir, "futures")
            jm.live(rt).submit_later(lambda: self._take(spill)).add_done_callback(self._settle)
        return futures

    def _take(self, spill: str) -> Tuple[List[Any], List[Any]]:
        """On the scheduler's thread: every call waiting so far, as one node."""
        with self._lock:
            items, self._waiting = self._waiting, []
            self._queued = False
        if not items:
            return [], []
        name = f"calls-{os.getpid()}-{next(_CALLS)}"
        ctx = Context()
        node = CallNode(ctx, [call for call, _ in items], name, os.path.join(spill, name))
        self._batches[node.id] = (name, [f for _, f in items])
        plan = LogicalPlan(ctx, node)
        return plan.nodes, plan.infos

    def _settle(self, whole: "concurrent.futures.Future[Any]") -> None:
        """Each call's future from its task's outcome (on the scheduler's thread)."""
        try:
            outcomes = whole.result()
        except BaseException as e:  # noqa: BLE001  the run failed: every call of it fails with it
            with self._lock:
                batches, self._batches = list(self._batches.values()), {}
            for _, futures in batches:
                self._fail_all(futures, e)
            return
        for nid, outcome in outcomes.items():
            name, futures = self._batches.pop(nid)
            failed = {f.partition: f for f in outcome.failures}
            for p, fut in enumerate(futures):
                try:
                    if p in outcome.records:
                        ok, value = _unpack(outcome.records[p].get("v") or {})
                        fut.set_result(value) if ok else fut.set_exception(value)
                    elif p in failed:
                        fut.set_exception(TaskFailedError(failed[p].render()))
                    else:
                        fut.set_exception(TaskFailedError(f"call {name}[{p}] did not run (the run stopped first)"))
                except BaseException as e:  # noqa: BLE001  e.g. a result file that cannot be read
                    fut.set_exception(e)
            self._fail_all(futures, None)

    def _fail_all(self, futures: "List[concurrent.futures.Future[Any]]", error: Optional[BaseException]) -> None:
        for fut in futures:
            if error is not None and not fut.done():
                fut.set_exception(error)
        with self._lock:
            self._pending.difference_update(futures)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        return self._submit_calls([(fn, args, kwargs)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """All calls go out at once as one node (one task each); results come back in order."""
        calls = [(fn, tuple(args), {}) for args in zip(*iterables)]
        if not calls:
            return iter(())
        futures = self._submit_calls(calls)

        def results() -> Iterator[Any]:
            for fut in futures:
                yield fut.result(timeout)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with wait, block until every submitted call has its outcome. The world stays open
        for the script's other work and closes at exit."""
        self._shutdown = True
        if wait:
            with self._lock:
                pending = list(self._pending)
            concurrent.futures.wait(pending)
