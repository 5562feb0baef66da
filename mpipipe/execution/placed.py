"""The placed path of rank 0's scheduler: tasks that state their needs go to a rank that can serve them.

A mixin of Scheduler (it reads the scheduler's queues and counters). A placed
task holds its allocation (cores, memory, devices) on one worker until it
ends; `size_per_task` groups share one placement and run in turn.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from mpipipe.errors import RequirementError
from mpipipe.execution import protocol as P
from mpipipe.execution.placement import Allocation
from mpipipe.execution.task import Result, Task
from mpipipe.resources import more_memory

log = logging.getLogger("mpipipe.scheduler")


class NoRequirement:
    """What a chunked node without resources needs: nothing, but it takes the placed path for its groups."""

    static = None

    @staticmethod
    def for_task(_inputs: Any) -> None:
        return None


NO_REQUIREMENT = NoRequirement()


@dataclass
class Slot:
    """One placement: a worker of `rank` holding `alloc` for `remaining` more tasks."""

    rank: int
    alloc: Optional[Allocation]
    remaining: int


class PlacedDispatch:
    """Scheduler methods for the placed path (see the module's docstring)."""

    def _requirement(self, nid: int, p: int) -> Any:
        key = (nid, p)
        if key not in self.requirement_cache:
            self.requirement_cache[key] = self.resources[nid].for_task(self._input_groups(nid, p))
        return self.requirement_cache[key]

    def _fail_unplaceable(self, item: Tuple[int, int, int], error: str) -> None:
        nid, p, attempt = item
        self.next_tid += 1
        task = Task(self.next_tid, nid, p, self.max_retries, self.key(nid, p), (), self.output_path(nid, p))
        self.failed_attempts += 1
        self._on_failure(task, Result(task.tid, "failed", {"error": error, "where": "rank 0 (placement)",
                                                           "log": (os.path.join(self.job_dir, "logs", "rank-0.log"), 0, None)}))

    def _pick(self, rank: int) -> Optional[Tuple[Tuple[int, int, int], Optional[Allocation]]]:
        """The first waiting placed task that fits this rank's free capacity (a bounded look-ahead)."""
        assert self.placement is not None
        for i, item in enumerate(self.ready_placed):
            if i >= 256:
                return None
            try:
                req = self._requirement(item[0], item[1])
            except Exception as e:  # noqa: BLE001  the user's resources function failed
                del self.ready_placed[i]
                self._fail_unplaceable(item, f"its resources could not be computed: {type(e).__name__}: {e}")
                return None
            if req is None:
                del self.ready_placed[i]
                return item, None
            if not self.placement.servable(req):
                del self.ready_placed[i]
                self._fail_unplaceable(item, f"it needs {req}, which no executor can serve; executors: "
                                             f"{self.placement.hosts_text()}")
                return None
            alloc = self.placement.place(rank, req)
            if alloc is not None:
                del self.ready_placed[i]
                return item, alloc
        return None

    def _dispatch_placed(self) -> bool:
        """Placed tasks go to a rank with a free worker and the capacity they need: one task per
        placement, or up to `size_per_task` tasks of one node that share a placement and run in turn."""
        if self.placement is None:
            return False
        if not self.ready_placed and self.active:
            self._expand(len(self.load) * self.workers)
        sent = False
        for rank in self.load:
            while self.ready_placed and self._busy_workers(rank) < self.workers:
                picked = self._pick(rank)
                if picked is None:
                    break
                (nid, p, attempt), alloc = picked
                items = [(nid, p, attempt)] + self._group_mates(nid, p, self.group_sizes.get(nid, 1) - 1)
                resources = alloc.task_resources() if alloc else None
                if resources is not None and len(items) > 1:
                    self.next_group += 1
                    resources = dict(resources, group=self.next_group)
                tasks = [self._make_task(n, q, a, resources) for n, q, a in items]
                slot = Slot(rank, alloc, len(tasks))
                for task in tasks:
                    self.inflight[task.tid] = (task, rank)
                    self.slots[task.tid] = slot
                self.load[rank] += len(tasks)
                self.placed_tasks[rank] += len(tasks)
                self.placed_slots[rank] += 1
                self.t.send(rank, P.tasks_msg(tasks))
                sent = True
        return sent

    def _busy_workers(self, rank: int) -> int:
        """Workers of a rank in use: one per placement, one per plain task."""
        return self.load[rank] - self.placed_tasks[rank] + self.placed_slots[rank]

    def _task_back(self, slot: "Slot") -> None:
        self.placed_tasks[slot.rank] -= 1
        slot.remaining -= 1
        if slot.remaining == 0:  # the last task of its placement is back
            self.placed_slots[slot.rank] -= 1
            if slot.alloc is not None and self.placement is not None:
                self.placement.release(slot.alloc)

    def _group_mates(self, nid: int, p: int, want: int) -> List[Tuple[int, int, int]]:
        """Up to `want` more waiting tasks of the node with the same requirement, for one shared placement."""
        if want <= 0:
            return []
        if len(self.ready_placed) < want + 1:
            self._expand(want)
        req = self._requirement(nid, p)
        mates, keep = [], deque()
        while self.ready_placed and len(mates) < want:
            item = self.ready_placed.popleft()
            if item[0] == nid and self._requirement(item[0], item[1]) == req:
                mates.append(item)
            else:
                keep.append(item)
        keep.extend(self.ready_placed)
        self.ready_placed = keep
        return mates

    def _more_memory(self, task: Task) -> None:
        """After a memory failure, the next attempt asks for twice the memory, up to the largest host's."""
        if task.node not in self.resources or self.placement is None:
            return
        req = self._requirement(task.node, task.partition)
        if req is None:
            return
        cap = max(c.spec.cpu.memory for c in self.placement.ranks.values())
        bigger = more_memory(req, cap)
        if bigger is not None:
            self.requirement_cache[(task.node, task.partition)] = bigger
            log.info("%s[%d] ran out of memory: the next attempt asks for %s", self.nodes[task.node].info.name,
                     task.partition, bigger)

    def check_requirements(self) -> None:
        """A static requirement that no executor could ever serve fails the job before anything runs."""
        if self.placement is None:
            return
        for nid, res in self.resources.items():
            if res.static is not None and not self.placement.servable(res.static):
                raise RequirementError(f"node {self.nodes[nid].info.name!r} needs {res.static}, which no executor "
                                       f"can serve; executors: {self.placement.hosts_text()}")
