"""A `concurrent.futures.Executor` on mpipipe's launchers, for libraries that accept any executor.

Calls waiting when the scheduler takes them become one node of the world's
live run, one task per call, so calls are journaled (`mpipipe status`, `logs`,
the report) and share the world with modules scheduled at the same time. On a
world launcher (the default) the executors run them: placed, and retried when a
worker dies. On any other launcher (SLURM, a DynamicLauncher, ...) the node's
tasks are handed to that launcher as one module array, one element per call,
which it retries itself. Calls may state what they need (`resources=`, any form
a node takes): they are placed on an executor that can serve them, or turned
into the launcher's job options. An exception raised by `fn` is the future's
exception (not retried, as with any executor); a call whose worker or job died
on every attempt fails with TaskFailedError and the path of its log.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, cast

from mpipipe.callfuture import CallFuture, settle_many, start_many
from mpipipe.calls import Call, CallNode, RemoteTraceback, unpack_outcome  # noqa: F401  (RemoteTraceback: public)
from mpipipe.errors import PlanError, RequirementError, TaskFailedError
from mpipipe.launchers.base import Launcher
from mpipipe.launchers.world import WorldLauncher
from mpipipe.logical.plan import Context, LogicalPlan

_CALLS = itertools.count(1)
_UNSET: Any = object()


def _label(name: str) -> str:
    """A name usable for nodes and work folders."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")[:60] or "calls"


def _spec_key(spec: Any, label: str) -> Tuple[Any, ...]:
    """What tells two calls' resources apart (raises on a malformed spec, at submit time)."""
    if spec is None:
        return (None,)
    if callable(spec):
        raise RequirementError(f"calls {label!r}: resources must be static (a requirement string, dict or "
                               f"Resources), got the function {getattr(spec, '__qualname__', spec)!r}; evaluate it "
                               "for each call and pass its result")
    from mpipipe.resources import NodeResources

    nr = NodeResources(spec, label)
    return (str(nr.static), nr.extra.get("partition"), tuple(nr.extra.get("extra_args") or ()))


