"""Per-node resources: what one task needs, in whichever form the user finds easiest.

A node's `resources=` may be a requirement string (`"cpu(cores=2, mem=4GiB) &
cuda(mem=8GiB)"`), a requirement object, a `Resources`, a dict with the keys of
`Resources`, or a callable of the task's inputs returning one of those (resources
that depend on the element). Everything becomes a `HostRequirement` for
placement; `partition` and `extra_args` are kept for launchers that submit jobs.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from mpipipe.errors import RequirementError
from mpipipe.requirements import (AcceleratorRequest, CPUSpecification, HostRequirement, HostSimpleRequirement,
                                  parse, parse_size, to_requirement)


_CLOCK = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def _clock_seconds(text: str) -> Optional[float]:
    """Seconds of a SLURM-style clock time (1:00:00, 30:00, 2-12, 2-12:30:00), or None for another form."""
    m = _CLOCK.fullmatch(text)
    if m is None or (m.group(1) is None and m.group(3) is None):
        return None  # a bare number is seconds, not SLURM's minutes: handled by the caller
    days, first, second, third = m.groups()
    a, b, c = int(first), int(second or 0), int(third or 0)
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return float(int(days) * 86400 + a * 3600 + b * 60 + c)
    if third is not None:  # H:M:S
        return float(a * 3600 + b * 60 + c)
    return float(a * 60 + b)  # M:S (the seconds are there: a bare number returned None above)


def parse_duration(value: Union[int, float, str]) -> float:
    """Seconds from 90, '90s', '4h', '1.5 hours', '2d', '1:00:00', '30:00' or '2-12:00:00'."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequirementError(f"expected a duration such as 4h, 90m, 1:00:00 or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise RequirementError(f"a duration cannot be negative, got {value}")
        return float(value)
    text = value.strip()
    clock = _clock_seconds(text)
    if clock is not None:
        return clock
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)  # "90": seconds, as a number would be
    try:
        req = parse(f"duration={text}")
    except RequirementError:
        raise RequirementError(f"expected a duration such as 4h, 90m, 1:00:00 or seconds, got {value!r}") from None
    return req.alternatives[0].duration


def _count(value: Any, name: str) -> int:
    """A whole number >= 0 (None: not given); 2.0 is 2, True is not a count."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequirementError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def _size(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return parse_size(value)
    except RequirementError as e:
        raise RequirementError(f"{name}: {e}") from None


def _extra_args(value: Any) -> Tuple[str, ...]:
    """sbatch lines: a list of "--key=value" strings, or a mapping {key: value} as pipefunc writes them."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(f"--{str(k).lstrip('-')}" + ("" if v is None or v is True else f"={v}") for k, v in value.items())
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise RequirementError(f"extra_args must be a list of sbatch options such as ['--exclusive'] or a dict, "
                               f"got {type(value).__name__}") from None
    if not all(isinstance(i, str) for i in items):
        raise RequirementError(f"extra_args must hold strings such as '--exclusive', got {list(items)!r}")
    return items


