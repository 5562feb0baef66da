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
    import cloudpickle

    try:
        blob = cloudpickle.dumps(outcome)
    except Exception as e:  # noqa: BLE001  an unpicklable result or exception
        blob = cloudpickle.dumps((False, TypeError(f"the call's {'result' if outcome[0] else 'exception'} cannot be "
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
    """Partition i calls fn(*calls[i][0], **calls[i][1]); the outcome, even an exception, is the task's value."""

    kind = "call"

    def __init__(self, ctx: Context, fn: Callable[..., Any], calls: List[Tuple[tuple, dict]], name: str,
                 spill_dir: str) -> None:
        self.fn = fn
        self.calls = calls
        self.spill_dir = spill_dir
        super().__init__(ctx, (), len(calls), name=name)

    def describe(self) -> str:
        return f"call {getattr(self.fn, '__qualname__', self.fn)!r}"

    def run_task(self, task: Any) -> Any:
        args, kwargs = self.calls[task.partition]
        try:
            outcome: Tuple[bool, Any] = (True, self.fn(*args, **kwargs))
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
        self._shutdown = False

    def _submit_calls(self, fn: Callable[..., Any], calls: List[Tuple[tuple, dict]]) -> "List[concurrent.futures.Future[Any]]":
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        jm, rt = self.launcher.join()
        n = next(_CALLS)
        label = getattr(fn, "__name__", "call")
        name = f"{label if label.isidentifier() else 'call'}-{os.getpid()}-{n}"
        ctx = Context()
        node = CallNode(ctx, fn, calls, name, os.path.join(rt.job_dir, "futures", name))
        plan = LogicalPlan(ctx, node)
        futures: "List[concurrent.futures.Future[Any]]" = [concurrent.futures.Future() for _ in calls]
        for f in futures:
            f.set_running_or_notify_cancel()
        with self._lock:
            self._pending.update(futures)
        live = jm.live(rt)
        done = live.submit(plan.nodes, plan.infos)

        def settle(whole: "concurrent.futures.Future[Any]") -> None:
            try:
                outcome = whole.result()[node.id]
                failed = {f.partition: f for f in outcome.failures}
                for p, fut in enumerate(futures):
                    if p in outcome.records:
                        ok, value = _unpack(outcome.records[p].get("v") or {})
                        fut.set_result(value) if ok else fut.set_exception(value)
                    elif p in failed:
                        fut.set_exception(TaskFailedError(failed[p].render()))
                    else:
                        fut.set_exception(TaskFailedError(f"call {name}[{p}] did not run (the run stopped first)"))
            except BaseException as e:  # noqa: BLE001
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                with self._lock:
                    self._pending.difference_update(futures)

        done.add_done_callback(settle)
        return futures

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        return self._submit_calls(fn, [(args, kwargs)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """All calls go out at once as one node (one task each); results come back in order."""
        calls = [(tuple(args), {}) for args in zip(*iterables)]
        if not calls:
            return iter(())
        futures = self._submit_calls(fn, calls)

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
