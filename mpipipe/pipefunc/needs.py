"""What one pipefunc call needs: an executor's defaults with the function's resources on top.

pipefunc's `Resources` (cpus, cpus_per_node, nodes, memory, gpus, time,
partition, extra_args, parallelization_mode) becomes a `Need`, which a world
executor turns into an mpipipe requirement (cores, memory, GPUs, time: placed
by the scheduler) and the SLURM executor into sbatch options. Nothing here
imports pipefunc: its Resources is read by attribute, so a dict works too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple

from mpipipe.errors import RequirementError
from mpipipe.resources import Resources, parse_duration
from mpipipe.requirements import parse_size

PIPEFUNC_KEYS = ("cpus", "cpus_per_node", "nodes", "memory", "gpus", "time", "partition", "extra_args",
                 "parallelization_mode")


@dataclass(frozen=True)
class Need:
    """Cores per node, nodes, memory (bytes), GPUs, time (seconds and as written), partition, sbatch lines."""

    cpus: int = 0
    nodes: int = 0
    memory: int = 0
    gpus: int = 0
    time: float = 0.0
    time_text: Optional[str] = None
    partition: Optional[str] = None
    extra: Tuple[str, ...] = ()
    internal: bool = False  # parallelization_mode="internal": the function runs its own parallelism
    executor_type: Optional[str] = None  # extra_args={"executor_type": ...} overrides the executor's

    def over(self, other: "Need") -> "Need":
        """This need with every field `other` gives replacing ours (sbatch lines: both, ours first)."""
        changes: Dict[str, Any] = {}
        for name in ("cpus", "nodes", "memory", "gpus", "time", "time_text", "partition", "executor_type"):
            value = getattr(other, name)
            if value:
                changes[name] = value
        if other.internal:
            changes["internal"] = True
        if other.extra:
            changes["extra"] = _merge_lines(self.extra, other.extra)
        return replace(self, **changes) if changes else self

    def world_spec(self, where: str) -> Optional[Resources]:
        """The requirement on a world's executors (None: nothing asked for, the fast path)."""
        if self.nodes > 1:
            raise RequirementError(f"{where} asks for {self.nodes} nodes, but a task on a world's executors runs on "
                                   "one host; ask for cpus instead, or run it with mpipipe.pipefunc.SlurmExecutor")
        if not (self.cpus or self.memory or self.gpus or self.time):
            return None
        return Resources(cpus=self.cpus, memory=self.memory, gpus=self.gpus, time=self.time)

    def slurm_options(self) -> Dict[str, Any]:
        """SlurmLauncher.config() keywords: what this need sets; the job's options fill the rest."""
        out: Dict[str, Any] = {}
        if self.cpus:
            out["cpus_per_task"] = self.cpus
        if self.nodes:
            out["nodes"] = self.nodes
        if self.memory:
            out["mem"] = f"{math.ceil(self.memory / 2 ** 20)}M"
        if self.gpus:
            out["gpus_per_node"] = str(self.gpus)
        if self.time:
            out["time"] = self.time_text if _slurm_time(self.time_text) else str(max(1, math.ceil(self.time / 60)))
        if self.partition:
            out["partition"] = self.partition
        if self.extra:
            out["extra"] = list(self.extra)
        return out


def _slurm_time(text: Optional[str]) -> bool:
    """Whether sbatch reads `text` as a time limit (pipefunc writes "2:00:00"; "90m" is mpipipe's)."""
    from mpipipe.config import slurm_time_seconds

    try:
        return bool(text) and slurm_time_seconds(str(text)) is not None
    except ValueError:
        return False


def _merge_lines(ours: Tuple[str, ...], theirs: Tuple[str, ...]) -> Tuple[str, ...]:
    """sbatch lines of both; a line of theirs replaces ours of the same option (--time=1 over --time=5)."""
    names = {line.split("=", 1)[0] for line in theirs}
    return tuple(line for line in ours if line.split("=", 1)[0] not in names) + tuple(theirs)


def _get(resources: Any, key: str) -> Any:
    if isinstance(resources, dict):
        return resources.get(key)
    return getattr(resources, key, None)


def need_of(resources: Any, where: str) -> Need:
    """A Need from pipefunc's Resources (or a dict with its keys); bad values are one-line errors."""
    if resources is None:
        return Need()
    if isinstance(resources, dict):
        unknown = sorted(set(resources) - set(PIPEFUNC_KEYS))
        if unknown:
            raise RequirementError(f"{where}: unknown resource key(s) {', '.join(map(repr, unknown))}; "
                                   f"valid keys: {', '.join(PIPEFUNC_KEYS)}")
    try:
        cpus = _count(_get(resources, "cpus"), "cpus")
        per_node = _count(_get(resources, "cpus_per_node"), "cpus_per_node")
        nodes = _count(_get(resources, "nodes"), "nodes")
        memory_value = _get(resources, "memory")
        memory = parse_size(memory_value) if memory_value else 0
        gpus = _count(_get(resources, "gpus"), "gpus")
        time_value = _get(resources, "time")
        seconds = parse_duration(time_value) if time_value else 0.0
    except RequirementError as e:
        raise RequirementError(f"{where}: {e}") from None
    if cpus and nodes:
        raise RequirementError(f"{where}: cpus={cpus} and nodes={nodes} given together; use cpus alone, or nodes "
                               "with cpus_per_node")
    extra_args = dict(_get(resources, "extra_args") or {})
    executor_type = extra_args.pop("executor_type", None)
    mode = _get(resources, "parallelization_mode") or "external"
    if mode not in ("internal", "external"):
        raise RequirementError(f"{where}: parallelization_mode must be 'internal' or 'external', got {mode!r}")
    partition = _get(resources, "partition")
    return Need(cpus=cpus or per_node, nodes=nodes, memory=memory, gpus=gpus, time=seconds,
                time_text=time_value if isinstance(time_value, str) else None,
                partition=str(partition) if partition else None,
                extra=Resources(extra_args=extra_args).extra_args, internal=mode == "internal",
                executor_type=check_executor_type(executor_type, where) if executor_type else None)


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequirementError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


#: executor_type values: the elements of a "map"-scoped chunk run on a process pool of `cpus` processes, or in turn
POOLED = ("process-pool", "loky")
SEQUENTIAL = ("sequential",)
UNSUPPORTED = ("ipyparallel", "dask-mpi", "mpi4py")


def check_executor_type(value: Any, where: str) -> str:
    if value in POOLED or value in SEQUENTIAL:
        return str(value)
    if value in UNSUPPORTED:
        raise RequirementError(f"{where}: executor_type={value!r} is not available on mpipipe; use 'process-pool' "
                               "(a pool of `cpus` processes per chunk) or 'sequential'")
    raise RequirementError(f"{where}: executor_type must be one of {', '.join(POOLED + SEQUENTIAL)}, got {value!r}")
