"""A launcher per step of a data plan: the tasks of some nodes run through a launcher (SLURM, ...) instead
of the world's executors, so quick steps stay on the current world while heavy ones go elsewhere.

`driver.run(plan, launchers={"": None, "embed": SlurmLauncher(...)})`: keys are
node names ("" is the default; None or a world launcher means the world's own
executors). Rank 0's scheduler hands the due tasks of a mapped node to a
thread that schedules them as one module array on the launcher; each run
builds the task's context where it executes, runs the node's task body,
commits its output folder and returns what a worker would have reported.
Outcomes are journaled like any other task's (rank 0 is named as their rank).
The same hand-over serves nodes of the world's live run that a submission maps
to a launcher (mpipipe.futures calls on SLURM, say).

Arrays still running when the process exits (the script ended, or Ctrl-C) are
cancelled by their launcher (scancel), so no SLURM job outlives its driver.
"""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from mpipipe.errors import PlanError
from mpipipe.execution.task import FAILED, OK, Result, Task, TaskContext
from mpipipe.module import Module, ModuleFailed, ShardFailure


def node_requirements(node: Any) -> Any:
    """A node's static resources in a form every launcher takes (a Resources, or the requirement when it has
    alternatives); None when it has none or they are a function of each task's inputs."""
    from mpipipe.resources import Resources

    res = getattr(node, "resources", None)
    if res is None or getattr(res, "dynamic", None) is not None or getattr(res, "static", None) is None:
        return None
    alternatives = res.static.alternatives
    kinds = {a.kind for a in alternatives[0].accelerators} if len(alternatives) == 1 else set()
    if len(alternatives) != 1 or len(kinds) > 1:
        return res.static  # "this or that": placement can choose, sbatch cannot
    need = alternatives[0]
    device = need.accelerators[0] if need.accelerators else None
    return Resources(cpus=need.cpu.cores, memory=need.cpu.memory, time=need.duration,
                     gpus=sum(a.count for a in need.accelerators), gpu_memory=device.memory if device else 0,
                     gpu_kind=device.kind if device else "gpu", partition=res.extra.get("partition"),
                     extra_args=tuple(res.extra.get("extra_args") or ()))


def _cores(spec: Any) -> int:
    """The cores one task asked for (0: none said, or "this or that")."""
    from mpipipe.resources import requirement_of

    requirement = requirement_of(spec) if spec is not None else None
    if requirement is None or len(requirement.alternatives) != 1:
        return 0
    return requirement.alternatives[0].cpu.cores


def _log_position() -> Optional[Tuple[str, int]]:
    """This process's output file and where the next line goes (a SLURM element's log, a worker's), or None
    when its output is not a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        path = os.readlink("/proc/self/fd/1")
        return (path, os.lseek(1, 0, os.SEEK_END)) if os.path.isfile(path) else None
    except OSError:
        return None


class NodeTasks(Module):
    """The given tasks of one plan node as a module array (element i runs tasks[i]). A node may name the
    array (`array_name`: job names, work folders) and say what it is (`array_comment`)."""

    def __init__(self, node: Any, tasks: List[Task], job_dir: str) -> None:
        self.node = node
        self.tasks = list(tasks)
        self.job_dir = job_dir

    def name(self) -> str:
        return getattr(self.node, "array_name", None) or self.node.name

    def comment(self) -> str:
        return getattr(self.node, "array_comment", None) or f"mpipipe plan node {self.node.name}"

    def requirements(self) -> Any:
        return node_requirements(self.node)

    def cache_config(self) -> Dict[str, Any]:
        return {"node": self.node.name, "tasks": [(t.key, t.attempt, t.tid) for t in self.tasks]}

    def array(self) -> List[int]:
        return list(range(len(self.tasks)))

    def run(self, iteration_value: Any = None, iteration_index: int = 0) -> Dict[str, Any]:
        """One task, as a worker runs it: the thread variables say the cores it asked for (as placement says
        them on a world), and its value is checked (numpy scalars become numbers) before it is committed."""
        from mpipipe.execution.worker import THREAD_VARIABLES, encode_value

        task = self.tasks[iteration_value]
        cores = _cores(self.requirements())
        ctx = TaskContext(task, self.node.name, self.node.npartitions, 0, 1, socket.gethostname(), self.job_dir,
                          getattr(self.node, "args", None), {"cpus": cores} if cores else None)
        saved = {k: os.environ.get(k) for k in THREAD_VARIABLES} if cores else {}
        os.environ.update((k, str(cores)) for k in saved)
        where = _log_position()
        t0 = time.time()
        try:
            _text, value = encode_value(self.node.run_task(ctx))
            output = ctx.commit()
        except BaseException:
            ctx.abort()
            raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        end = _log_position()
        log = [where[0], where[1], end[1]] if where is not None and end is not None and end[0] == where[0] else None
        return {"output": output, "value": value, "t0": t0, "t1": time.time(), "log": log}


STOP_SECONDS = 60.0  # at exit, how long cancelled arrays may take to be cancelled (scancel)


class _Running:
    """The launcher calls in progress in this process (each on its own thread and event loop), cancelled at
    exit so that no array outlives its driver."""

    lock = threading.Lock()
    calls: Dict["asyncio.Task[Any]", asyncio.AbstractEventLoop] = {}
    threads: List[threading.Thread] = []
    registered = False

    @classmethod
    def start(cls, thread: threading.Thread) -> None:
        with cls.lock:
            if not cls.registered:
                import atexit

                atexit.register(cls.stop)
                cls.registered = True
            cls.threads = [t for t in cls.threads if t.is_alive()] + [thread]
        thread.start()

    @classmethod
    async def call(cls, work: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        with cls.lock:
            cls.calls[task] = asyncio.get_running_loop()
        try:
            return await work
        finally:
            with cls.lock:
                cls.calls.pop(task, None)

    @classmethod
    def stop(cls) -> None:
        """Cancel every call in progress and wait (up to STOP_SECONDS) for their launchers to clean up."""
        with cls.lock:
            calls = list(cls.calls.items())
            threads = list(cls.threads)
        for task, loop in calls:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop has closed: nothing to cancel
                pass
        if calls:
            deadline = time.monotonic() + STOP_SECONDS
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))


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
        _Running.start(thread)

    def _run(self, tasks: List[Task]) -> None:
        module = NodeTasks(self.node, tasks, self.job_dir)
        failures: Dict[int, Any] = {}
        try:
            results = asyncio.run(_Running.call(self.launcher.schedule(module)))
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
                                                        "t1": r["t1"], "log": r.get("log")}))
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


def _on_world(launcher: Any) -> bool:
    """Whether a launcher runs on the world's own executors. Its module is not imported here (it imports the
    job manager, which imports this one): a world launcher that exists has been loaded."""
    world = sys.modules.get("mpipipe.launchers.world")
    return world is not None and isinstance(launcher, world.WorldLauncher)


def external_steps(launchers: Optional[Mapping[str, Any]], nodes: List[Any], job_dir: str,
                   results: Any) -> Dict[int, Callable[[List[Task]], None]]:
    """node id -> submit function, for the plan's nodes that a non-world launcher runs (checked already)."""
    if not launchers:
        return {}
    out: Dict[int, Callable[[List[Task]], None]] = {}
    for n in nodes:
        launcher = launchers.get(n.name, launchers.get(""))
        if launcher is None or _on_world(launcher):
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
