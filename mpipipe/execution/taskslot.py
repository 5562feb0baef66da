"""Which task a worker process is running: two words of memory it shares with its executor.

The worker writes them as each task starts (how many tasks it has started)
and as the task's output starts (the offset in its log); the executor reads
them once the worker died. A crash, even a kill -9 in the middle of a task
range, is pinned on the task it hit without a marker line or a system call
per task. The memory belongs to the executor too, so it outlives the worker.
"""
from __future__ import annotations

import mmap
import os
import tempfile
from typing import Tuple

_SIZE = 16  # two native 64-bit words: tasks started, log offset of the running task's output (-1: none yet)


class TaskSlot:
    __slots__ = ("_map", "_words")

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, _SIZE)
        self._words = memoryview(self._map).cast("q")

    @classmethod
    def create(cls) -> "Tuple[TaskSlot, int]":
        """A new slot (zeroed) and the descriptor to hand to the worker; the caller closes it once handed."""
        try:
            fd = os.memfd_create("mpipipe-task-slot", 0)
        except (AttributeError, OSError):  # no memfd (not Linux): an unlinked file serves as well
            handle, path = tempfile.mkstemp(prefix="mpipipe-slot-")
            os.unlink(path)
            fd = handle
        os.ftruncate(fd, _SIZE)
        return cls(fd), fd

    @classmethod
    def attach(cls, fd: int) -> "TaskSlot":
        """The worker's side, from the descriptor it was given (closed here: the mapping stays)."""
        try:
            return cls(fd)
        finally:
            os.close(fd)

    def task_started(self) -> None:
        w = self._words
        w[1] = -1
        w[0] += 1

    def output_at(self, offset: int) -> None:
        self._words[1] = offset

    def read(self) -> Tuple[int, int]:
        """(tasks the worker started, log offset where the last one's output begins or -1)."""
        return self._words[0], self._words[1]

    def close(self) -> None:
        self._words.release()
        self._map.close()
