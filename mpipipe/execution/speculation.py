"""Speculative copies of stragglers (--speculate): with nothing else to run, a slow task starts again on
another rank and the first result wins.

A node qualifies once 3/4 of its partitions are done; a task qualifies when it
has run more than twice the node's median task time (and at least
SPECULATE_AFTER seconds), or when it waits on its rank behind such a task.
"""
from __future__ import annotations

import logging
import shutil
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from mpipipe.execution import protocol as P
from mpipipe.execution.graph import SPECULATIVE_SUFFIX, PlanGraph
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.task import EXTERNAL, OK, Result, Task
from mpipipe.execution.transport import Transport

log = logging.getLogger("mpipipe.scheduler")

SPECULATE_AFTER = 0.5  # seconds a task must have run before a copy of it may start

__all__ = ["SPECULATE_AFTER", "SPECULATIVE_SUFFIX", "Speculation"]


class Speculation:
    """Start times, per-node durations, and the pairs of copies racing each other."""

    def __init__(self, graph: PlanGraph, workers_per_executor: int) -> None:
        self.graph = graph
        self.workers = workers_per_executor
        self.started_at: Dict[int, float] = {}
        self.durations: Dict[int, List[float]] = {}
        self.twins: Dict[int, int] = {}  # tid <-> tid of its running copy
        self.losers: Set[int] = set()  # copies whose twin finished first
        self.speculated = self.won = 0

    # --- what comes back ---------------------------------------------------------------------

    def is_loser(self, tid: int) -> bool:
        """A copy whose twin already won: its outcome is ignored (see discard)."""
        self.started_at.pop(tid, None)
        return tid in self.losers

    def discard(self, task: Task, res: Result) -> None:
        """The slower copy of a speculated task: its outcome is ignored and its output removed."""
        self.losers.discard(res.tid)
        out = res.info.get("output") if res.status == OK else None
        winner = self.graph.output(task.node, task.partition)
        if out and out != winner:
            shutil.rmtree(out, ignore_errors=True)

    def succeeded(self, task: Task, tid: int, duration: float) -> None:
        """First result wins; the twin's output is discarded when it comes back."""
        self.durations.setdefault(task.node, []).append(duration)
        twin = self.twins.pop(tid, None)
        if twin is not None:
            self.twins.pop(twin, None)
            self.losers.add(twin)
            self.won += task.output.endswith(SPECULATIVE_SUFFIX)

    def failed(self, tid: int) -> bool:
        """A copy failed: True while its twin still runs (and may succeed), so no retry yet."""
        twin = self.twins.pop(tid, None)
        if twin is None:
            return False
        self.twins.pop(twin, None)
        return True

    def waiting_for(self, inflight: InFlight) -> int:
        """Tasks still in flight that anybody waits for (copies that lost their race are not)."""
        return len(inflight) - len(self.losers)

    # --- starting copies -------------------------------------------------------------------------

    def start_copy(self, t: Transport, inflight: InFlight, external: Any) -> bool:
        """With nothing else to run, start a copy of a straggler on another rank with a free worker."""
        free = [r for r in inflight.load if inflight.load[r] < self.workers]
        if not free or not inflight.tasks or len(self.twins) >= 2 * len(inflight.load):
            return False
        now = time.monotonic()
        best: Optional[Tuple[float, int]] = None
        blocked = self._blocked(inflight, now)
        for tid, (task, _rank) in inflight.tasks.items():
            if tid in self.twins or tid in self.losers or task.resources is not None or tid not in self.started_at \
                    or task.node in external:
                continue
            if tid in blocked:  # not running at all: it waits on its rank behind a straggler
                ran = now - self.started_at[tid]
                if best is None or ran > best[0]:
                    best = (ran, tid)
                continue
            st = self.graph.nodes[task.node]
            times = self.durations.get(task.node)
            if not times or len(st.outputs) < 0.75 * st.info.npartitions:
                continue
            median = sorted(times)[len(times) // 2]
            ran = now - self.started_at[tid]
            if ran > max(2 * median, SPECULATE_AFTER) and (best is None or ran > best[0]):
                best = (ran, tid)
        if best is None:
            return False
        task, rank = inflight.tasks[best[1]]
        target = next((r for r in free if r != rank), None)
        if target is None:
            return False
        copy = task._replace(tid=inflight.new_tid(), output=task.output + SPECULATIVE_SUFFIX)
        inflight.add(copy, target)
        self.started_at[copy.tid] = now
        self.twins[copy.tid], self.twins[task.tid] = task.tid, copy.tid
        self.speculated += 1
        log.info("speculating %s[%d] (running %.1fs) on rank %d", self.graph.name(task.node), task.partition,
                 best[0], target)
        t.send(target, P.tasks_msg([copy]))
        return True

    def _straggling(self, inflight: InFlight, tid: int, now: float) -> bool:
        """A task running past twice its node's median task time (and at least SPECULATE_AFTER seconds)."""
        task, _rank = inflight.tasks[tid]
        times = self.durations.get(task.node)
        if not times or tid not in self.started_at:
            return False
        return now - self.started_at[tid] > max(2 * sorted(times)[len(times) // 2], SPECULATE_AFTER)

    def _blocked(self, inflight: InFlight, now: float) -> Set[int]:
        """Tasks queued on a rank behind a straggler. A rank runs `workers` tasks at a time in the order they
        were sent, and small tasks travel in batches, so a straggler holds up the tasks sent with it: copies
        of those may start whatever share of their node is done."""
        queues: Dict[int, List[int]] = {}
        for tid, (_task, rank) in inflight.tasks.items():  # in the order they were sent
            if rank != EXTERNAL:
                queues.setdefault(rank, []).append(tid)
        blocked: Set[int] = set()
        for tids in queues.values():
            if len(tids) > self.workers and any(self._straggling(inflight, t, now) for t in tids[:self.workers]):
                blocked.update(tids[self.workers:])
        return blocked
