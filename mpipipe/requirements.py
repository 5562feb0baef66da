"""Resource requirements: a small language for what a task needs, and matching it to hosts.

Users write requirements as strings so they fit in a decorator or a config file::

    duration=40h & cpu(mem=700GiB) & cuda(mem=32GiB) * 8
    duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)

``&`` means "all of" and binds tighter than ``|``, which separates alternatives.
:func:`parse` always returns a :class:`HostRequirement` (a disjunction of
:class:`HostSimpleRequirement`); ``str()`` of either gives a canonical string that
parses back to an equal value. Matching against a :class:`HostSpecification` is a
pure function returning a scored :class:`Match`, or None.

A requirement lists its accelerators one entry per device (``cuda(mem=8GiB) * 2``
has two), so ``len(match.requirement.accelerators)`` is the number of devices to
ask a cluster for.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import InitVar, dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence, Union

from mpipipe.errors import RequirementError

#: Accelerator kinds a requirement can name; "gpu" accepts a device of any kind.
ACCELERATOR_KINDS = ("cuda", "mps", "gpu")
ANY_GPU = "gpu"
#: Device kinds whose memory is the host's memory (shared with the CPU).
UNIFIED_MEMORY_KINDS = frozenset({"mps"})
#: Most devices one alternative may ask for: requirements hold one entry per device, and no host has more.
MAX_DEVICES = 1024
#: Cores or bytes of a HostSpecification made without cpu=: no limit (scoring ignores it).
UNLIMITED = sys.maxsize

_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _SIZE_UNITS[_p] = _SIZE_UNITS[_p + "b"] = 1000**_i
    _SIZE_UNITS[_p + "ib"] = 1024**_i
_DURATION_UNITS: dict[str, int] = {}
for _names, _factor in (
    ("s sec secs second seconds", 1),
    ("m min mins minute minutes", 60),
    ("h hour hours", 3600),
    ("d day days", 86400),
):
    _DURATION_UNITS.update(dict.fromkeys(_names.split(), _factor))


class RequirementSyntaxError(RequirementError):
    """A malformed requirement string; keeps the text and offending position for tools."""

    def __init__(self, text: str, position: int, message: str) -> None:
        # Whitespace (newlines, tabs) is shown as spaces so the caret stays aligned.
        shown = re.sub(r"\s", " ", text)
        super().__init__(f"{message} (at position {position})\n  {shown}\n  {' ' * position}^")
        self.text = text
        self.position = position
        self.reason = message


def parse_size(value: Union[int, str]) -> int:
    """A byte count from 4096, '4GB', '512 MiB' or '2g' (K/M/G/T are x1000, KiB/MiB/GiB/TiB x1024)."""
    if isinstance(value, bool):
        raise RequirementError(f"expected a size such as 4GB or 512MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise RequirementError(f"a size cannot be negative, got {value}")
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise RequirementError(f"expected a size such as 4GB or 512MiB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def format_size(size: int) -> str:
    """Shortest exact spelling of a byte count (binary units win ties: 1GiB, 8GB, 1536)."""
    spellings = [
        f"{size // factor}{suffix}"
        for suffix, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024),
                               ("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000))
        if size and size % factor == 0
    ]
    return min(spellings + [str(size)], key=len)


def format_duration(seconds: float) -> str:
    """Largest whole unit (2d, 40h, 90m, 45s); fractional seconds are written exactly."""
    if float(seconds).is_integer():
        whole = int(seconds)
        for suffix, factor in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole % factor == 0:
                return f"{whole // factor}{suffix}"
        return f"{whole}s"
    # repr() is the shortest string that reads back as the same float; Decimal avoids "1e-05".
    return format(Decimal(repr(float(seconds))), "f") + "s"


@dataclass(frozen=True)
class CPUSpecification:
    """CPU cores and memory in bytes; 0 means "not specified" in a requirement."""

    cores: int = 0
    memory: int = 0

    def __post_init__(self) -> None:
        if self.cores < 0 or self.memory < 0:
            raise RequirementError(f"cores and memory cannot be negative: {self!r}")

    def __str__(self) -> str:
        args = ([f"mem={format_size(self.memory)}"] if self.memory else []) + (
            [f"cores={self.cores}"] if self.cores else [])
        return f"cpu({', '.join(args)})" if args else "cpu"


@dataclass(frozen=True)
class AcceleratorSpecification:
    """One device a host offers: its kind ("cuda", "mps", ...) and memory in bytes.

    Without a kind it is a generic device ("gpu"), which only generic requests
    (``gpu(...)``) accept; ``AcceleratorSpecification(memory=...)`` and
    ``AcceleratorSpecification(8 * GiB)`` both give the memory.
    """

    kind: str = ANY_GPU
    memory: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.kind, int) and not isinstance(self.kind, bool) and self.memory == 0:
            object.__setattr__(self, "memory", self.kind)  # AcceleratorSpecification(8 * GiB): a memory
            object.__setattr__(self, "kind", ANY_GPU)
        if not isinstance(self.kind, str) or not self.kind:
            raise RequirementError(f"an accelerator kind is a name such as cuda or mps, got {self.kind!r}")
        memory: Any = self.memory  # as given: any value (int.is_integer only exists from Python 3.12)
        if isinstance(memory, float) and memory.is_integer():
            object.__setattr__(self, "memory", int(memory))  # 24e9: a whole number written as a float
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 0:
            raise RequirementError(f"an accelerator's memory is a whole number of bytes >= 0, got {self.memory!r}")

    @property
    def unified_memory(self) -> bool:
        """True when the device memory is the host memory (shared with CPU requests)."""
        return self.kind in UNIFIED_MEMORY_KINDS


@dataclass(frozen=True)
class CudaSpecification(AcceleratorSpecification):
    """An NVIDIA device with dedicated memory."""

    kind: str = field(default="cuda", init=False)


@dataclass(frozen=True)
class MPSSpecification(AcceleratorSpecification):
    """An Apple device; its memory is the host's unified memory (give the host total)."""

    kind: str = field(default="mps", init=False)


