"""Tasks that left rank 0 and have not come back: which rank has each, and how loaded each rank is.

Plain tasks leave as ranges (one entry for many tasks; a task of a range is
made only if its result needs one, a failure say); others one by one. Task ids
stay unique across the runs of one process: a late result of an earlier run
(a speculative copy that lost its race, still running when that run ended) is
never taken for a task of this one.
"""
from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, Optional, Tuple

from mpipipe.execution.task import EXTERNAL, Task, TaskRange


class _RangeOut:
    __slots__ = ("range", "rank", "left")

    def __init__(self, rng: TaskRange, rank: int) -> None:
        self.range = rng
        self.rank = rank
        self.left = rng.count


class InFlight:
    """tid -> (task, rank) and ranges of tids, and per executor rank the tasks it holds."""

    tid_floor = 0  # the highest task id any run of this process used

    def __init__(self, ranks: Iterable[int]) -> None:
        self.tasks: Dict[int, Tuple[Task, int]] = {}
        self.ranges: Dict[int, _RangeOut] = {}  # first tid -> range out
        self._starts: List[int] = []  # the ranges' first tids, sorted
        self.load: Dict[int, int] = {r: 0 for r in ranks}
        self.count = 0
        self.next_tid = InFlight.tid_floor

    def new_tid(self) -> int:
        self.next_tid += 1
        return self.next_tid

    def new_tids(self, n: int) -> int:
        """Reserve n consecutive task ids; returns the first."""
        first = self.next_tid + 1
        self.next_tid += n
        return first

    def add(self, task: Task, rank: int) -> None:
        self.tasks[task.tid] = (task, rank)
        self.count += 1
        if rank != EXTERNAL:
            self.load[rank] += 1

    def add_range(self, rng: TaskRange, rank: int) -> None:
        self.ranges[rng.tid] = _RangeOut(rng, rank)
        bisect.insort(self._starts, rng.tid)
        self.count += rng.count
        self.load[rank] += rng.count

    def _range_of(self, tid: int) -> Optional[_RangeOut]:
        i = bisect.bisect_right(self._starts, tid) - 1
        if i < 0:
            return None
        out = self.ranges[self._starts[i]]
        return out if tid < out.range.tid + out.range.count else None

    def _took(self, out: _RangeOut, n: int) -> None:
        out.left -= n
        self.count -= n
        self.load[out.rank] -= n
        if out.left <= 0:
            del self.ranges[out.range.tid]
            self._starts.remove(out.range.tid)

    def pop(self, tid: int) -> Optional[Tuple[Task, int]]:
        """The task and rank of a result, or None for one nobody waits for any more."""
        entry = self.tasks.pop(tid, None)
        if entry is not None:
            self.count -= 1
            if entry[1] != EXTERNAL:
                self.load[entry[1]] -= 1
            return entry
        out = self._range_of(tid)
        if out is None:
            return None
        self._took(out, 1)
        return out.range.task(tid - out.range.tid), out.rank

    def pop_run(self, tid: int, n: int) -> Optional[Tuple[TaskRange, int]]:
        """n consecutive tasks of one range, from `tid` on (their successes came back together)."""
        out = self._range_of(tid)
        if out is None:
            return None
        rng = out.range
        self._took(out, n)
        return rng._replace(tid=tid, first=rng.first + (tid - rng.tid), count=n), out.rank

    def running_by_node(self) -> Dict[int, int]:
        running: Dict[int, int] = {}
        for task, _ in self.tasks.values():
            running[task.node] = running.get(task.node, 0) + 1
        for out in self.ranges.values():
            running[out.range.node] = running.get(out.range.node, 0) + out.left
        return running

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        """The run ended: later runs of this process number their tasks after this one's."""
        InFlight.tid_floor = max(InFlight.tid_floor, self.next_tid)
