"""A live run: nodes submitted from any thread (asyncio code, an Executor) run on one open world.

One scheduler run lasts while work is pending: the first submission starts a
pump thread that opens the journal and drives the scheduler; later
submissions join that run while it goes on, so modules gathered with asyncio
share the executors at the same time. When nothing is left, the run ends
(an "end" record in the journal) and the thread leaves; the next submission
starts a new run. The pump thread is the only one that talks to the executors
while it lives.

A submission may name a launcher for some of its nodes (SLURM, say): their
due tasks are handed to that launcher instead of the executors, and their
outcomes come back to the same run, journaled like the executors' own.

A run that fails (tasks failed for good, a submission refused) leaves the world
open for the next; only a broken world (a rank lost, a protocol error) closes it.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from mpipipe.errors import JobInterrupted, MpipipeError, PlanError, PlatformError, TaskFailedError
from mpipipe.execution.transport import Backoff, PeerLost

log = logging.getLogger("mpipipe.service")

#: what `submit_later`'s make() returns: (nodes, infos), or (nodes, infos, node id -> launcher)
Made = Union[Tuple[List[Any], List[Any]], Tuple[List[Any], List[Any], Dict[int, Any]]]
#: (node id -> launcher, the submission's nodes, the run's handover result queue) -> node id -> submit function
External = Callable[[Dict[int, Any], List[Any], Any], Dict[int, Callable[[List[Any]], None]]]


def world_survives(error: BaseException, scheduler: Any = None) -> bool:
    """Whether the world can serve another run after `error` ended one: yes for a failed run (tasks failed
    for good, a plan or journal refused) with nothing left running on the executors; no for a lost rank, a
    protocol error or an interrupt."""
    if not isinstance(error, MpipipeError) or isinstance(error, (PlatformError, JobInterrupted)):
        return False
    return scheduler is None or scheduler.finished()


@dataclass
class NodeOutcome:
    """What one node of a submission gave: partition -> its journal record or the RangeBlock of the task range it
    finished in (journal.resolve and value_of read either), and its failures after retries."""

    name: str
    records: Dict[int, Any]
    failures: List[Any]  # scheduler.Failure


@dataclass
class _Submission:
    pending: Set[int]
    future: "concurrent.futures.Future[Dict[int, NodeOutcome]]"
    outcomes: Dict[int, NodeOutcome] = field(default_factory=dict)


@dataclass
class _Request:
    nodes: List[Any]
    infos: List[Any]
    resources: Dict[int, Any]
    group_sizes: Dict[int, int]
    future: "concurrent.futures.Future[Dict[int, NodeOutcome]]"
    make: Optional[Callable[[], Made]] = None  # builds nodes and infos (and launchers) when taken
    launchers: Dict[int, Any] = field(default_factory=dict)  # node id -> the launcher that runs its tasks


class LiveRun:
    """Runs submitted nodes on an open world: `make_scheduler()` builds an empty scheduler for each run,
    `ship(nodes)` sends node code to the executors, `on_error(e)` closes the world after a fatal error,
    `external(launchers, nodes, results)` gives the submit functions of nodes that launchers run."""

    def __init__(self, make_scheduler: Callable[[], Any], ship: Callable[[List[Any], List[Any]], None],
                 on_error: Callable[[BaseException], None], after_run: Optional[Callable[[], None]] = None,
                 external: Optional[External] = None) -> None:
        self._make = make_scheduler
        self._ship = ship
        self._on_error = on_error
        self._after_run = after_run
        self._external = external
        self._lock = threading.Lock()
        self._inbox: List[_Request] = []
        self._thread: Optional[threading.Thread] = None
        self._last: Optional[threading.Thread] = None
        self._stopping = False
        self._broken: Optional[BaseException] = None

    def submit(self, nodes: List[Any], infos: List[Any], resources: Optional[Dict[int, Any]] = None,
               group_sizes: Optional[Dict[int, int]] = None, launchers: Optional[Dict[int, Any]] = None
               ) -> "concurrent.futures.Future[Dict[int, NodeOutcome]]":
        """Queue nodes (with their code) to run; the future gives each node's outcome once all have settled.
        `launchers` (node id -> launcher) hands those nodes' tasks to their launcher instead of the executors;
        the launcher retries them."""
        return self._enqueue(_Request(list(nodes), list(infos), dict(resources or {}), dict(group_sizes or {}),
                                      concurrent.futures.Future(), launchers=dict(launchers or {})))

    def _enqueue(self, request: _Request) -> "concurrent.futures.Future[Dict[int, NodeOutcome]]":
        with self._lock:
            if self._broken is not None:
                raise PlatformError(f"this world stopped after an error ({self._broken}); run the script again "
                                    "(cached results are kept)")
            if self._stopping:
                raise JobInterrupted("the world is closing; nothing more can be submitted")
            self._inbox.append(request)
            if self._thread is None:  # a new run; it waits for the one before to close its journal
                self._thread = threading.Thread(target=self._loop, args=(self._last,), name="mpipipe-live-run",
                                                daemon=True)
                self._last = self._thread
                self._thread.start()
        return request.future

    def submit_later(self, make: Callable[[], Made]) -> "concurrent.futures.Future[Dict[int, NodeOutcome]]":
        """Like submit(), but the nodes are built by `make()` on the pump thread when it takes the request, so
        work that keeps arriving until then (one call after another) joins one node instead of many. make()
        returns (nodes, infos), or (nodes, infos, launchers) as submit() takes them."""
        return self._enqueue(_Request([], [], {}, {}, concurrent.futures.Future(), make))

    def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Block until the current run (if any) has ended."""
        with self._lock:
            thread = self._last
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """End the current run now (the world is closing): pending submissions fail as interrupted."""
        with self._lock:
            self._stopping = True
            thread = self._last
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the pump thread -----------------------------------------------------------

    def _hand_over(self, scheduler: Any, req: _Request) -> None:
        """Before the nodes join the run: those with a launcher get its submit function."""
        if not req.launchers:
            return
        unknown = sorted(set(req.launchers) - {i.id for i in req.infos})
        if unknown:
            raise PlanError(f"launchers name node id(s) {unknown}, which the submission does not have")
        if self._external is None:
            raise PlanError("this world runs nodes on its executors only; it was made without launcher hand-over")
        scheduler.hand_over(self._external(req.launchers, req.nodes, scheduler.handover.results))

    def _loop(self, previous: Optional[threading.Thread]) -> None:
        if previous is not None:
            previous.join()
        scheduler: Any = None  # what make_scheduler() returns, once made
        started = False
        by_node: Dict[int, _Submission] = {}
        subs: List[_Submission] = []

        def settled(nid: int) -> None:
            sub = by_node.pop(nid, None)
            if sub is None:
                return
            st = scheduler.nodes[nid]
            failures = [f for f in scheduler.failures if f.node == st.info.name]
            sub.outcomes[nid] = NodeOutcome(st.info.name, dict(st.outputs), failures)
            sub.pending.discard(nid)
            if not sub.pending:
                subs.remove(sub)
                if not sub.future.done():
                    sub.future.set_result(sub.outcomes)

        try:
            scheduler = self._make()
            scheduler.on_settled = settled
            scheduler.start()
            started = True
            backoff = Backoff()
            while True:
                with self._lock:
                    batch, self._inbox = self._inbox, []
                    stopping = self._stopping
                    if not batch and not subs and (stopping or scheduler.finished()):
                        self._thread = None
                        break
                if stopping:
                    raise JobInterrupted("the world was closed while modules were still running; run the script "
                                         "again (finished runs are cached)")
                for req in batch:
                    if req.make is not None:
                        try:
                            made = req.make()
                            req.nodes, req.infos = made[0], made[1]
                            req.launchers = dict(made[2]) if len(made) > 2 else {}  # type: ignore[misc]
                        except Exception as e:  # noqa: BLE001  the submitter hears of it, the run goes on
                            req.future.set_exception(e)
                            continue
                    if not req.infos:
                        req.future.set_result({})
                        continue
                    sub = _Submission({i.id for i in req.infos}, req.future)
                    try:  # the executors need the code of the nodes they run, not of those a launcher runs
                        self._ship([n for n in req.nodes if n.id not in req.launchers], req.infos)
                    except PeerLost as e:
                        raise PlatformError(f"executor rank {e.rank} died; run the script again") from e
                    subs.append(sub)
                    for i in req.infos:
                        by_node[i.id] = sub
                    try:
                        self._hand_over(scheduler, req)
                        scheduler.add(req.infos, {k: v for k, v in req.resources.items() if k not in req.launchers},
                                      {k: v for k, v in req.group_sizes.items() if k not in req.launchers},
                                      reuse=False)
                    except MpipipeError as e:
                        subs.remove(sub)
                        for i in req.infos:
                            by_node.pop(i.id, None)
                        req.future.set_exception(e)
                if scheduler.stop_reason == "failed":  # --fail-fast: the first failure ends the run
                    raise TaskFailedError("\n".join(f.render() for f in scheduler.failures[:5]))
                if scheduler.step() or batch:
                    backoff.reset()
                else:
                    scheduler.t.wait(backoff.next())
        except BaseException as e:  # noqa: BLE001  every waiting submitter hears of it
            error = e if isinstance(e, MpipipeError) else PlatformError(f"the live run failed: {type(e).__name__}: {e}")
            if isinstance(e, PeerLost):
                error = PlatformError(f"executor rank {e.rank} died; run the script again (finished runs are cached)")
            broken = not isinstance(e, JobInterrupted) and not world_survives(e, scheduler)
            with self._lock:
                self._thread = None
                if broken:
                    self._broken = error
                waiting = [s.future for s in subs] + [r.future for r in self._inbox]
                self._inbox = []
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(error)
            if scheduler is not None and isinstance(e, JobInterrupted):
                scheduler.stop_reason = "interrupted"
            if not broken and not isinstance(e, JobInterrupted):
                log.warning("live run failed; the world stays open: %s", error)
            if broken:
                log.error("live run stopped: %s", error)
                try:
                    self._on_error(error)
                except Exception:  # noqa: BLE001
                    log.exception("closing the world after an error failed")
        finally:
            if started and scheduler is not None:
                try:
                    scheduler.finish()
                    if self._after_run is not None:
                        self._after_run()
                except Exception:  # noqa: BLE001
                    log.exception("ending the run in the journal failed")
