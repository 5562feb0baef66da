"""Launchers that run modules on the executors of a world: local processes, or the current MPI world.

Each scheduled module becomes one node of the world's live run, one task per
missing run, so modules gathered with asyncio share the executors at once.
The first schedule() joins the world: under mpiexec, executor ranks start
serving there (code after it runs on rank 0 only), and outside any world the
script is launched again under the platform, as a plan run would be.
"""
from __future__ import annotations

import itertools
import logging
import sys
from typing import Any, List

from mpipipe.errors import ConfigError
from mpipipe.launchers.base import Launcher, ShardJob, run_shard
from mpipipe.logical.plan import Context, LogicalPlan, Node
from mpipipe.module import Module, Shard, ShardFailure, module_requirements
from mpipipe import context

_NAMES = itertools.count(1)  # node names stay unique among the live runs of one process


def _in_event_loop() -> bool:
    asyncio = sys.modules.get("asyncio")  # imported where it is used: no loop runs without it
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _not_an_exit(record: logging.LogRecord) -> bool:
    return not (record.exc_info and record.exc_info[0] is SystemExit)


class ModuleNode(Node):
    """The missing runs of one module: partition i runs shards[i] and writes its result to paths[i]."""

    kind = "module"

    def __init__(self, ctx: Context, module: Module, shards: List[Shard], paths: List[str], name: str) -> None:
        self.module = module
        self.shards = list(shards)
        self.paths = list(paths)
        super().__init__(ctx, (), len(shards), name=name, resources=module_requirements(module))

    def describe(self) -> str:
        return f"module {type(self.module).__qualname__}"

    def run_task(self, task: Any) -> Any:
        return run_shard(self.module, self.shards[task.partition], self.paths[task.partition])


class WorldLauncher(Launcher):
    """Runs modules on the executors of a world of the given platform: a name or dotted path, a Platform
    instance (e.g. built from a `_target_` mapping by mpipipe.launchers.instantiate), or None for the
    job's own choice."""

    platform: Any = None

    def __init__(self, priority: float = 0, *, platform: Any = None, **kwargs: Any) -> None:
        super().__init__(priority, **kwargs)
        if platform is not None:
            self.platform = platform

    def _manager(self) -> Any:
        from mpipipe.jobmanager import JobManager
        config = context.current().config()
        if isinstance(self.platform, str):
            config = config.with_(platform=self.platform)
        return JobManager(config)

    def describe(self) -> str:
        _jm, rt = self.join()
        return f"{rt.platform.name} ({rt.world.num_executors} executor(s))"

    def join(self) -> Any:
        """Join the world now: rank 0 returns (with its Runtime); executor ranks serve here and exit, and
        outside any world the script runs again under the platform and this process exits with its code."""
        from mpipipe.platform.base import Platform

        jm = self._manager()
        given = self.platform if isinstance(self.platform, Platform) else None
        try:
            return jm, jm.runtime(given, "given by the launcher" if given is not None else "")
        except SystemExit:
            if _in_event_loop():
                # leaving from inside asyncio: the world has ended already, so the task that carried
                # the exit out of the loop is not worth asyncio's "exception was never retrieved"
                logging.getLogger("asyncio").addFilter(_not_an_exit)
            raise

    def prepare(self) -> None:
        self.join()

    async def run_shards(self, job: ShardJob) -> List[ShardFailure]:
        jm, rt = self.join()
        ctx = Context()
        node = ModuleNode(ctx, job.module, job.shards, job.paths, f"{job.label}-{next(_NAMES)}")
        plan = LogicalPlan(ctx, node)
        live = jm.live(rt)
        future = live.submit(plan.nodes, plan.infos, {n.id: n.resources for n in plan.nodes if n.resources is not None},
                             {n.id: n.group_size for n in plan.nodes if n.group_size > 1})
        import asyncio

        outcomes = await asyncio.wrap_future(future)
        outcome = outcomes[node.id]
        failures = []
        for f in outcome.failures:
            shard = job.shards[f.partition]
            failures.append(ShardFailure(shard.index, shard.value, f.error, f.traceback, f.log, f.attempts))
        settled = set(outcome.records) | {f.partition for f in outcome.failures}
        for p, shard in enumerate(job.shards):
            if p not in settled:  # blocked or never run (the run stopped)
                failures.append(ShardFailure(shard.index, shard.value, "it did not run (the run stopped first)"))
        return failures


class DirectLauncher(WorldLauncher):
    """Runs modules in local worker processes (the local platform), wherever the script runs."""

    platform = "local"


class MpiLauncher(WorldLauncher):
    """Runs modules on the executor ranks of the current MPI world (or launches one with mpiexec)."""

    platform = "mpi"

    def __init__(self, priority: float = 0, **kwargs: Any) -> None:
        if kwargs.get("platform") not in (None, "mpi"):
            raise ConfigError("MpiLauncher runs on the mpi platform; use WorldLauncher(platform=...) for another")
        super().__init__(priority, **kwargs)