@dataclass(frozen=True)
class HostSpecification:
    """What a host (or a queue of identical hosts) offers; max_duration 0 means unlimited.

    Without `cpu` the host's cores and memory are unlimited, so that a launcher
    file can ask "does this fit a host with no GPU?" with
    ``HostSpecification(accelerators=[])``. `cuda` is the older name of
    `accelerators` (its devices are added to them).
    """

    cpu: CPUSpecification = field(default_factory=lambda: CPUSpecification(UNLIMITED, UNLIMITED))
    accelerators: Sequence[AcceleratorSpecification] = ()
    max_duration: float = 0
    priority: int = 0
    cuda: InitVar[Sequence[AcceleratorSpecification]] = ()

    def __post_init__(self, cuda: Sequence[AcceleratorSpecification]) -> None:
        if self.cpu is None:  # type: ignore[comparison-overlap]  # cpu=None: as if not given
            object.__setattr__(self, "cpu", CPUSpecification(UNLIMITED, UNLIMITED))
        elif not isinstance(self.cpu, CPUSpecification):
            raise RequirementError(f"a host's cpu is a CPUSpecification(cores=..., memory=...), got {self.cpu!r}")
        devices = tuple(self.accelerators) + tuple(cuda or ())
        for device in devices:
            if not isinstance(device, AcceleratorSpecification):
                raise RequirementError(f"a host's accelerators are CudaSpecification, MPSSpecification or "
                                       f"AcceleratorSpecification values, got {device!r}")
        object.__setattr__(self, "accelerators", devices)
        if self.max_duration < 0:
            raise RequirementError(f"max_duration cannot be negative: {self.max_duration}")


@dataclass(frozen=True)
class AcceleratorRequest:
    """count distinct devices of a kind ("gpu" = any), each with at least memory bytes."""

    kind: str
    memory: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ACCELERATOR_KINDS:
            raise RequirementError(
                f"unknown accelerator kind {self.kind!r}: expected one of {', '.join(ACCELERATOR_KINDS)}")
        if self.count < 1 or self.memory < 0:
            raise RequirementError(f"an accelerator request needs count >= 1 and memory >= 0: {self!r}")

    def accepts(self, device: AcceleratorSpecification) -> bool:
        """Whether one device can serve one of the count units of this request."""
        return (self.kind == ANY_GPU or device.kind == self.kind) and device.memory >= self.memory

    def __str__(self) -> str:
        text = f"{self.kind}(mem={format_size(self.memory)})" if self.memory else self.kind
        return f"{text} * {self.count}" if self.count > 1 else text


@dataclass(frozen=True)
class Match:
    """The alternative that fits a host, its score (see HostSimpleRequirement.match) and,
    for each entry of requirement.accelerators (one per device), the indices into
    host.accelerators it was given."""

    requirement: HostSimpleRequirement
    score: float
    devices: tuple[tuple[int, ...], ...]
    utilization: float


