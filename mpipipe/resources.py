"""Per-node resources: what one task needs, in whichever form the user finds easiest.

A node's `resources=` may be a requirement string (`"cpu(cores=2, mem=4GiB) &
cuda(mem=8GiB)"`), a requirement object, a `Resources`, a dict with the keys of
`Resources`, or a callable of the task's inputs returning one of those (resources
that depend on the element). Everything becomes a `HostRequirement` for
placement; `partition` and `extra_args` are kept for launchers that submit jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from mpipipe.errors import RequirementError
from mpipipe.requirements import (AcceleratorRequest, CPUSpecification, HostRequirement, HostSimpleRequirement,
                                  parse, parse_size, to_requirement)


def parse_duration(value: Union[int, float, str]) -> float:
    """Seconds from 90, '90s', '4h', '1.5 hours', '2d'."""
    if isinstance(value, bool):
        raise RequirementError(f"expected a duration such as 4h or 90m, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise RequirementError(f"a duration cannot be negative, got {value}")
        return float(value)
    req = parse(f"duration={str(value).strip()}")
    return req.alternatives[0].duration


@dataclass(frozen=True)
class Resources:
    """What one task needs: cores, memory (bytes), GPUs (count, memory each, kind), time (seconds)."""

    cpus: int = 0
    memory: int = 0
    gpus: int = 0
    gpu_memory: int = 0
    gpu_kind: str = "gpu"
    time: float = 0.0
    partition: Optional[str] = None
    extra_args: Tuple[str, ...] = field(default=())

    @staticmethod
    def from_dict(values: Mapping[str, Any], where: str = "resources") -> "Resources":
        valid = [f.name for f in fields(Resources)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise RequirementError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; valid keys: {', '.join(valid)}")
        v = dict(values)
        try:
            out = Resources(
                cpus=_whole(v.get("cpus", 0), "cpus"),
                memory=parse_size(v.get("memory", 0) or 0),
                gpus=_whole(v.get("gpus", 0), "gpus"),
                gpu_memory=parse_size(v.get("gpu_memory", 0) or 0),
                gpu_kind=str(v.get("gpu_kind", "gpu")),
                time=parse_duration(v.get("time", 0) or 0),
                partition=v.get("partition"),
                extra_args=tuple(v.get("extra_args", ()) or ()),
            )
        except RequirementError as e:
            raise RequirementError(f"{where}: {e}") from None
        out.requirement()  # checks the GPU kind
        return out

    def requirement(self) -> HostRequirement:
        accelerators = (AcceleratorRequest(self.gpu_kind, self.gpu_memory, self.gpus),) if self.gpus else ()
        return HostRequirement((HostSimpleRequirement(self.time, CPUSpecification(self.cpus, self.memory), accelerators),))


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequirementError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


ResourceSpec = Union[str, HostRequirement, HostSimpleRequirement, Resources, Mapping[str, Any]]


def requirement_of(spec: Any, where: str = "resources") -> Optional[HostRequirement]:
    """A static resource spec as a HostRequirement (None for no spec)."""
    if spec is None:
        return None
    if isinstance(spec, Resources):
        return spec.requirement()
    if isinstance(spec, Mapping):
        return Resources.from_dict(spec, where).requirement()
    try:
        return to_requirement(spec)
    except RequirementError as e:
        raise RequirementError(f"{where}: {e}") from None


class NodeResources:
    """A node's resources: static (checked when the node is built) or a function of each task's inputs."""

    def __init__(self, spec: Any, node: str) -> None:
        self.where = f"node {node!r}: resources"
        self.dynamic: Optional[Callable[..., Any]] = None
        self.static: Optional[HostRequirement] = None
        self.extra: Dict[str, Any] = {}
        if callable(spec) and not isinstance(spec, (Resources, HostRequirement, HostSimpleRequirement)):
            self.dynamic = spec
        else:
            self.static = requirement_of(spec, self.where)
            if isinstance(spec, Mapping):
                spec = Resources.from_dict(spec, self.where)
            if isinstance(spec, Resources):
                self.extra = {"partition": spec.partition, "extra_args": list(spec.extra_args)}

    def for_task(self, inputs: Any) -> Optional[HostRequirement]:
        """The requirement of one task (calls the user's function for dynamic resources)."""
        if self.dynamic is None:
            return self.static
        return requirement_of(self.dynamic(inputs), self.where)

    def __str__(self) -> str:
        if self.dynamic is not None:
            return f"dynamic ({getattr(self.dynamic, '__qualname__', self.dynamic)})"
        return str(self.static) if self.static is not None else "none"


def more_memory(req: HostRequirement, cap: int) -> Optional[HostRequirement]:
    """The same requirement with twice the memory (at most `cap`), or None if it asked for none or is at the cap."""
    from dataclasses import replace

    alts = []
    grew = False
    for alt in req.alternatives:
        mem = alt.cpu.memory
        new = min(mem * 2, cap) if mem else mem
        grew = grew or new > mem
        alts.append(replace(alt, cpu=CPUSpecification(alt.cpu.cores, new)))
    return HostRequirement(tuple(alts)) if grew else None
