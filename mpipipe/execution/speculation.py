"""Speculative copies of stragglers (--speculate): with nothing else to run, a slow task starts again on
another rank and the first result wins.

A mixin of Scheduler (it reads the scheduler's in-flight tasks and per-node durations).
"""
from __future__ import annotations

import logging
import shutil
import time
from typing import Dict, List, Optional, Set, Tuple

from mpipipe.execution import protocol as P
from mpipipe.execution.task import EXTERNAL, OK, Result, Task

log = logging.getLogger("mpipipe.scheduler")

SPECULATE_AFTER = 0.5  # seconds a task must have run before a copy of it may start
SPECULATIVE_SUFFIX = ".speculative"  # a copy commits beside the original, never over it


class Speculation:
    """Scheduler methods for speculative copies (see the module's docstring)."""

    def _discard_loser(self, task: Task, res: Result) -> None:
        """The slower copy of a speculated task: its outcome is ignored and its output removed."""
        self.losers.discard(res.tid)
        out = res.info.get("output") if res.status == OK else None
        winner = self.nodes[task.node].outputs.get(task.partition, {}).get("o")
        if out and out != winner:
            shutil.rmtree(out, ignore_errors=True)

    def _speculate(self) -> bool:
        """With nothing else to run, start a copy of a straggler on another rank with a free worker.

        A node qualifies once 3/4 of its partitions are done; a task qualifies when it has run
        more than twice the node's median task time (and at least SPECULATE_AFTER seconds).
        """
        free = [r for r in self.load if self.load[r] < self.workers]
        if not free or not self.inflight or len(self.twins) >= 2 * len(self.load):
            return False
        now = time.monotonic()
        best: Optional[Tuple[float, int]] = None
        blocked = self._blocked(now)
        for tid, (task, _rank) in self.inflight.items():
            if tid in self.twins or tid in self.losers or task.resources is not None or tid not in self.started_at \
                    or task.node in self.external:
                continue
            if tid in blocked:  # not running at all: it waits on its rank behind a straggler
                ran = now - self.started_at[tid]
                if best is None or ran > best[0]:
                    best = (ran, tid)
                continue
            st = self.nodes[task.node]
            times = self.durations.get(task.node)
            if not times or len(st.outputs) < 0.75 * st.info.npartitions:
                continue
            median = sorted(times)[len(times) // 2]
            ran = now - self.started_at[tid]
            if ran > max(2 * median, SPECULATE_AFTER) and (best is None or ran > best[0]):
                best = (ran, tid)
        if best is None:
            return False
        task, rank = self.inflight[best[1]]
        target = next((r for r in free if r != rank), None)
        if target is None:
            return False
        self.next_tid += 1
        copy = task._replace(tid=self.next_tid, output=task.output + SPECULATIVE_SUFFIX)
        self.inflight[copy.tid] = (copy, target)
        self.started_at[copy.tid] = now
        self.twins[copy.tid], self.twins[task.tid] = task.tid, copy.tid
        self.load[target] += 1
        self.speculated += 1
        log.info("speculating %s[%d] (running %.1fs) on rank %d", self.nodes[task.node].info.name, task.partition,
                 best[0], target)
        self.t.send(target, P.tasks_msg([copy]))
        return True

    def _straggling(self, tid: int, now: float) -> bool:
        """A task running past twice its node's median task time (and at least SPECULATE_AFTER seconds)."""
        task, _rank = self.inflight[tid]
        times = self.durations.get(task.node)
        if not times or tid not in self.started_at:
            return False
        return now - self.started_at[tid] > max(2 * sorted(times)[len(times) // 2], SPECULATE_AFTER)

    def _blocked(self, now: float) -> Set[int]:
        """Tasks queued on a rank behind a straggler. A rank runs `workers` tasks at a time in the order they
        were sent, and small tasks travel in batches, so a straggler holds up the tasks sent with it: copies
        of those may start whatever share of their node is done."""
        queues: Dict[int, List[int]] = {}
        for tid, (_task, rank) in self.inflight.items():  # in the order they were sent
            if rank != EXTERNAL:
                queues.setdefault(rank, []).append(tid)
        blocked: Set[int] = set()
        for tids in queues.values():
            if len(tids) > self.workers and any(self._straggling(t, now) for t in tids[:self.workers]):
                blocked.update(tids[self.workers:])
        return blocked