def _as_request(item: Any) -> AcceleratorRequest:
    """An accelerator entry of a requirement from a request or a device specification."""
    if isinstance(item, AcceleratorRequest):
        return item
    if isinstance(item, AcceleratorSpecification):
        return AcceleratorRequest(item.kind, item.memory)
    raise RequirementError(f"a requirement's accelerators are AcceleratorRequest or CudaSpecification-like values, "
                           f"got {item!r}")


def _alternatives(value: Requirement) -> tuple[HostSimpleRequirement, ...]:
    return value.alternatives if isinstance(value, HostRequirement) else (value,)


class _Operators:
    """``a | b`` adds alternatives; ``a & b`` requires both (distributing over alternatives)."""

    def __or__(self, other: Requirement) -> HostRequirement:
        assert isinstance(self, (HostRequirement, HostSimpleRequirement))
        return HostRequirement(_alternatives(self) + _alternatives(other))

    def __and__(self, other: Requirement) -> Requirement:
        assert isinstance(self, (HostRequirement, HostSimpleRequirement))
        return HostRequirement(tuple(a.combine(b) for a in _alternatives(self) for b in _alternatives(other)))


@dataclass(frozen=True)
class HostSimpleRequirement(_Operators):
    """All of: a duration in seconds (0 = unspecified), CPU needs and accelerators.

    `accelerators` holds one request per device (count 1 each: ``cuda * 2`` is two
    entries), so its length is the number of devices. Requests with a count, and
    device specifications (CudaSpecification(memory=...)), are accepted and spread
    out; entries are sorted by kind then decreasing memory, so equal needs compare
    equal whatever order they were written.
    """

    duration: float = 0.0
    cpu: CPUSpecification = field(default_factory=CPUSpecification)
    accelerators: tuple[AcceleratorRequest, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.duration < math.inf):
            raise RequirementError(f"a duration must be finite and not negative, not {self.duration}")
        object.__setattr__(self, "duration", float(self.duration))
        requests = [_as_request(item) for item in self.accelerators]
        total = sum(request.count for request in requests)
        if total > MAX_DEVICES:
            raise RequirementError(f"a requirement asks for {total} accelerators on one host; at most {MAX_DEVICES} "
                                   "are supported: ask for fewer devices")
        units = sorted(((r.kind, r.memory) for r in requests for _ in range(r.count)),
                       key=lambda km: (ACCELERATOR_KINDS.index(km[0]), -km[1]))
        object.__setattr__(self, "accelerators", tuple(AcceleratorRequest(k, m) for k, m in units))

    def __and__(self, other: Requirement) -> Requirement:
        if isinstance(other, HostSimpleRequirement):
            return self.combine(other)
        return super().__and__(other)

    def combine(self, other: HostSimpleRequirement) -> HostSimpleRequirement:
        """Both at once on one host: the longer duration, the larger CPU figures (they bound
        the same host), and the accelerator requests of both (each needs its own devices)."""
        cpu = CPUSpecification(max(self.cpu.cores, other.cpu.cores), max(self.cpu.memory, other.cpu.memory))
        return HostSimpleRequirement(max(self.duration, other.duration), cpu, self.accelerators + other.accelerators)

    def multiply_duration(self, factor: float) -> HostSimpleRequirement:
        """The same needs for factor times as long (e.g. a retry with more time)."""
        if not factor > 0:
            raise RequirementError(f"a duration factor must be positive, not {factor}")
        return replace(self, duration=self.duration * factor)

    def match(self, host: HostSpecification) -> Optional[Match]:
        """Fit this requirement on host, or None.

        Score = host.priority + utilization, where utilization is the sum, over what the host
        declares, of the fraction used -- cores, memory (CPU plus unified-memory device
        requests), devices taken, requested/offered memory averaged over taken devices,
        duration/max_duration -- divided by (number of those terms + 1). It lies in [0, 1),
        so one priority step outweighs any fit, and a tighter fit (less waste) scores higher.
        """
        if host.max_duration and self.duration > host.max_duration:
            return None
        if self.cpu.cores > host.cpu.cores:
            return None
        devices = self._assign(host.accelerators)
        if devices is None:
            return None
        offered = host.accelerators
        memory = self.cpu.memory + sum(
            request.memory * sum(offered[d].unified_memory for d in taken)
            for request, taken in zip(self.accelerators, devices))
        if memory > host.cpu.memory:
            return None

        terms: list[float] = []
        if host.cpu.cores and host.cpu.cores != UNLIMITED:
            terms.append(self.cpu.cores / host.cpu.cores)
        if host.cpu.memory and host.cpu.memory != UNLIMITED:
            terms.append(memory / host.cpu.memory)
        if offered:
            fits = [request.memory / offered[d].memory if offered[d].memory else 1.0
                    for request, taken in zip(self.accelerators, devices) for d in taken]
            terms.append(len(fits) / len(offered))
            terms.append(sum(fits) / len(fits) if fits else 0.0)
        if host.max_duration:
            terms.append(self.duration / host.max_duration)
        utilization = sum(terms) / (len(terms) + 1)
        return Match(self, host.priority + utilization, devices, utilization)

    def _assign(self, offered: Sequence[AcceleratorSpecification]) -> Optional[tuple[tuple[int, ...], ...]]:
        """Give each requested device its own device of the host, or None.

        Kind-specific requests go first, then generic "gpu" ones, each in decreasing memory
        need, taking the smallest sufficient free device (dedicated memory before unified):
        with nested "memory >= need" constraints this finds an assignment whenever one exists.
        """
        if len(self.accelerators) > len(offered):
            return None
        units = sorted(
            (index for index, request in enumerate(self.accelerators) for _ in range(request.count)),
            key=lambda i: (self.accelerators[i].kind == ANY_GPU, -self.accelerators[i].memory))
        free = set(range(len(offered)))
        taken: list[list[int]] = [[] for _ in self.accelerators]
        for index in units:
            usable = [d for d in free if self.accelerators[index].accepts(offered[d])]
            if not usable:
                return None
            best = min(usable, key=lambda d: (offered[d].unified_memory, offered[d].memory, d))
            free.remove(best)
            taken[index].append(best)
        return tuple(tuple(sorted(t)) for t in taken)

    def __str__(self) -> str:
        terms = [f"duration={format_duration(self.duration)}"] if self.duration else []
        if self.cpu != CPUSpecification() or not (terms or self.accelerators):
            terms.append(str(self.cpu))
        groups: list[AcceleratorRequest] = []  # equal entries are adjacent (sorted): written once with "* n"
        for request in self.accelerators:
            if groups and (groups[-1].kind, groups[-1].memory) == (request.kind, request.memory):
                groups[-1] = replace(groups[-1], count=groups[-1].count + request.count)
            else:
                groups.append(request)
        return " & ".join(terms + [str(request) for request in groups])