@dataclass(frozen=True)
class Resources:
    """What one task needs: cores, memory, GPUs (count, memory each, kind), time.

    Sizes may be written as "8GB", "512MiB" or bytes, times as "1:00:00", "90m"
    or seconds, and None means "not given"; the fields then hold bytes and
    seconds, so `Resources(memory="8GB").memory == 8_000_000_000`. A bad value
    is a RequirementError naming the field.
    """

    cpus: int = 0
    memory: int = 0
    gpus: int = 0
    gpu_memory: int = 0
    gpu_kind: str = "gpu"
    time: float = 0.0
    partition: Optional[str] = None
    extra_args: Tuple[str, ...] = field(default=())

    if TYPE_CHECKING:  # what the constructor takes; the fields above are what __post_init__ makes of it
        def __init__(self, cpus: Union[int, float, None] = 0, memory: Union[int, float, str, None] = 0,
                     gpus: Union[int, float, None] = 0, gpu_memory: Union[int, float, str, None] = 0,
                     gpu_kind: str = "gpu", time: Union[int, float, str, None] = 0.0, partition: Optional[str] = None,
                     extra_args: Union[Sequence[str], Mapping[str, Any], None] = ()) -> None: ...

    def __post_init__(self) -> None:
        try:
            values = {
                "cpus": _count(self.cpus, "cpus"),
                "memory": _size(self.memory, "memory"),
                "gpus": _count(self.gpus, "gpus"),
                "gpu_memory": _size(self.gpu_memory, "gpu_memory"),
                "time": self._seconds(self.time),
                "extra_args": _extra_args(self.extra_args),
            }
            if not isinstance(self.gpu_kind, str) or not self.gpu_kind:
                raise RequirementError(f"gpu_kind must be a device kind such as cuda or gpu, got {self.gpu_kind!r}")
            if self.partition is not None and not isinstance(self.partition, str):
                raise RequirementError(f"partition must be a name, got {self.partition!r}")
        except RequirementError as e:
            raise RequirementError(f"Resources: {e}") from None
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.requirement()  # checks the GPU kind

    @staticmethod
    def _seconds(value: Any) -> float:
        if value is None:
            return 0.0
        try:
            return parse_duration(value)
        except RequirementError as e:
            raise RequirementError(f"time: {e}") from None

    @staticmethod
    def from_dict(values: Mapping[str, Any], where: str = "resources") -> "Resources":
        valid = [f.name for f in fields(Resources)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise RequirementError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
                                   f"valid keys: {', '.join(valid)}")
        try:
            return Resources(**dict(values))
        except RequirementError as e:
            raise RequirementError(f"{where}: {str(e).removeprefix('Resources: ')}") from None

    def requirement(self) -> HostRequirement:
        accelerators = (AcceleratorRequest(self.gpu_kind, self.gpu_memory, self.gpus),) if self.gpus else ()
        cpu = CPUSpecification(self.cpus, self.memory)
        return HostRequirement((HostSimpleRequirement(self.time, cpu, accelerators),))


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
    """A node's resources: static (checked when the node is built) or a function of each task's inputs.

    A function gets the task's inputs as one argument (one list of upstream
    outputs per input node), or, when its parameters are named after input
    nodes (`lambda prep: ...`), each of those inputs by name; `input_names`
    lists the node's inputs in order.
    """

    def __init__(self, spec: Any, node: str, input_names: Sequence[str] = ()) -> None:
        self.where = f"node {node!r}: resources"
        self.dynamic: Optional[Callable[..., Any]] = None
        self.static: Optional[HostRequirement] = None
        self.extra: Dict[str, Any] = {}
        self.input_names = tuple(input_names)
        self.by_name: Optional[Tuple[str, ...]] = None  # input names the function takes as keywords
        if callable(spec) and not isinstance(spec, (Resources, HostRequirement, HostSimpleRequirement)):
            self.dynamic = spec
            self.by_name = self._keywords(spec)
        else:
            self.static = requirement_of(spec, self.where)
            if isinstance(spec, Mapping):
                spec = Resources.from_dict(spec, self.where)
            if isinstance(spec, Resources):
                self.extra = {"partition": spec.partition, "extra_args": list(spec.extra_args)}

    def _keywords(self, fn: Callable[..., Any]) -> Optional[Tuple[str, ...]]:
        """None to pass the inputs as one argument, else the input names to pass by name."""
        if not self.input_names:
            return None
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # a builtin or C callable: the one-argument form
            return None
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if any(p.kind is p.VAR_KEYWORD for p in params) and not named:
            return self.input_names
        if len(params) == 1 and named and named[0].name not in self.input_names:
            return None  # lambda inputs: ..., the form that takes every input at once
        unknown = [p.name for p in named if p.name not in self.input_names]
        if unknown or any(p.kind is p.VAR_POSITIONAL for p in params):
            what = ", ".join(map(repr, unknown)) or "*args"
            raise RequirementError(
                f"{self.where}: the function takes {what}, which names none of the node's inputs "
                f"({', '.join(self.input_names)}); name its parameters after inputs, or give it one parameter "
                "for all inputs (one list of outputs per input)")
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return self.input_names
        return tuple(p.name for p in named)

    def for_task(self, inputs: Any) -> Optional[HostRequirement]:
        """The requirement of one task (calls the user's function for dynamic resources)."""
        if self.dynamic is None:
            return self.static
        if self.by_name is None:
            return requirement_of(self.dynamic(inputs), self.where)
        given = {name: list(group) for name, group in zip(self.input_names, inputs) if name in self.by_name}
        return requirement_of(self.dynamic(**given), self.where)

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
