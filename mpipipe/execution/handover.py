"""Tasks of launcher-run nodes (a plan step mapped to SLURM, say) are handed to their launcher instead of
being sent to executors; their results come back on a queue from the launcher's thread.

A launcher submission has a cost (an sbatch), so what comes due within a moment
is gathered into one call per node. A launcher retries its own tasks.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, Dict, List, Optional, Tuple

from mpipipe.execution.graph import PlanGraph
from mpipipe.execution.inflight import InFlight
from mpipipe.execution.task import EXTERNAL, Result, Task

GATHER_SECONDS = 1.0  # due tasks of a launcher-run node are handed over together within this time

Submit = Callable[[List[Task]], None]


class Handover:
    """Nodes run by launchers: their due tasks, how many each launcher holds, and the results coming back."""

    def __init__(self, graph: PlanGraph) -> None:
        self.graph = graph
        self.submit: Dict[int, Submit] = {}  # node -> hands a list of its tasks to its launcher
        self.ready: List[Tuple[int, int, int]] = []
        self.since: Optional[float] = None
        self.running: Dict[int, int] = {}  # node -> its tasks with their launcher now
        self.results: "queue.SimpleQueue[Result]" = queue.SimpleQueue()

    def handles(self, nid: int) -> bool:
        return nid in self.submit

    def __contains__(self, nid: int) -> bool:
        return nid in self.submit

    def push(self, item: Tuple[int, int, int]) -> None:
        self.ready.append(item)

    def drop(self, blocked: Callable[[int], bool]) -> None:
        self.ready = [r for r in self.ready if not blocked(r[0])]

    def back(self, task: Task) -> None:
        self.running[task.node] -= 1

    def take_results(self) -> List[Result]:
        got = []
        while not self.results.empty():
            got.append(self.results.get())
        return got

    def send(self, inflight: InFlight, make_task: Callable[[int, int, int], Task], expand: Callable[[int], None],
             others_waiting: bool) -> bool:
        """Hand the due tasks of launcher-run nodes to their launcher, one call per node."""
        if self.submit and self.graph.expanding and not others_waiting:
            expand(1024)
        if not self.ready:
            return False
        now = time.monotonic()
        if self.since is None:
            self.since = now
        due: Dict[int, int] = {}
        for nid, _p, _a in self.ready:
            due[nid] = due.get(nid, 0) + 1
        nodes = self.graph.nodes
        whole = all(n + len(nodes[nid].outputs) + self.running.get(nid, 0) >= nodes[nid].info.npartitions
                    for nid, n in due.items())
        if not whole and now - self.since < GATHER_SECONDS:
            return False
        by_node: Dict[int, List[Task]] = {}
        for nid, p, attempt in self.ready:
            task = make_task(nid, p, attempt)
            inflight.add(task, EXTERNAL)
            by_node.setdefault(nid, []).append(task)
            self.running[nid] = self.running.get(nid, 0) + 1
        self.ready = []
        self.since = None
        for nid, tasks in by_node.items():
            self.submit[nid](tasks)
        return True