@dataclass(frozen=True)
class HostRequirement(_Operators):
    """Any one of several alternatives (``a | b``); what :func:`parse` returns."""

    alternatives: tuple[HostSimpleRequirement, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "alternatives", tuple(self.alternatives))
        if not self.alternatives:
            raise RequirementError("a requirement needs at least one alternative")

    def multiply_duration(self, factor: float) -> HostRequirement:
        """Every alternative for factor times as long."""
        return HostRequirement(tuple(a.multiply_duration(factor) for a in self.alternatives))

    def match(self, host: HostSpecification) -> Optional[Match]:
        """The best-scoring alternative on host (the first one on ties), or None."""
        best: Optional[Match] = None
        for alternative in self.alternatives:
            found = alternative.match(host)
            if found is not None and (best is None or found.score > best.score):
                best = found
        return best

    def __str__(self) -> str:
        return " | ".join(str(a) for a in self.alternatives)


Requirement = Union[HostRequirement, HostSimpleRequirement]

_TOKENS = re.compile(
    r"(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[()=,&|*])|(?P<other>\S)")
_TERMS_HINT = "duration=4h, cpu(mem=4GiB, cores=2), cuda(mem=8GiB) * 2, mps(...) or gpu(...)"


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, punct, other, end
    text: str
    position: int


