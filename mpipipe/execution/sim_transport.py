"""A simulated world in one process: rank 0's transport to any number of virtual executors, no MPI.

Each virtual executor answers the hello at once and "runs" every task it is
sent the moment it arrives (a no-op that succeeds, with no output), so what is
measured is rank 0 alone: dispatch, bookkeeping, journaling. This is how the
scale of one job is measured without a cluster (scripts/bench/scale_sim.py):
a real scheduler, a real journal, 1,000 executors.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Deque, List, Tuple

from mpipipe.execution import protocol as P
from mpipipe.execution.task import OK, OkRun, Result, TaskRange
from mpipipe.execution.transport import Transport


class SimTransport(Transport):
    """Rank 0's end; ranks 1..size-1 are virtual executors that succeed at every task instantly."""

    def __init__(self, size: int, cores: int = 1, memory: int = 4 << 30) -> None:
        self.rank = 0
        self.size = size
        self.host = {"host": "sim", "cores": cores, "memory": memory, "accelerators": []}
        self._inbox: Deque[Tuple[int, Any]] = deque()
        self.sent_messages = 0
        self.log = os.devnull

    def send(self, dest: int, msg: Any) -> None:
        self.sent_messages += 1
        kind, payload = msg
        if kind == P.SETUP:
            self._inbox.append((dest, (P.READY, dict(self.host))))
        elif kind == P.TASKS:
            now = time.time()
            out: List[Any] = []
            for unit in payload:
                if type(unit) is TaskRange:
                    n = unit.count
                    out.append(OkRun(unit.tid, [now] * n, [now] * n, [None] * n, [None] * n, self.log,
                                     [0] * (n + 1)))
                else:
                    out.append(Result(unit.tid, OK, {"output": None, "value": None, "t0": now, "t1": now,
                                                     "log": (self.log, 0, 0)}))
            self._inbox.append((dest, (P.RESULTS, out)))

    def poll(self) -> List[Tuple[int, Any]]:
        got = list(self._inbox)
        self._inbox.clear()
        return got

    def wait(self, timeout: float) -> None:
        if not self._inbox:
            time.sleep(min(timeout, 1e-4))
