"""Rank 0's scheduler, assembled from parts that own their state:

- graph.py (PlanGraph): what is done, due, failed, reused from the journal, and what follows;
- dispatch.py (PlainDispatch): tasks without needs, batched to ranks with room;
- placed.py (PlacedDispatch): tasks with needs, placed on ranks that can serve them;
- handover.py (Handover): tasks of launcher-run nodes, handed to their launcher;
- speculation.py (Speculation): copies of stragglers (--speculate);
- inflight.py (InFlight): tasks out on ranks, and each rank's load;
- outcomes.py (Outcomes): journaling, retries, failures, and the counts.

The Scheduler routes each due partition to the path that sends it, takes the
results, and runs the loop: start/step/add/finish, or run() for a whole plan.
Nodes may join while it runs (live runs: modules, futures).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set

from mpipipe.errors import JobInterrupted, JournalError, PlatformError, TaskFailedError
from mpipipe.execution import protocol as P
from mpipipe.execution.dispatch import PlainDispatch
from mpipipe.execution.graph import NodeRecords, NodeState, PlanGraph
from mpipipe.execution.handover import Handover, Submit
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.journal import Journal, end_record, nodes_record, run_record, task_key
from mpipipe.execution.osutil import STOP_SIGNALS, leave_hung_up_terminal
from mpipipe.execution.outcomes import Failure, Outcomes
from mpipipe.execution.pinned import PinnedDispatch
from mpipipe.execution.placed import PlacedDispatch
from mpipipe.execution.progress import NodeCount, Progress
from mpipipe.execution.roles import SchedulerRole, StateObserver
from mpipipe.execution.speculation import Speculation
from mpipipe.execution.task import EXTERNAL, OK, ExecutionPlan, OkRun, Result, Task, TaskRange
from mpipipe.execution.transport import Backoff, PeerLost, Transport
from mpipipe.logical.plan import LogicalPlan, NodeInfo

log = logging.getLogger("mpipipe.scheduler")

STATE_SECONDS = 1.0  # how often state.json is rewritten while the job runs

__all__ = ["Failure", "NodeState", "Scheduler", "SchedulerOptions"]


@dataclass(frozen=True)
class SchedulerOptions:
    """How one scheduler run behaves; built by the job manager from the job's config."""

    job_id: str
    job_dir: str
    platform: str
    max_retries: int = 2
    fail_fast: bool = False
    fresh: bool = False
    workers_per_executor: int = 1
    progress_interval: float = 2.0
    speculate: bool = False
    allow_changes: bool = False