class _Parser:
    """Recursive descent over: alternative ('|' alternative)*, alternative = term ('&' term)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = [_Token(str(m.lastgroup), m.group(), m.start()) for m in _TOKENS.finditer(text)]
        self.tokens.append(_Token("end", "", len(text)))
        self.index = 0

    def error(self, token: _Token, message: str) -> RequirementSyntaxError:
        return RequirementSyntaxError(self.text, token.position, message)

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, punct: str) -> bool:
        if self.peek().kind == "punct" and self.peek().text == punct:
            self.index += 1
            return True
        return False

    def expect(self, punct: str, message: str) -> None:
        if not self.accept(punct):
            raise self.error(self.peek(), message)

    def requirement(self) -> HostRequirement:
        alternatives = [self.alternative()]
        while self.accept("|"):
            alternatives.append(self.alternative())
        if self.peek().kind != "end":
            raise self.error(self.peek(), "expected '&', '|' or the end of the requirement")
        return HostRequirement(tuple(alternatives))

    def alternative(self) -> HostSimpleRequirement:
        duration: Optional[float] = None
        cpu: Optional[CPUSpecification] = None
        accelerators: list[AcceleratorRequest] = []
        while True:
            token = self.next()
            name = token.text.lower()
            if token.kind != "name":
                raise self.error(token, f"expected a term such as {_TERMS_HINT}")
            if name == "duration":
                if duration is not None:
                    raise self.error(token, "duration given twice in one alternative (separate alternatives with |)")
                self.expect("=", "expected '=' after duration, as in duration=4h")
                duration = self.duration()
            elif name == "cpu":
                if cpu is not None:
                    raise self.error(token, "cpu given twice in one alternative (put mem and cores in one cpu(...))")
                values = self.arguments("cpu", {"mem": self.size, "cores": self.cores})
                cpu = CPUSpecification(cores=values.get("cores", 0), memory=values.get("mem", 0))
            elif name in ACCELERATOR_KINDS:
                memory = self.arguments(name, {"mem": self.size}).get("mem", 0)
                accelerators.append(AcceleratorRequest(name, memory, self.count() if self.accept("*") else 1))
            else:
                raise self.error(token, f"unknown term {token.text!r}: expected {_TERMS_HINT}")
            if not self.accept("&"):
                break
        return HostSimpleRequirement(duration or 0.0, cpu or CPUSpecification(), tuple(accelerators))

    def arguments(self, term: str, parsers: dict[str, Callable[[], int]]) -> dict[str, int]:
        """Optional ``(key=value, ...)`` after a term; keys are checked against parsers."""
        values: dict[str, int] = {}
        if not self.accept("("):
            return values
        valid = ", ".join(parsers)
        while not self.accept(")"):
            token = self.next()
            key = token.text.lower()
            if token.kind != "name":
                raise self.error(token, f"expected a key ({valid}) or ')' in {term}(...)")
            if key not in parsers:
                raise self.error(token, f"unknown key {token.text!r} for {term}: valid keys are {valid}")
            if key in values:
                raise self.error(token, f"key {key!r} given twice in {term}(...)")
            self.expect("=", f"expected '=' after {key}")
            values[key] = parsers[key]()
            if self.peek().text != ")":
                self.expect(",", f"expected ',' or ')' in {term}(...)")
        return values

    def number(self, message: str, whole: bool = False) -> tuple[_Token, Fraction]:
        token = self.next()
        if token.kind != "number" or (whole and "." in token.text):
            raise self.error(token, message)
        return token, Fraction(token.text)

    def unit(self, table: dict[str, int], message: str, optional: bool) -> int:
        token = self.peek()
        if token.kind != "name":
            if optional:
                return 1
            raise self.error(token, message)
        if token.text.lower() not in table:
            if self.tokens[self.index + 1].text == "=":  # "mem=8 cores=2": a key, not a unit
                raise self.error(token, f"expected ',' before {token.text}")
            raise self.error(token, f"unknown unit {token.text!r}: {message}")
        self.index += 1
        return table[token.text.lower()]

    def size(self) -> int:
        _, value = self.number("expected a size such as 8GiB")
        factor = self.unit(_SIZE_UNITS, "expected a size unit: B, K, M, G, T (x1000) or KiB, MiB, GiB, TiB (x1024)",
                           optional=True)
        return math.ceil(value * factor)  # a fractional byte rounds up: never ask for less

    def duration(self) -> float:
        token, value = self.number("expected a duration such as 4h")
        factor = self.unit(_DURATION_UNITS, "expected a duration unit: s, m (or min), h or d", optional=False)
        try:
            seconds = float(value * factor)
        except OverflowError:
            raise self.error(token, "duration is too large") from None
        if seconds <= 0:
            raise self.error(token, "a duration must be positive")
        return seconds

    def positive(self, what: str, example: str) -> int:
        token, value = self.number(f"expected {what} such as {example}", whole=True)
        if value < 1:
            raise self.error(token, f"{what} must be at least 1")
        return int(value)

    def cores(self) -> int:
        return self.positive("a number of cores", "4")

    def count(self) -> int:
        token = self.peek()
        count = self.positive("a device count", "2")
        if count > MAX_DEVICES:
            raise self.error(token, f"a device count must be at most {MAX_DEVICES}")
        return count


def parse(text: str) -> HostRequirement:
    """Parse a requirement string; raises RequirementSyntaxError with a caret on bad input."""
    return _Parser(text).requirement()


def to_requirement(value: Union[str, Requirement]) -> HostRequirement:
    """Accept what users pass (a string or a requirement object) as one HostRequirement."""
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, HostSimpleRequirement):
        return HostRequirement((value,))
    if isinstance(value, HostRequirement):
        return value
    raise RequirementError(f"expected a requirement string or object, not {type(value).__name__}")
