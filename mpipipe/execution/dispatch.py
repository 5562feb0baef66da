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
MAX_BATCH = 1024
# Tiny tasks: keep this much work out per worker, so it never waits for the round trip of results and more work
# (rank 0, the executor and the worker share cores, and each may wake up late); at most MAX_OUT tasks.
OUT_SECONDS = 0.05
MAX_OUT = 4 * MAX_BATCH

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


Run = Tuple[int, int, int, int]  # (node, first partition, how many, attempt): consecutive due partitions


class PlainDispatch(DueQueue):
    """The queue of due plain tasks and the batch sizes; sends batches to ranks with room. Consecutive due
    partitions of a node wait as one run (node, first, count, attempt), so a node of a million tiny tasks
    costs a few runs in the queue, not an entry per task."""

    def __init__(self, workers_per_executor: int) -> None:
        super().__init__()
        self.ready: Deque[Run] = deque()  # type: ignore[assignment]
        self.due = 0  # tasks in the queue
        self.workers = workers_per_executor
        self.avg_duration: Optional[float] = None

    def push(self, item: Due, front: bool = False) -> None:
        nid, p, attempt = item
        ready = self.ready
        self.due += 1
        if front:
            ready.appendleft((nid, p, 1, attempt))
            return
        if ready:
            last = ready[-1]
            if last[0] == nid and last[3] == attempt and last[1] + last[2] == p:
                ready[-1] = (nid, last[1], last[2] + 1, attempt)
                return
        ready.append((nid, p, 1, attempt))

    def push_run(self, nid: int, first: int, count: int) -> None:
        """First attempts of partitions first..first+count-1 of a node, at the back."""
        ready = self.ready
        self.due += count
        if ready:
            last = ready[-1]
            if last[0] == nid and last[3] == 0 and last[1] + last[2] == first:
                ready[-1] = (nid, last[1], last[2] + count, 0)
                return
        ready.append((nid, first, count, 0))

    def drop(self, blocked: Callable[[int], bool]) -> None:
        self.ready = deque(r for r in self.ready if not blocked(r[0]))
        self.due = sum(r[2] for r in self.ready)

    def observe(self, duration: float) -> None:
        """A task's run time, for the batch size."""
        avg = self.avg_duration
        self.avg_duration = duration if avg is None else 0.9 * avg + 0.1 * duration

    def limits(self) -> Tuple[int, int]:
        """(tasks per message, tasks in flight per executor) from the measured task duration."""
        if self.avg_duration is None or self.avg_duration >= 0.05:
            return 1, self.workers
        avg = max(self.avg_duration, 1e-6)
        batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / avg)))
        return batch, self.workers * max(2 * batch, min(MAX_OUT, int(OUT_SECONDS / avg)))

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
        ranges = make_range is not None and started is None
        for rank, load in inflight.load.items():
            room = limit - load
            if room <= 0 or (room < batch and load > 0):
                continue
            n = min(room, batch)
            if self.due < n:
                expand(n - self.due)
            if not ready:
                break
            units: List[Any] = []
            now = time.monotonic() if started is not None else 0.0
            taken = 0
            while ready and taken < n:
                nid, first, count, attempt = ready[0]
                k = min(count, n - taken)
                if k < count:
                    ready[0] = (nid, first + k, count - k, attempt)
                else:
                    ready.popleft()
                self.due -= k
                taken += k
                if attempt == 0 and ranges:
                    rng = make_range(nid, first, k)  # type: ignore[misc]
                    if rng is not None:
                        inflight.add_range(rng, rank)
                        units.append(rng)
                        continue
                for p in range(first, first + k):  # one by one
                    task = make_task(nid, p, attempt)
                    inflight.add(task, rank)
                    if started is not None:
                        started[task.tid] = now
                    units.append(task)
            t.send(rank, P.tasks_msg(units))
            sent = True
        return sent
