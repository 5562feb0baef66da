"""A launcher per step of a data plan: the tasks of some nodes run through a launcher (SLURM, ...) instead
of the world's executors, so quick steps stay on the current world while heavy ones go elsewhere.

`driver.run(plan, launchers={"": None, "embed": SlurmLauncher(...)})`: keys are
node names ("" is the default; None or a world launcher means the world's own
executors). Rank 0's scheduler hands the due tasks of a mapped node to a
thread that schedules them as one module array on the launcher; each run
builds the task's context where it executes, runs the node's task body,
commits its output folder and returns what a worker would have reported.
Outcomes are journaled like any other task's (rank 0 is named as their rank).
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from mpipipe.errors import PlanError
from mpipipe.execution.task import FAILED, OK, Result, Task, TaskContext
from mpipipe.module import Module, ModuleFailed, ShardFailure


class NodeTasks(Module):
    """The given tasks of one plan node as a module array (element i runs tasks[i])."""

    def __init__(self, node: Any, tasks: List[Task], job_dir: str) -> None:
        self.node = node
        self.tasks = list(tasks)
        self.job_dir = job_dir

    def name(self) -> str:
        return self.node.name

    def comment(self) -> str:
        return f"mpipipe plan node {self.node.name}"

    def requirements(self) -> Any:
        return getattr(self.node, "resources", None)

    def cache_config(self) -> Dict[str, Any]:
        return {"node": self.node.name, "tasks": [(t.key, t.attempt, t.tid) for t in self.tasks]}

    def array(self) -> List[int]:
        return list(range(len(self.tasks)))

    def run(self, iteration_value: Any = None, iteration_index: int = 0) -> Dict[str, Any]:
        task = self.tasks[iteration_value]
        ctx = TaskContext(task, self.node.name, self.node.npartitions, 0, 1, socket.gethostname(), self.job_dir,
                          getattr(self.node, "args", None), None)
        t0 = time.time()
        try:
            value = self.node.run_task(ctx)
            json.dumps(value)
            output = ctx.commit()
        except BaseException:
            ctx.abort()
            raise
        return {"output": output, "value": value, "t0": t0, "t1": time.time()}


class ExternalSteps:
    """Runs the tasks the scheduler hands over for launcher-mapped nodes; results go to `results`."""

    def __init__(self, launcher: Any, node: Any, job_dir: str, results: Any) -> None:
        self.launcher = launcher.config(cache=False)  # the journal decides what reruns, not the result cache
        self.node = node
        self.job_dir = job_dir
        self.results = results
        self.threads: List[threading.Thread] = []

    def submit(self, tasks: List[Task]) -> None:
        thread = threading.Thread(target=self._run, args=(tasks,), name=f"mpipipe-step-{self.node.name}",
                                  daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, tasks: List[Task]) -> None:
        module = NodeTasks(self.node, tasks, self.job_dir)
        failures: Dict[int, Any] = {}
        try:
            results = asyncio.run(self.launcher.schedule(module))
        except ModuleFailed as e:
            results = e.results
            failures = {f.index: f for f in e.failures}
        except BaseException as e:  # noqa: BLE001  the launcher itself failed: every task fails with it
            results = [None] * len(tasks)
            failures = {i: ShardFailure(i, i, f"{type(e).__name__}: {e}") for i in range(len(tasks))}
        for i, task in enumerate(tasks):
            f = failures.get(i)
            if f is None and isinstance(results[i], dict):
                r = results[i]
                self.results.put(Result(task.tid, OK, {"output": r["output"], "value": r["value"], "t0": r["t0"],
                                                        "t1": r["t1"], "log": None}))
            else:
                f = f or ShardFailure(i, i, "the launcher returned no result")
                self.results.put(Result(task.tid, FAILED, {
                    "error": f.error, "traceback": f.traceback, "where": self.launcher.describe(),
                    "log": (f.log or "?", 0, None), "t0": time.time(), "t1": time.time()}))


def check_launchers(launchers: Mapping[str, Any], nodes: List[Any]) -> None:
    """A mapping that names no node of the plan, or maps to something that is not a launcher, is a plan error."""
    from mpipipe.launchers.base import Launcher

    names = {n.name for n in nodes}
    unknown = sorted(k for k in launchers if k and k not in names)
    if unknown:
        raise PlanError(f"launchers name node(s) {', '.join(map(repr, unknown))}, which the plan does not have; "
                        f"its nodes: {', '.join(sorted(names))}")
    for key, value in launchers.items():
        if value is not None and not isinstance(value, Launcher):
            raise PlanError(f"launchers[{key!r}] must be a Launcher or None, got {type(value).__name__}")


def external_steps(launchers: Optional[Mapping[str, Any]], nodes: List[Any], job_dir: str,
                   results: Any) -> Dict[int, Callable[[List[Task]], None]]:
    """node id -> submit function, for the plan's nodes that a non-world launcher runs (checked already)."""
    if not launchers:
        return {}
    from mpipipe.launchers.world import WorldLauncher

    out: Dict[int, Callable[[List[Task]], None]] = {}
    for n in nodes:
        launcher = launchers.get(n.name, launchers.get(""))
        if launcher is None or isinstance(launcher, WorldLauncher):
            continue  # the world's own executors
        out[n.id] = ExternalSteps(launcher, n, job_dir, results).submit
    return out


class StepLaunchers:
    """A launcher per plan step, as the entry points hand it to the job manager: checked against the plan
    before any world starts, then turned into the submit function of each launcher-run node."""

    def __init__(self, launchers: Mapping[str, Any]) -> None:
        self.launchers = dict(launchers)

    def check(self, nodes: List[Any]) -> None:
        check_launchers(self.launchers, nodes)

    def submitters(self, nodes: List[Any], job_dir: str, results: Any) -> Dict[int, Callable[[List[Task]], None]]:
        return external_steps(self.launchers, nodes, job_dir, results)


def step_launchers(launchers: Optional[Mapping[str, Any]]) -> Optional[StepLaunchers]:
    """None when no node is mapped."""
    return StepLaunchers(launchers) if launchers else None
