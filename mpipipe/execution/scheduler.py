"""Rank 0's scheduler: expands the plan into tasks lazily, dispatches batches, journals outcomes.

Tasks of a node are created only when due (a cursor over its partitions), so
plans with millions of partitions never exist as a list. Tiny tasks are batched
per message automatically from the measured task duration; long tasks are sent
one at a time so the last ones are not stuck behind a busy rank. Tasks with
stated needs take the placed path (execution/placed.py); copies of stragglers
are execution/speculation.py; what comes back is journaled and followed up in
execution/outcomes.py; tasks of launcher-run nodes are handed to their launcher
and come back on a queue.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from mpipipe.errors import JobInterrupted, JournalError, PlatformError, TaskFailedError
from mpipipe.execution import protocol as P
from mpipipe.execution.journal import Journal
from mpipipe.execution.osutil import STOP_SIGNALS, leave_hung_up_terminal
from mpipipe.execution.outcomes import Failure, Outcomes
from mpipipe.execution.placed import NO_REQUIREMENT, PlacedDispatch, Slot
from mpipipe.execution.placement import Placement
from mpipipe.execution.progress import Progress
from mpipipe.execution.speculation import SPECULATIVE_SUFFIX, Speculation
from mpipipe.execution.task import EXTERNAL, Result, Task
from mpipipe.execution.transport import Backoff, PeerLost, Transport
from mpipipe.logical.node import NodeInfo

log = logging.getLogger("mpipipe.scheduler")

# Aim for batches that keep a worker busy this long per message; beyond it, prefer balance.
BATCH_SECONDS = 0.02
STATE_SECONDS = 1.0  # how often state.json is rewritten while the job runs
MAX_BATCH = 512
EXTERNAL_GATHER_SECONDS = 1.0  # due tasks of a launcher-run node are handed over together within this time


@dataclass
class NodeState:
    info: NodeInfo
    children: List[int] = field(default_factory=list)
    outputs: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # partition -> outcome record
    cursor: int = 0  # next partition to expand (non-pointwise nodes)
    active: bool = False
    blocked: bool = False  # an input failed for good
    failed: Set[int] = field(default_factory=set)  # partitions that failed for good

    @property
    def settled(self) -> bool:
        """Every partition finished or failed for good (or an input failed): nothing more will come."""
        return self.blocked or len(self.outputs) + len(self.failed) >= self.info.npartitions

    @property
    def complete(self) -> bool:
        return len(self.outputs) == self.info.npartitions


class Scheduler(Outcomes, PlacedDispatch, Speculation):
    tid_floor = 0  # the highest task id any run of this process used

    def __init__(self, transport: Transport, infos: List[NodeInfo], roots: List[int], *, job_dir: str,
                 job_id: str, journal: Journal, max_retries: int, fail_fast: bool, fresh: bool,
                 workers_per_executor: int, platform: str, progress_interval: float,
                 resources: Optional[Dict[int, Any]] = None, hosts: Optional[Dict[int, Dict[str, Any]]] = None,
                 group_sizes: Optional[Dict[int, int]] = None, speculate: bool = False,
                 allow_changes: bool = False) -> None:
        self.t = transport
        self.job_dir = job_dir
        self.job_id = job_id
        self.journal = journal
        self.max_retries = max_retries
        self.fail_fast = fail_fast
        self.fresh = fresh
        self.workers = workers_per_executor
        self.platform = platform
        self.nodes: Dict[int, NodeState] = {i.id: NodeState(i) for i in infos}
        for i in infos:
            for dep in i.inputs:
                self.nodes[dep].children.append(i.id)
        self.roots = roots
        self.total = sum(i.npartitions for i in infos)
        self.ready: Deque[Tuple[int, int, int]] = deque()  # (node, partition, attempt)
        self.active: Deque[int] = deque()  # nodes whose cursors still have partitions
        self.inflight: Dict[int, Tuple[Task, int]] = {}
        self.load: Dict[int, int] = {r: 0 for r in range(1, transport.size)}
        # task ids stay unique across the runs of one process: a late result of an earlier run (a speculative
        # copy that lost its race, still running when that run ended) is never taken for a task of this one
        self.next_tid = Scheduler.tid_floor
        self.done_before: Dict[str, Dict[int, Dict[str, Any]]] = {}  # fingerprint -> partition -> record
        self.failures: List[Failure] = []
        self.ran = self.cached = self.retried = self.failed_attempts = 0
        self.avg_duration: Optional[float] = None
        self.slowest: List[Tuple[float, str, int]] = []
        self.stop_reason: Optional[str] = None
        self.progress = Progress(self.total, progress_interval)
        self.data = {"bytes_written": 0, "rows_written": 0, "bytes_read": 0}
        self._state_written = 0.0
        self._state_warned = False
        self._warned_paths = False
        # speculative copies of stragglers (optional)
        self.speculate = speculate
        self.allow_changes = allow_changes
        self.started_at: Dict[int, float] = {}
        self.durations: Dict[int, List[float]] = {}
        self.twins: Dict[int, int] = {}  # tid <-> tid of its running copy
        self.losers: Set[int] = set()  # copies whose twin finished first
        self.speculated = self.speculation_won = 0
        # nodes that state their needs are placed on ranks that fit; the others take the fast path
        self.resources: Dict[int, Any] = dict(resources or {})
        for nid in group_sizes or {}:  # chunked nodes take the placed path even without a requirement
            self.resources.setdefault(nid, NO_REQUIREMENT)
        self.hosts = dict(hosts or {})
        self.placement = Placement(self.hosts, workers_per_executor) if self.resources else None
        # live runs: nodes added while running, and who wants to hear when each settles
        self.on_settled: Optional[Callable[[int], None]] = None
        self.watched: Set[int] = set()
        self.always_run: Set[int] = set()
        # nodes whose tasks a launcher runs outside the world: nid -> submit(tasks); results come back on a queue
        self.external: Dict[int, Callable[[List[Task]], None]] = {}
        self.external_ready: List[Tuple[int, int, int]] = []
        self.external_since: Optional[float] = None
        self.external_running: Dict[int, int] = {}  # node -> its tasks with their launcher now
        self.external_results: "queue.SimpleQueue[Result]" = queue.SimpleQueue()
        self.ready_placed: Deque[Tuple[int, int, int]] = deque()
        self.requirement_cache: Dict[Tuple[int, int], Any] = {}
        self.group_sizes: Dict[int, int] = dict(group_sizes or {})
        self.slots: Dict[int, Slot] = {}  # tid -> the placement it runs in
        self.placed_tasks: Dict[int, int] = {r: 0 for r in self.load}
        self.placed_slots: Dict[int, int] = {r: 0 for r in self.load}
        self.next_group = 0
        self._out_shape: Dict[int, Tuple[str, str, int]] = {}  # node -> (fingerprint, output prefix, digits)
        self._all_inputs: Dict[int, Tuple[Tuple[str, ...], ...]] = {}  # non-pointwise node -> its input paths

    # --- plan expansion --------------------------------------------------------------

    def key(self, node: int, partition: int) -> str:
        return f"{self.nodes[node].info.fingerprint}:{partition}"

    def output_path(self, node: int, partition: int) -> str:
        _fp, prefix, digits = self._shape(node)
        return f"{prefix}{partition:0{digits}d}"

    def _shape(self, node: int) -> Tuple[str, str, int]:
        """(fingerprint, output path prefix, partition digits) of a node: joining paths for every task would
        cost more than the rest of making it."""
        shape = self._out_shape.get(node)
        if shape is None:
            info = self.nodes[node].info
            shape = self._out_shape[node] = (info.fingerprint, os.path.join(self.job_dir, "outputs", info.name, "part-"),
                                             max(5, len(str(info.npartitions - 1))))
        return shape

    def _activate_ready_nodes(self, candidates: List[int]) -> None:
        for nid in candidates:
            st = self.nodes[nid]
            if st.active or st.blocked or st.info.pointwise and st.info.inputs:
                continue
            if all(self.nodes[d].complete for d in st.info.inputs):
                st.active = True
                self.active.append(nid)

    def _expand(self, want: int) -> None:
        """Move up to `want` partitions from active node cursors into the ready queue (what an earlier run
        finished is taken from the journal on the way, and not counted)."""
        while want > 0 and self.active:
            nid = self.active[0]
            st = self.nodes[nid]
            n = st.info.npartitions
            done = self._done_of(nid)
            while want > 0 and st.cursor < n:
                p = st.cursor
                st.cursor += 1
                if done is not None:
                    rec = done.get(p)
                    if rec is not None and self._still_there(nid, p, rec):
                        self.cached += 1
                        self._complete(nid, p, rec)
                        continue
                self._push(nid, p, 0)
                want -= 1
            if st.cursor >= n:
                self.active.popleft()

    def _push(self, nid: int, p: int, attempt: int, front: bool = False) -> None:
        if nid in self.external:
            self.external_ready.append((nid, p, attempt))
            return
        waiting = self.ready_placed if nid in self.resources else self.ready
        if front:
            waiting.appendleft((nid, p, attempt))
        else:
            waiting.append((nid, p, attempt))

    def _done_of(self, nid: int) -> Optional[Dict[int, Dict[str, Any]]]:
        """What earlier runs finished of a node (partition -> record), None if nothing is to be reused."""
        if not self.done_before or nid in self.always_run:
            return None
        return self.done_before.get(self.nodes[nid].info.fingerprint)

    def _still_there(self, nid: int, p: int, rec: Dict[str, Any]) -> bool:
        """A journaled partition is reused only while its output (and its value file) is still there, and only
        when the record names the very folder this partition writes: a record is never trusted with a path
        of its own choosing."""
        out = rec.get("o")
        vf = rec.get("vf")
        if vf is not None and not os.path.exists(os.path.join(self.job_dir, vf)):
            return False
        check = self.nodes[nid].info.reuse_check  # a file in the output that says what it wrote elsewhere is there
        if out is None:
            return not check
        if not self._is_own_output(nid, p, out):
            return False
        return os.path.exists(out) and (not check or os.path.exists(os.path.join(out, check)))

    def _is_own_output(self, nid: int, p: int, out: str) -> bool:
        """Whether a journaled output is the folder partition p of the node writes (or its speculative copy)."""
        expected = self.output_path(nid, p)
        if out == expected or out == expected + SPECULATIVE_SUFFIX:
            return True
        if os.path.basename(out) in (os.path.basename(expected), os.path.basename(expected) + SPECULATIVE_SUFFIX) \
                and os.path.realpath(os.path.dirname(out)) == os.path.realpath(os.path.dirname(expected)):
            return True  # the same folder by another name (a symbolic link on the way to the data root)
        if not self._warned_paths:
            self._warned_paths = True
            log.warning("the journal names %s as the output of %s[%d], which writes %s; it runs again", out,
                        self.nodes[nid].info.name, p, expected)
        return False

    def _reuse(self, nid: int, p: int) -> bool:
        """A partition an earlier run finished (journaled, output still there) is not run again."""
        done = self._done_of(nid)
        rec = done.get(p) if done else None
        if rec is None or not self._still_there(nid, p, rec):
            return False
        self.cached += 1
        self._complete(nid, p, rec)
        return True

    def _complete(self, nid: int, p: int, rec: Dict[str, Any]) -> None:
        st = self.nodes[nid]
        st.outputs[p] = rec
        for cid in st.children:
            child = self.nodes[cid]
            if child.info.pointwise and not child.blocked:
                if all(p in self.nodes[d].outputs for d in child.info.inputs):
                    if not self._reuse(cid, p):
                        self._push(cid, p, 0)
        if st.complete:
            self._activate_ready_nodes(st.children)
        if nid in self.watched:
            self._settle(nid)

    def _settle(self, nid: int) -> None:
        """Tell the live run's owner when a watched node has nothing more to come."""
        if self.nodes[nid].settled and nid in self.watched:
            self.watched.discard(nid)
            if self.on_settled is not None:
                self.on_settled(nid)

    def _block_dependents(self, nid: int) -> None:
        stack = list(self.nodes[nid].children)
        newly: List[int] = []
        while stack:
            cid = stack.pop()
            c = self.nodes[cid]
            if not c.blocked:
                c.blocked = True
                newly.append(cid)
                stack.extend(c.children)
        for cid in newly:
            self._settle(cid)
        self.ready = deque(r for r in self.ready if not self.nodes[r[0]].blocked)
        self.ready_placed = deque(r for r in self.ready_placed if not self.nodes[r[0]].blocked)
        self.active = deque(n for n in self.active if not self.nodes[n].blocked)

    def _input_groups(self, nid: int, p: int) -> Tuple[Tuple[str, ...], ...]:
        info = self.nodes[nid].info
        if not info.inputs:
            return ()
        if not info.pointwise:  # every partition reads all of its inputs, complete by now: built once per node
            groups = self._all_inputs.get(nid)
            if groups is None:
                groups = self._all_inputs[nid] = tuple(
                    tuple(o for o in (self.nodes[d].outputs[q].get("o") for q in range(self.nodes[d].info.npartitions))
                          if o) for d in info.inputs)
            return groups
        return tuple(tuple(o for o in (self.nodes[d].outputs[p].get("o"),) if o) for d in info.inputs)

    def _make_task(self, nid: int, p: int, attempt: int, resources: Optional[Dict[str, Any]] = None) -> Task:
        fp, prefix, digits = self._out_shape.get(nid) or self._shape(nid)
        self.next_tid += 1
        return Task(self.next_tid, nid, p, attempt, f"{fp}:{p}", self._input_groups(nid, p), f"{prefix}{p:0{digits}d}",
                    resources)

    # --- dispatch ---------------------------------------------------------------------

    def _limits(self) -> Tuple[int, int]:
        """(tasks per message, tasks in flight per executor) from the measured task duration."""
        if self.avg_duration is None:
            return 1, self.workers
        if self.avg_duration >= 0.05:
            return 1, self.workers
        batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(self.avg_duration, 1e-6))))
        return batch, self.workers * 2 * batch

    def _dispatch_external(self) -> bool:
        """Hand the due tasks of launcher-run nodes to their launcher, one call per node."""
        if self.external and self.active and not self.ready and not self.ready_placed:
            self._expand(1024)
        if not self.external_ready:
            return False
        # a launcher submission has a cost (an sbatch): gather what comes due within a moment into one
        now = time.monotonic()
        if self.external_since is None:
            self.external_since = now
        due = {}
        for nid, _p, _a in self.external_ready:
            due[nid] = due.get(nid, 0) + 1
        whole = all(n + len(self.nodes[nid].outputs) + self.external_running.get(nid, 0) >=
                    self.nodes[nid].info.npartitions for nid, n in due.items())
        if not whole and now - self.external_since < EXTERNAL_GATHER_SECONDS:
            return False
        by_node: Dict[int, List[Task]] = {}
        for nid, p, attempt in self.external_ready:
            task = self._make_task(nid, p, attempt)
            self.inflight[task.tid] = (task, EXTERNAL)
            by_node.setdefault(nid, []).append(task)
            self.external_running[nid] = self.external_running.get(nid, 0) + 1
        self.external_ready = []
        self.external_since = None
        for nid, tasks in by_node.items():
            self.external[nid](tasks)
        return True

    def _dispatch(self) -> bool:
        batch, limit = self._limits()
        sent = self._dispatch_external()
        sent = self._dispatch_placed() or sent
        for rank in self.load:
            room = limit - self.load[rank]
            if room <= 0 or (room < batch and self.load[rank] > 0):
                continue
            n = min(room, batch)
            if len(self.ready) < n:
                self._expand(n - len(self.ready))
            if not self.ready:
                break
            tasks = []
            while self.ready and len(tasks) < n:
                nid, p, attempt = self.ready.popleft()
                task = self._make_task(nid, p, attempt)
                self.inflight[task.tid] = (task, rank)
                if self.speculate:
                    self.started_at[task.tid] = time.monotonic()
                tasks.append(task)
            self.load[rank] += len(tasks)
            self.t.send(rank, P.tasks_msg(tasks))
            sent = True
        return sent

    # --- the loop ---------------------------------------------------------------------

    def _finished(self) -> bool:
        # copies that lost a race are not waited for
        return (len(self.inflight) == len(self.losers) and not self.ready and not self.ready_placed and not self.active
                and not self.external_ready)

    def _check_plan_unchanged(self, previous: Dict[str, str], infos: Optional[List[NodeInfo]] = None) -> None:
        """A journal written by another version of the plan is refused, unless changes are allowed."""
        infos = [st.info for st in self.nodes.values()] if infos is None else infos
        changed = [i.name for i in infos if i.name in previous and previous[i.name] != i.fingerprint]
        if changed and not self.allow_changes:
            shown = ", ".join(repr(n) for n in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise JournalError(
                f"the plan changed since job {self.job_id} was journaled: node(s) {shown} (code, options or input "
                f"data); run with --fresh to start over, or --allow-changes to re-run only what changed and what "
                f"depends on it")
        if changed:
            log.warning("re-running changed node(s) %s and what depends on them", ", ".join(changed))

    def start(self) -> None:
        """Open the journal, learn what earlier runs finished, and start the ready nodes."""
        self.check_requirements()
        self.journal.open(fresh=self.fresh)
        if not self.fresh:
            self.done_before = self.journal.replay_by_node()
            try:
                self._check_plan_unchanged(self.journal.previous_plan)
            except JournalError:
                self.journal.close()
                raise
        self.journal.append({"type": "run", "job": self.job_id, "time": time.time(), "pid": os.getpid(),
                             "executors": self.t.size - 1, "platform": self.platform, "total": self.total,
                             "plan": {st.info.name: st.info.fingerprint for st in self.nodes.values()}})
        self._activate_ready_nodes(list(self.nodes))

    def add(self, infos: List[NodeInfo], resources: Optional[Dict[int, Any]] = None,
            group_sizes: Optional[Dict[int, int]] = None, reuse: bool = True) -> None:
        """Nodes joining a live run (their inputs are nodes of this run or new ones); each is reported to
        `on_settled` once it has nothing more to come. With reuse=False their tasks always
        run (the caller keeps its own cache) and the journal's earlier plans are not compared with them."""
        new = [i for i in infos if i.id not in self.nodes]
        if reuse:
            self._check_plan_unchanged(self.journal.previous_plan, new)
        else:
            self.always_run.update(i.id for i in new)
        for i in new:
            self.nodes[i.id] = NodeState(i)
            for dep in i.inputs:
                if dep not in self.nodes:
                    raise JournalError(f"node {i.name!r} takes an input that this run does not know")
                self.nodes[dep].children.append(i.id)
        added = sum(i.npartitions for i in new)
        self.total += added
        self.progress.total += added
        for nid, res in (resources or {}).items():
            self.resources[nid] = res
        for nid, size in (group_sizes or {}).items():
            self.group_sizes[nid] = size
            self.resources.setdefault(nid, NO_REQUIREMENT)
        if self.resources and self.placement is None:
            self.placement = Placement(self.hosts, self.workers)
        if not new:
            return
        self.journal.append({"type": "nodes", "time": time.time(), "plan": {i.name: i.fingerprint for i in new}})
        self.watched.update(i.id for i in new)
        self._activate_ready_nodes([i.id for i in new])
        for i in new:
            self._settle(i.id)

    def step(self) -> bool:
        """One turn of the loop: take results, send work, keep the journal and the progress current.
        Returns whether anything happened (the caller backs off when nothing did)."""
        got = self.t.poll()
        while not self.external_results.empty():
            got.append((EXTERNAL, (P.RESULTS, [self.external_results.get()])))
        for src, (kind, payload) in got:
            if kind == P.RESULTS:
                self._on_results(src, payload)
            elif kind == P.FATAL:
                raise PlatformError(f"executor rank {src} stopped: {payload}")
        sent = self._dispatch()
        if self.speculate and not sent and not self.ready and not self.ready_placed and not self.active:
            sent = self._speculate()
        now = time.monotonic()
        self.journal.maybe_flush(now)
        self.progress.maybe_print(now, self.ran, self.cached, len(self.inflight), len(self.failures), self.retried,
                                  self._node_counts)
        if now - self._state_written >= STATE_SECONDS:
            self._write_state("running")
        return bool(got or sent)

    def finish(self) -> str:
        """Close the run in the journal and state.json; returns its status."""
        Scheduler.tid_floor = max(Scheduler.tid_floor, self.next_tid)
        status = self.stop_reason or ("failed" if self.failures else "succeeded")
        self.journal.append({"type": "end", "status": status, "time": time.time()})
        self._write_state(status)
        self.journal.close()
        return status

    def run(self) -> Dict[str, Any]:
        self.start()
        interrupted: List[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            interrupted.append(signum)
            if signum == signal.SIGHUP:  # the terminal may be gone: the journal and the exit code still count
                leave_hung_up_terminal()

        old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
        backoff = Backoff()
        try:
            while not self._finished() and self.stop_reason is None:
                if interrupted:
                    self.stop_reason = "interrupted"
                    break
                if self.step():
                    backoff.reset()
                elif not self._finished():
                    self.t.wait(backoff.next())
        except PeerLost as e:
            raise PlatformError(f"executor rank {e.rank} died; the journal keeps what finished, run the same command again to resume") from e
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.finish()
        return self._outcome()

    def _outcome(self) -> Dict[str, Any]:
        status = self.stop_reason or ("failed" if self.failures else "succeeded")
        outputs = [rec.get("o") for r in self.roots for rec in self._in_order(r) if rec.get("o")]
        stats = {"job_id": self.job_id, "status": status, "ran": self.ran, "cached": self.cached,
                 "retried": self.retried, "failed": len(self.failures), "executors": self.t.size - 1,
                 "platform": self.platform, "job_dir": self.job_dir, **self.data,
                 "speculated": self.speculated, "speculation_won": self.speculation_won,
                 "slowest": sorted(self.slowest, reverse=True)}
        self.progress.finish(self._node_counts)
        self.progress.summary(stats, outputs)
        if status == "interrupted":
            raise JobInterrupted(f"job {self.job_id} interrupted; its journal is saved, run the same command again to resume")
        if self.failures:
            shown = self.failures[:5]
            more = f"\n... and {len(self.failures) - 5} more failed task(s)" if len(self.failures) > 5 else ""
            raise TaskFailedError("\n".join(f.render() for f in shown) + more)
        return {"stats": stats, "nodes": {self.nodes[n].info.name: self._in_order(n) for n in self.nodes}}

    def _in_order(self, nid: int) -> List[Dict[str, Any]]:
        """A node's outcome records in partition order (with a million partitions, sorting would cost seconds)."""
        outputs = self.nodes[nid].outputs
        if len(outputs) == self.nodes[nid].info.npartitions:
            return [outputs[p] for p in range(len(outputs))]
        return [outputs[p] for p in sorted(outputs)]