class Executor(concurrent.futures.Executor):
    """submit / map / shutdown on mpipipe's launchers.

    `launcher`: a world launcher (default: WorldLauncher(), the job's platform)
    or any other Launcher, which runs the calls' tasks as module arrays. `resources`:
    what each call needs unless submit_calls() says otherwise (a requirement string,
    dict or Resources). `name`: the name of the nodes or arrays the calls become.

    Calls are journaled by the job's world (on another launcher too), which the
    first call joins (or call join()): under mpiexec the executor ranks serve from
    there and exit, so build and join the Executor early in the script.
    """

    def __init__(self, launcher: Any = None, *, resources: Any = None, name: str = "calls") -> None:
        self.launcher = launcher or WorldLauncher()
        if not isinstance(self.launcher, Launcher):
            raise PlanError(f"mpipipe.futures.Executor runs on a launcher (WorldLauncher, MpiLauncher, "
                            f"SlurmLauncher, ...), got {type(self.launcher).__name__}")
        self.on_world = isinstance(self.launcher, WorldLauncher)
        self.name = str(name)
        _spec_key(resources, _label(self.name))
        self.resources = resources
        self._key = (_label(self.name), None) + _spec_key(resources, _label(self.name))  # what submit() uses
        # calls wait in a deque: submit() appends, the scheduler's thread takes them from the other end (each
        # step atomic, so neither locks); _queued is cleared before the calls are taken, so a call that comes
        # after they were taken always asks again
        self._pending: "set[concurrent.futures.Future[Any]]" = set()
        self._waiting: "Deque[Tuple[Tuple[Any, ...], Any, Call, concurrent.futures.Future[Any]]]" = deque()
        self._queued = False  # a request for the waiting calls is in the scheduler's inbox
        self._world: Optional[Tuple[Any, Any]] = None  # (JobManager, Runtime) once joined
        self._shutdown = False

    # --- submitting -------------------------------------------------------------------

    def join(self) -> "Executor":
        """Join the world now (the launcher's, or the job's when another launcher runs the calls): executor
        ranks serve here and exit; rank 0 returns."""
        if self._world is None or self._world[1].closed:
            world = self.launcher if self.on_world else WorldLauncher()
            self._world = world.join()  # joining builds the config and finds the world: once
        return self

    def submit_calls(self, calls: Sequence[Call], *, resources: Any = _UNSET, name: Optional[str] = None,
                     describe: Optional[str] = None) -> "List[concurrent.futures.Future[Any]]":
        """Queue calls (fn, args, kwargs) needing `resources` each (default: the executor's); calls waiting
        together with the same resources, name and description run as one node or one array. `describe`
        is what status, the report and SLURM's job comment say the calls are."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        spec = self.resources if resources is _UNSET else resources
        label = _label(name or self.name)
        key = (label, describe) + _spec_key(spec, label)
        self.join()
        futures: "List[concurrent.futures.Future[Any]]" = [CallFuture() for _ in calls]
        if not futures:
            return futures
        self._pending.update(futures)
        # a call may come as a list [fn, args, kwargs]: kept as a tuple, checked where it runs
        self._waiting.extend([(key, spec, cast(Call, tuple(call)), f) for call, f in zip(calls, futures)])
        if not self._queued:
            self._queued = True
            self._ask_for_calls()
        return futures

    def _ask_for_calls(self) -> None:
        """Ask the world's live run to take the waiting calls (the calls that come before it does join them)."""
        try:
            assert self._world is not None
            jm, rt = self._world
            spill = os.path.join(rt.job_dir, "futures")
            live = jm.live(rt)
            live.submit_later(lambda: self._take_for_run(live, spill)).add_done_callback(self._placeholder)
        except BaseException as e:  # noqa: BLE001  a world that stopped: nothing will take these calls
            for _, _, waiting in self._take().values():
                self._fail_all(waiting, e)
            raise

    def _take(self) -> "Dict[Tuple[Any, ...], Tuple[Any, List[Call], List[concurrent.futures.Future[Any]]]]":
        """Every call waiting so far, grouped by (name, resources) in the order they came."""
        self._queued = False
        take = self._waiting.popleft
        items = [take() for _ in range(len(self._waiting))]
        groups: "Dict[Tuple[Any, ...], Tuple[Any, List[Call], List[concurrent.futures.Future[Any]]]]" = {}
        if not items:
            return groups
        starts = start_many([item[3] for item in items])
        first = items[0][0]
        if all(starts) and all(item[0] == first for item in items):  # the usual batch: submit() calls only
            groups[first] = (items[0][1], [item[2] for item in items], [item[3] for item in items])
            return groups
        for (key, spec, call, fut), start in zip(items, starts):
            if not start:  # cancelled while it waited: it never runs
                self._pending.discard(fut)
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = (spec, [], [])
            group[1].append(call)
            group[2].append(fut)
        return groups

    # --- into the world's live run -----------------------------------------------------------

    def _take_for_run(self, live: Any, spill: str) -> Tuple[List[Any], List[Any]]:
        """On the scheduler's thread: the waiting calls, one node per (name, resources), submitted with their
        resources (on a world) or their launcher (which then runs the node's tasks); the request that asked
        for this carries no node of its own."""
        groups = self._take()
        if not groups:
            return [], []
        batches: "Dict[int, Tuple[str, List[concurrent.futures.Future[Any]]]]" = {}
        nodes: List[Any] = []
        infos: List[Any] = []
        try:
            for key, (spec, calls, futures) in groups.items():
                name = f"{key[0]}-{os.getpid()}-{next(_CALLS)}"
                ctx = Context()  # one per node: a node sent to a launcher travels with its context alone
                node = CallNode(ctx, calls, name, os.path.join(spill, name), resources=spec, description=key[1],
                                label=key[0])
                plan = LogicalPlan(ctx, node)
                nodes.extend(plan.nodes)
                infos.extend(plan.infos)
                batches[node.id] = (name, futures)
            if self.on_world:
                submitted = live.submit(nodes, infos, {n.id: n.resources for n in nodes if n.resources is not None})
            else:
                submitted = live.submit(nodes, infos, launchers={n.id: self.launcher for n in nodes})
        except BaseException as e:  # noqa: BLE001  a closing world: these calls fail with it
            for _, _, futures in groups.values():
                self._fail_all(futures, e)
            return [], []
        submitted.add_done_callback(lambda whole: self._settle(whole, batches))
        return [], []

    def _placeholder(self, whole: "concurrent.futures.Future[Any]") -> None:
        """The request that took the waiting calls failed before they were taken: they fail with it."""
        if whole.exception() is not None:
            groups = self._take()
            for _, _, futures in groups.values():
                self._fail_all(futures, whole.exception())

    def _settle(self, whole: "concurrent.futures.Future[Any]",
                batches: "Dict[int, Tuple[str, List[concurrent.futures.Future[Any]]]]") -> None:
        """Each call's future from its task's outcome (on the scheduler's thread)."""
        from mpipipe.execution.journal import value_of  # rank 0's: executor ranks never load the journal

        try:
            outcomes = whole.result()
        except BaseException as e:  # noqa: BLE001  the run failed: every call of it fails with it
            for _, futures in batches.values():
                self._fail_all(futures, e)
            return
        for nid, (name, futures) in batches.items():
            outcome = outcomes.get(nid)
            failed = {f.partition: f for f in outcome.failures} if outcome is not None else {}
            records = outcome.records if outcome is not None else {}
            settled: List[Tuple[Any, bool, Any]] = []
            for p, fut in enumerate(futures):
                record = records.get(p)
                try:
                    if record is not None:
                        value = value_of(record, p)
                        if type(value) is not dict:  # a plain result, as most tiny calls return
                            settled.append((fut, True, value))
                        else:
                            settled.append((fut,) + unpack_outcome(value))
                    elif p in failed:
                        settled.append((fut, False, TaskFailedError(failed[p].render())))
                    else:
                        settled.append((fut, False,
                                        TaskFailedError(f"call {name}[{p}] did not run (the run stopped first)")))
                except BaseException as e:  # noqa: BLE001  e.g. a result file that cannot be read
                    settled.append((fut, False, e))
            settle_many(settled)  # in one step: the futures nobody waits on yet need no Condition
            self._fail_all(futures, None)

    def _fail_all(self, futures: "List[concurrent.futures.Future[Any]]", error: Optional[BaseException]) -> None:
        for fut in futures:
            if error is not None and not fut.done():
                fut.set_exception(error)
        self._pending.difference_update(futures)

    # --- the Executor interface ----------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        """One call with the executor's resources and name: queued at once, sent with the calls around it."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        world = self._world
        if world is None or world[1].closed:
            self.join()
        fut = CallFuture()
        self._pending.add(fut)
        self._waiting.append((self._key, self.resources, (fn, args, kwargs), fut))
        if not self._queued:
            self._queued = True
            self._ask_for_calls()
        return fut

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """All calls go out at once as one node (one task each); results come back in order."""
        calls: List[Call] = [(fn, tuple(args), {}) for args in zip(*iterables)]
        if not calls:
            return iter(())
        futures = self.submit_calls(calls)

        def results() -> Iterator[Any]:
            for fut in futures:
                yield fut.result(timeout)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with cancel_futures, calls not yet sent fail as cancelled (calls already running finish,
        and arrays still running at exit are cancelled); with wait, block until every submitted call has its
        outcome. A world stays open for the script's other work and closes at exit."""
        self._shutdown = True
        if cancel_futures:
            for _, _, futures in self._take().values():
                for fut in futures:
                    if not (fut.cancel() or fut.done()):
                        fut.set_exception(concurrent.futures.CancelledError())
                self._fail_all(futures, None)
        if wait:
            pending = list(self._pending)
            concurrent.futures.wait(pending)
