"""The pinned path of rank 0's dispatch: tasks that must run on one rank.

A task that reads an MPI shuffle's buckets (mpipipe.logical.shuffles) runs where they were sent: partition q
on rank owner_rank(q). A retry goes to the same rank, ahead of that rank's other pinned tasks. Each rank gets
at most two tasks per worker at a time, so a rank that holds a task until its buckets arrive still has its
other work in hand.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, Iterable, List, Set, Tuple

from mpipipe.execution import protocol as P
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.task import Task
from mpipipe.execution.transport import Transport
from mpipipe.logical.shuffles import owner_rank

Due = Tuple[int, int, int]  # (node, partition, attempt)


class PinnedDispatch:
    """Due tasks of pinned nodes, one queue per owner rank."""

    def __init__(self, ranks: Iterable[int], workers_per_executor: int, world_size: int) -> None:
        self.nodes: Set[int] = set()  # nodes whose tasks are pinned
        self.senders: Set[int] = set()  # nodes whose map tasks send their buckets to the pinned ones
        self.world_size = world_size
        self.queues: Dict[int, Deque[Due]] = {r: deque() for r in ranks}
        self.limit = 2 * max(1, workers_per_executor)
        self.due = 0

    @property
    def ready(self) -> bool:
        return self.due > 0

    def push(self, item: Due, front: bool = False) -> None:
        q = self.queues[owner_rank(item[1], self.world_size)]
        if front:
            q.appendleft(item)
        else:
            q.append(item)
        self.due += 1

    def drop(self, blocked: Callable[[int], bool]) -> None:
        """Forget due tasks of nodes that can no longer run."""
        for rank, q in self.queues.items():
            self.queues[rank] = deque(d for d in q if not blocked(d[0]))
        self.due = sum(len(q) for q in self.queues.values())

    def send(self, t: Transport, inflight: InFlight, make_task: Callable[[int, int, int], Task]) -> bool:
        """Each owner rank gets its due tasks up to its limit."""
        if not self.due:
            return False
        sent = False
        for rank, q in self.queues.items():
            room = self.limit - inflight.load[rank]
            if not q or room <= 0:
                continue
            tasks: List[Task] = []
            while q and len(tasks) < room:
                nid, p, attempt = q.popleft()
                task = make_task(nid, p, attempt)
                inflight.add(task, rank)
                tasks.append(task)
            self.due -= len(tasks)
            t.send(rank, P.tasks_msg(tasks))
            sent = True
        return sent
