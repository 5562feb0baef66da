"""The plain path of rank 0's dispatch: tasks that state no needs go to whichever rank has room.

Tiny tasks are batched per message from the measured task duration; long tasks
are sent one at a time so the last ones are not stuck behind a busy rank.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from mpipipe.execution import protocol as P
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.task import Task, TaskRange
from mpipipe.execution.transport import Transport

# Aim for batches that keep a worker busy this long per message; beyond it, prefer balance.
BATCH_SECONDS = 0.02
MAX_BATCH = 512

Due = Tuple[int, int, int]  # (node, partition, attempt)


class DueQueue:
    """Due tasks of one path, in order; a retry goes to the front."""

    def __init__(self) -> None:
        self.ready: Deque[Due] = deque()

    def push(self, item: Due, front: bool = False) -> None:
        if front:
            self.ready.appendleft(item)
        else:
            self.ready.append(item)

    def drop(self, blocked: Callable[[int], bool]) -> None:
        """Forget due tasks of nodes that can no longer run."""
        self.ready = deque(r for r in self.ready if not blocked(r[0]))


class PlainDispatch(DueQueue):
    """The queue of due plain tasks and the batch sizes; sends batches to ranks with room."""

    def __init__(self, workers_per_executor: int) -> None:
        super().__init__()
        self.workers = workers_per_executor
        self.avg_duration: Optional[float] = None

    def observe(self, duration: float) -> None:
        """A task's run time, for the batch size."""
        avg = self.avg_duration
        self.avg_duration = duration if avg is None else 0.9 * avg + 0.1 * duration

    def limits(self) -> Tuple[int, int]:
        """(tasks per message, tasks in flight per executor) from the measured task duration."""
        if self.avg_duration is None or self.avg_duration >= 0.05:
            return 1, self.workers
        batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(self.avg_duration, 1e-6))))
        return batch, self.workers * 2 * batch

    def send(self, t: Transport, inflight: InFlight, make_task: Callable[[int, int, int], Task],
             make_range: Optional[Callable[[int, int, int], Optional[TaskRange]]],
             expand: Callable[[int], None], started: Optional[dict] = None) -> bool:
        """Fill every rank up to its limit. Consecutive first attempts of a node whose partitions all read the
        same inputs travel as one TaskRange (`make_range(node, first, count)` gives it, or None for a node
        whose tasks must go one by one); `started` (tid -> time) is kept when stragglers are watched, and then
        every task goes on its own."""
        batch, limit = self.limits()
        sent = False
        ready = self.ready
        for rank, load in inflight.load.items():
            room = limit - load
            if room <= 0 or (room < batch and load > 0):
                continue
            n = min(room, batch)
            if len(ready) < n:
                expand(n - len(ready))
            if not ready:
                break
            units: List[Any] = []
            now = time.monotonic() if started is not None else 0.0
            taken = 0
            while ready and taken < n:
                nid, p, attempt = ready.popleft()
                if attempt == 0 and make_range is not None and started is None:
                    last = p  # how far the partitions of this node run on without a gap
                    while ready and taken + (last - p + 1) < n and ready[0][0] == nid and ready[0][1] == last + 1 \
                            and ready[0][2] == 0:
                        last = ready.popleft()[1]
                    rng = make_range(nid, p, last - p + 1)
                    if rng is not None:
                        inflight.add_range(rng, rank)
                        units.append(rng)
                        taken += rng.count
                        continue
                    for q in range(last, p, -1):  # one by one after all: back in the queue, in order
                        ready.appendleft((nid, q, 0))
                task = make_task(nid, p, attempt)
                inflight.add(task, rank)
                if started is not None:
                    started[task.tid] = now
                units.append(task)
                taken += 1
            t.send(rank, P.tasks_msg(units))
            sent = True
        return sent