class Scheduler:
    StateObserver = StateObserver  # smallpond's name

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """smallpond's `Scheduler(exec_plan, ...)` makes the scheduler role of a job whose executors are separate
        processes (mpipipe.execution.roles); mpipipe's own scheduler takes a transport."""
        plan = args[0] if args else kwargs.get("exec_plan")
        if cls is Scheduler and isinstance(plan, (ExecutionPlan, LogicalPlan)):
            return SchedulerRole(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, transport: Transport, infos: List[NodeInfo], roots: List[int], options: SchedulerOptions,
                 journal: Journal, resources: Optional[Dict[int, Any]] = None,
                 hosts: Optional[Dict[int, Dict[str, Any]]] = None,
                 group_sizes: Optional[Dict[int, int]] = None, pinned: Optional[Set[int]] = None,
                 senders: Optional[Set[int]] = None) -> None:
        self.t = transport
        self.options = options
        self.journal = journal
        self.roots = roots
        ranks = list(range(1, transport.size))
        self.graph = PlanGraph(infos, options.job_dir, self._route)
        self.graph.route_run = self._route_run
        self.inflight = InFlight(ranks)
        self.plain = PlainDispatch(options.workers_per_executor)
        self.placed = PlacedDispatch(self.graph, ranks, dict(hosts or {}), options.workers_per_executor,
                                     resources, group_sizes)
        self.handover = Handover(self.graph)
        self.pinned = PinnedDispatch(ranks, options.workers_per_executor, transport.size)
        self.pinned.nodes.update(pinned or ())
        self.pinned.senders.update(senders or ())
        self.graph.memory_outputs.update(senders or ())
        # MPI shuffles whose buckets the executors may drop once these readers are complete
        self.shuffle_readers = {s: [i.id for i in infos if s in i.inputs] for s in self.pinned.senders}
        self.speculation: Optional[Speculation] = (Speculation(self.graph, options.workers_per_executor)
                                                   if options.speculate else None)
        self.outcomes = Outcomes(self.graph, journal, options.job_dir, options.max_retries, options.fail_fast,
                                 lambda nid, p, attempt: self._route(nid, p, attempt, True))
        self.progress = Progress(self.graph.total, options.progress_interval)
        self.stop_reason: Optional[str] = None
        self._state_written = 0.0

    # --- what the live run and the job manager see ---------------------------------------------

    @property
    def nodes(self) -> Dict[int, NodeState]:
        return self.graph.nodes

    @property
    def failures(self) -> List[Failure]:
        return self.outcomes.failures

    @property
    def on_settled(self) -> Optional[Callable[[int], None]]:
        return self.graph.on_settled

    @on_settled.setter
    def on_settled(self, callback: Optional[Callable[[int], None]]) -> None:
        self.graph.on_settled = callback

    def hand_over(self, submit: Dict[int, Submit]) -> None:
        """Nodes whose tasks their launchers run (node -> hand a list of tasks over); results come back on
        `handover.results`. Their launchers place them: executors' capacity does not limit them."""
        self.handover.submit.update(submit)
        for nid in submit:
            self.placed.resources.pop(nid, None)
            self.placed.group_sizes.pop(nid, None)

    # --- routing --------------------------------------------------------------------------------

    def _route(self, nid: int, p: int, attempt: int, front: bool) -> None:
        """A due partition goes to the path that will send it."""
        if nid in self.handover.submit:
            self.handover.push((nid, p, attempt))
        elif nid in self.pinned.nodes:
            self.pinned.push((nid, p, attempt), front)
        elif nid in self.placed.resources:
            self.placed.push((nid, p, attempt), front)
        else:
            self.plain.push((nid, p, attempt), front)

    def _route_run(self, nid: int, first: int, count: int) -> None:
        """Due partitions first..first+count-1 of a node (first attempts): a plain node's wait as one run."""
        if nid in self.handover.submit or nid in self.placed.resources or nid in self.pinned.nodes:
            for p in range(first, first + count):
                self._route(nid, p, 0, False)
        else:
            self.plain.push_run(nid, first, count)

    def _make_task(self, nid: int, p: int, attempt: int, resources: Optional[Dict[str, Any]] = None) -> Task:
        fp, prefix, digits = self.graph.shape(nid)
        return Task(self.inflight.new_tid(), nid, p, attempt, task_key(fp, p), self.graph.input_groups(nid, p),
                    f"{prefix}{p:0{digits}d}", resources)

    def _make_range(self, nid: int, first: int, count: int) -> Optional[TaskRange]:
        """Partitions first..first+count-1 as one TaskRange, or None when the node's partitions read different
        inputs (pointwise) and must go one by one."""
        info = self.graph.nodes[nid].info
        if info.pointwise and info.inputs:
            return None
        fp, prefix, digits = self.graph.shape(nid)
        return TaskRange(self.inflight.new_tids(count), nid, first, count, 0, fp, self.graph.input_groups(nid, first),
                         prefix, digits)

    def _dispatch(self) -> bool:
        expand = self.graph.expand
        waiting = bool(self.plain.ready or self.placed.ready or self.pinned.ready)
        sent = self.handover.send(self.inflight, self._make_task, expand, waiting)
        sent = self.pinned.send(self.t, self.inflight, self._make_task) or sent
        unplaceable: List[Any] = []
        sent = self.placed.send(self.t, self.inflight, self._make_task, expand, unplaceable) or sent
        for item, error in unplaceable:
            self._fail_unplaceable(item, error)
        started = self.speculation.started_at if self.speculation is not None else None
        return self.plain.send(self.t, self.inflight, self._make_task, self._make_range, expand, started) or sent

    def _fail_unplaceable(self, item: Any, error: str) -> None:
        """A task no executor can serve fails for good, without an attempt."""
        nid, p, _attempt = item
        task = Task(self.inflight.new_tid(), nid, p, self.options.max_retries, self.graph.key(nid, p), (),
                    self.graph.output_path(nid, p))
        res = Result(task.tid, "failed", {"error": error, "where": "rank 0 (placement)",
                                          "log": (os.path.join(self.options.job_dir, "logs", "rank-0.log"), 0, None)})
        self.outcomes.failed_attempts += 1
        self._follow_up(task, res)

    # --- results --------------------------------------------------------------------------------

    def _on_results(self, rank: int, results: List[Result]) -> None:
        finished: Dict[int, List[Any]] = {}  # node -> the records (and task ranges) of its tasks finished here
        spec = self.speculation
        try:
            for res in results:
                if type(res) is OkRun:
                    self._on_ok_run(rank, res, finished)
                    continue
                entry = self.inflight.pop(res.tid)
                if entry is None:
                    self.outcomes.drop_stray(res)
                    continue
                task = entry[0]
                if rank == EXTERNAL:
                    self.handover.back(task)
                if spec is not None and spec.is_loser(res.tid):
                    spec.discard(task, res)
                    self.outcomes.drop_value_file(res)
                    continue
                if self.placed.slots:
                    self.placed.task_back(res.tid)
                info = res.info
                t0, t1 = info.get("t0", 0.0), info.get("t1", 0.0)
                dur = t1 - t0 if t1 > t0 else 0.0
                self.plain.observe(dur)
                if res.status == OK:
                    if spec is not None:
                        spec.succeeded(task, res.tid, dur)
                    self.outcomes.ok(rank, task, info, t0, t1, dur, finished)
                else:
                    self.outcomes.attempt_failed(rank, task, res, t0, t1)
                    if spec is not None and spec.failed(res.tid):  # the other copy may still succeed
                        continue
                    self._follow_up(task, res)
        finally:
            self.outcomes.journal_finished(rank, finished)

    def _on_ok_run(self, rank: int, run: OkRun, finished: Dict[int, List[Any]]) -> None:
        """Consecutive successes of one task range, as columns."""
        got = self.inflight.pop_run(run.tid, run.count)
        if got is None:  # an earlier run's: nobody waits for it
            for out in run.outputs:
                if out:
                    self.outcomes.drop_stray(Result(0, OK, {"output": out}))
            return
        rng, _rank = got
        if run.count:
            self.plain.observe(self.outcomes.ok_run(rank, rng, run, finished))

    def _follow_up(self, task: Task, res: Result) -> None:
        if res.info.get("oom"):
            self.placed.more_memory(task)
        if self.outcomes.follow_up(task, res, retries_here=task.node not in self.handover.submit):
            blocked = self.graph.is_blocked
            self.plain.drop(blocked)
            self.placed.drop(blocked)
            self.pinned.drop(blocked)
            self.handover.drop(blocked)
        if self.outcomes.stop_reason is not None:
            self.stop_reason = self.outcomes.stop_reason

    # --- the loop -------------------------------------------------------------------------------

    def finished(self) -> bool:
        """Nothing due, nothing in flight that anybody waits for (copies that lost a race are not)."""
        waiting = (self.speculation.waiting_for(self.inflight) if self.speculation is not None
                   else len(self.inflight))
        return (waiting == 0 and not self.plain.ready and not self.placed.ready and not self.pinned.ready
                and not self.graph.expanding and not self.handover.ready)

    def _check_plan_unchanged(self, previous: Dict[str, str], infos: Optional[List[NodeInfo]] = None) -> None:
        """A journal written by another version of the plan is refused, unless changes are allowed."""
        changed = self.graph.changed_since(previous, infos)
        if changed and not self.options.allow_changes:
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            shown = ", ".join(repr(n) for n in changed[:5]) + more
            raise JournalError(
                f"the plan changed since job {self.options.job_id} was journaled: node(s) {shown} (code, options or "
                f"input data); run with --fresh to start over, or --allow-changes to re-run only what changed and "
                f"what depends on it")
        if changed:
            log.warning("re-running changed node(s) %s and what depends on them", ", ".join(changed))

    def start(self) -> None:
        """Open the journal, learn what earlier runs finished, and start the ready nodes."""
        self.placed.check_requirements()
        self.journal.open(fresh=self.options.fresh)
        if not self.options.fresh:
            self.graph.done_before = self.journal.replay_by_node()
            try:
                self._check_plan_unchanged(self.journal.previous_plan)
            except JournalError:
                self.journal.close()
                raise
        self.journal.append(run_record(self.options.job_id,
                                       {st.info.name: st.info.fingerprint for st in self.graph.nodes.values()},
                                       executors=self.t.size - 1, platform=self.options.platform,
                                       total=self.graph.total))
        self.graph.activate(list(self.graph.nodes))

    def add(self, infos: List[NodeInfo], resources: Optional[Dict[int, Any]] = None,
            group_sizes: Optional[Dict[int, int]] = None, reuse: bool = True) -> None:
        """Nodes joining a live run (their inputs are nodes of this run or new ones); each is reported to
        `on_settled` once it has nothing more to come. With reuse=False their tasks always
        run (the caller keeps its own cache) and the journal's earlier plans are not compared with them."""
        new_infos = [i for i in infos if i.id not in self.graph.nodes]
        if reuse:
            self._check_plan_unchanged(self.journal.previous_plan, new_infos)
        else:
            self.graph.always_run.update(i.id for i in new_infos)
        new = self.graph.insert(new_infos)
        self.progress.total += sum(i.npartitions for i in new)
        self.placed.add(dict(resources or {}), dict(group_sizes or {}))
        if not new:
            return
        self.journal.append(nodes_record({i.name: i.fingerprint for i in new}))
        self.graph.watched.update(i.id for i in new)
        self.graph.activate([i.id for i in new])
        for i in new:
            self.graph.settle(i.id)

    def _node_counts(self) -> List[NodeCount]:
        return self.outcomes.node_counts(self.inflight.running_by_node())

    def step(self) -> bool:
        """One turn of the loop: take results, send work, keep the journal and the progress current.
        Returns whether anything happened (the caller backs off when nothing did)."""
        got = self.t.poll()
        external = self.handover.take_results()
        if external:
            got.append((EXTERNAL, (P.RESULTS, external)))
        for src, (kind, payload) in got:
            if kind == P.RESULTS:
                self._on_results(src, payload)
            elif kind == P.FATAL:
                raise PlatformError(f"executor rank {src} stopped: {payload}")
        if got and self.shuffle_readers:
            self._drop_read_shuffles()
        sent = self._dispatch()
        if self.speculation is not None and not sent and not self.plain.ready and not self.placed.ready \
                and not self.pinned.ready and not self.graph.expanding:
            # a launcher's task runs where its launcher puts it; a pinned task, and a map task whose buckets
            # move over MPI, must run once, where they are
            kept = self.handover.submit.keys() | self.pinned.nodes | self.pinned.senders
            sent = self.speculation.start_copy(self.t, self.inflight, kept)
        now = time.monotonic()
        self.journal.maybe_flush(now)
        o = self.outcomes
        self.progress.maybe_print(now, o.ran, self.graph.reused, len(self.inflight), len(o.failures), o.retried,
                                  self._node_counts)
        if now - self._state_written >= STATE_SECONDS:
            self._state_written = now
            o.write_state("running", self.inflight.running_by_node())
        return bool(got or sent)

    def _drop_read_shuffles(self) -> None:
        """Tell the executors which MPI shuffles every reader has read: their buckets free the ranks' memory."""
        nodes = self.graph.nodes
        done = [s for s, readers in self.shuffle_readers.items() if all(nodes[r].complete for r in readers)]
        if done:
            for s in done:
                del self.shuffle_readers[s]
            names = [nodes[s].info.name for s in done]
            for rank in range(1, self.t.size):
                self.t.send(rank, (P.DROP, names))

    def status(self) -> str:
        return self.stop_reason or ("failed" if self.outcomes.failures else "succeeded")

    def finish(self) -> str:
        """Close the run in the journal and state.json; returns its status."""
        self.inflight.close()
        status = self.status()
        self.journal.append(end_record(status))
        self.outcomes.write_state(status, self.inflight.running_by_node())
        self.journal.close()
        return status

    def run(self) -> Dict[str, Any]:
        """A whole plan: start, loop until it finished (or a stop signal), finish; raises on failures."""
        self.start()
        interrupted: List[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            interrupted.append(signum)
            if signum == signal.SIGHUP:  # the terminal may be gone: the journal and the exit code still count
                leave_hung_up_terminal()

        old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
        backoff = Backoff()
        try:
            while not self.finished() and self.stop_reason is None:
                if interrupted:
                    self.stop_reason = "interrupted"
                    break
                if self.step():
                    backoff.reset()
                elif not self.finished():
                    self.t.wait(backoff.next())
        except PeerLost as e:
            raise PlatformError(f"executor rank {e.rank} died; the journal keeps what finished, run the same "
                                "command again to resume") from e
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.finish()
        return self._outcome()

    def _reused_from(self) -> Dict[str, int]:
        """Tasks reused from the journal, by the platform of the run that journaled them (the summary names a
        platform other than this run's)."""
        g, origins = self.graph, self.journal.origins
        if not g.reused:
            return {}
        if not origins.mixed:
            return {origins.first or "": g.reused}
        counts: Dict[str, int] = {}
        for st in g.nodes.values():
            fp = st.info.fingerprint
            before = g.done_before.get(fp) or {}
            for p, rec in st.outputs.items():
                if before.get(p) is rec:
                    where = origins.platform_of(fp, p)
                    counts[where] = counts.get(where, 0) + 1
        return counts

    def _outcome(self) -> Dict[str, Any]:
        status = self.status()
        o, spec = self.outcomes, self.speculation
        outputs: List[str] = [o for r in self.roots for o in self.graph.outputs_in_order(r)]
        stats = {"job_id": self.options.job_id, "status": status, "ran": o.ran, "cached": self.graph.reused,
                 "retried": o.retried, "failed": len(o.failures), "executors": self.t.size - 1,
                 "platform": self.options.platform, "reused_from": self._reused_from(),
                 "job_dir": self.options.job_dir, **o.data,
                 "speculated": spec.speculated if spec else 0, "speculation_won": spec.won if spec else 0,
                 "slowest": sorted(o.slowest, reverse=True)}
        self.progress.finish(self._node_counts)
        self.progress.summary(stats, outputs)
        if status == "interrupted":
            raise JobInterrupted(f"job {self.options.job_id} interrupted; its journal is saved, run the same command "
                                 "again to resume")
        if o.failures:
            shown = o.failures[:5]
            more = f"\n... and {len(o.failures) - 5} more failed task(s)" if len(o.failures) > 5 else ""
            raise TaskFailedError("\n".join(f.render() for f in shown) + more)
        return {"stats": stats, "nodes": {self.graph.name(n): NodeRecords(self.graph, n) for n in self.graph.nodes}}
