"""The placed path of rank 0's dispatch: tasks that state their needs go to a rank that can serve them.

A placed task holds its allocation (cores, memory, devices) on one worker until
it ends; `size_per_task` groups share one placement and run in turn. Placement
(execution/placement.py) keeps the free capacity per rank.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from mpipipe.errors import RequirementError
from mpipipe.execution import protocol as P
from mpipipe.execution.dispatch import DueQueue
from mpipipe.execution.graph import PlanGraph
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.placement import Allocation, Placement
from mpipipe.execution.task import Task
from mpipipe.execution.transport import Transport
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


class PlacedDispatch(DueQueue):
    """The queue of due placed tasks, their requirements, the placements they hold, and who serves them."""

    def __init__(self, graph: PlanGraph, ranks: List[int], hosts: Dict[int, Dict[str, Any]],
                 workers_per_executor: int, resources: Optional[Dict[int, Any]] = None,
                 group_sizes: Optional[Dict[int, int]] = None) -> None:
        super().__init__()
        self.graph = graph
        self.hosts = dict(hosts)
        self.workers = workers_per_executor
        self.resources: Dict[int, Any] = {}
        self.group_sizes: Dict[int, int] = {}
        self.placement: Optional[Placement] = None
        self.requirement_cache: Dict[Tuple[int, int], Any] = {}
        self.slots: Dict[int, Slot] = {}  # tid -> the placement it runs in
        self.placed_tasks: Dict[int, int] = {r: 0 for r in ranks}
        self.placed_slots: Dict[int, int] = {r: 0 for r in ranks}
        self.next_group = 0
        self.add(resources or {}, group_sizes or {})

    def add(self, resources: Dict[int, Any], group_sizes: Dict[int, int]) -> None:
        """Nodes that state their needs (or share placements in groups) take this path."""
        self.resources.update(resources)
        for nid, size in group_sizes.items():  # chunked nodes take the placed path even without a requirement
            self.group_sizes[nid] = size
            self.resources.setdefault(nid, NO_REQUIREMENT)
        if self.resources and self.placement is None:
            self.placement = Placement(self.hosts, self.workers)

    def handles(self, nid: int) -> bool:
        return nid in self.resources

    def _requirement(self, nid: int, p: int) -> Any:
        key = (nid, p)
        if key not in self.requirement_cache:
            self.requirement_cache[key] = self.resources[nid].for_task(self.graph.input_groups(nid, p))
        return self.requirement_cache[key]

    def _pick(self, rank: int, unplaceable: List[Tuple[Tuple[int, int, int], str]]
              ) -> Optional[Tuple[Tuple[int, int, int], Optional[Allocation]]]:
        """The first waiting placed task that fits this rank's free capacity (a bounded look-ahead)."""
        assert self.placement is not None
        for i, item in enumerate(self.ready):
            if i >= 256:
                return None
            try:
                req = self._requirement(item[0], item[1])
            except Exception as e:  # noqa: BLE001  the user's resources function failed
                del self.ready[i]
                unplaceable.append((item, f"its resources could not be computed: {type(e).__name__}: {e}"))
                return None
            if req is None:
                del self.ready[i]
                return item, None
            if not self.placement.servable(req):
                del self.ready[i]
                unplaceable.append((item, f"it needs {req}, which no executor can serve; executors: "
                                          f"{self.placement.hosts_text()}"))
                return None
            alloc = self.placement.place(rank, req)
            if alloc is not None:
                del self.ready[i]
                return item, alloc
        return None

    def send(self, t: Transport, inflight: InFlight, make_task: Callable[..., Task], expand: Callable[[int], None],
             unplaceable: List[Tuple[Tuple[int, int, int], str]]) -> bool:
        """Placed tasks go to a rank with a free worker and the capacity they need: one task per
        placement, or up to `size_per_task` tasks of one node that share a placement and run in turn.
        Tasks that can never be placed are appended to `unplaceable` with the reason."""
        if self.placement is None:
            return False
        if not self.ready and self.graph.expanding:
            expand(len(inflight.load) * self.workers)
        sent = False
        for rank in inflight.load:
            while self.ready and self._busy_workers(inflight, rank) < self.workers:
                picked = self._pick(rank, unplaceable)
                if picked is None:
                    break
                (nid, p, attempt), alloc = picked
                items = [(nid, p, attempt)] + self._group_mates(nid, p, self.group_sizes.get(nid, 1) - 1, expand)
                resources = alloc.task_resources() if alloc else None
                if resources is not None and len(items) > 1:
                    self.next_group += 1
                    resources = dict(resources, group=self.next_group)
                tasks = [make_task(n, q, a, resources) for n, q, a in items]
                slot = Slot(rank, alloc, len(tasks))
                for task in tasks:
                    inflight.add(task, rank)
                    self.slots[task.tid] = slot
                self.placed_tasks[rank] += len(tasks)
                self.placed_slots[rank] += 1
                t.send(rank, P.tasks_msg(tasks))
                sent = True
        return sent

    def _busy_workers(self, inflight: InFlight, rank: int) -> int:
        """Workers of a rank in use: one per placement, one per plain task."""
        return inflight.load[rank] - self.placed_tasks[rank] + self.placed_slots[rank]

    def task_back(self, tid: int) -> None:
        """A task of this path came back: its placement is released with the last task that shares it."""
        slot = self.slots.pop(tid, None)
        if slot is None:
            return
        self.placed_tasks[slot.rank] -= 1
        slot.remaining -= 1
        if slot.remaining == 0:  # the last task of its placement is back
            self.placed_slots[slot.rank] -= 1
            if slot.alloc is not None and self.placement is not None:
                self.placement.release(slot.alloc)

    def _group_mates(self, nid: int, p: int, want: int, expand: Callable[[int], None]) -> List[Tuple[int, int, int]]:
        """Up to `want` more waiting tasks of the node with the same requirement, for one shared placement."""
        if want <= 0:
            return []
        if len(self.ready) < want + 1:
            expand(want)
        req = self._requirement(nid, p)
        mates: List[Tuple[int, int, int]] = []
        keep: Deque[Tuple[int, int, int]] = deque()
        while self.ready and len(mates) < want:
            item = self.ready.popleft()
            if item[0] == nid and self._requirement(item[0], item[1]) == req:
                mates.append(item)
            else:
                keep.append(item)
        keep.extend(self.ready)
        self.ready = keep
        return mates

    def more_memory(self, task: Task) -> None:
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
            log.info("%s[%d] ran out of memory: the next attempt asks for %s", self.graph.name(task.node),
                     task.partition, bigger)

    def check_requirements(self) -> None:
        """A static requirement that no executor could ever serve fails the job before anything runs."""
        if self.placement is None:
            return
        for nid, res in self.resources.items():
            if res.static is not None and not self.placement.servable(res.static):
                raise RequirementError(f"node {self.graph.name(nid)!r} needs {res.static}, which no executor "
                                       f"can serve; executors: {self.placement.hosts_text()}")
