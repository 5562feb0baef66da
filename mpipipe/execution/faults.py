"""Fault injection: make task attempts fail the ways real tasks fail, to prove a job survives them.

`--inject-faults SPEC` (or SP_INJECT_FAULTS) with SPEC such as `0.2`,
`0.3:exception,kill` or `rate=0.3,kinds=exit+segfault,seed=7,attempts=1`.
Whether an attempt fails, and how, is decided from a hash of the seed, the
task's key and the attempt number: the same run fails the same attempts every
time, on every platform. By default only first attempts fail, so a job with
retries still finishes; its output must equal a fault-free run's.

The fault strikes after the task body has run and before its output is
committed, so partial output exists in the staging folder when it dies.
"""
from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from mpipipe.errors import ConfigError

KINDS = ("exception", "exit", "segfault", "kill", "oom")


@dataclass(frozen=True)
class FaultPlan:
    rate: float
    kinds: Tuple[str, ...] = KINDS
    seed: int = 0
    attempts: int = 1  # attempts 0..attempts-1 may fail

    def choose(self, key: str, attempt: int) -> Optional[str]:
        """The fault this attempt suffers, or None."""
        if attempt >= self.attempts or self.rate <= 0:
            return None
        digest = hashlib.sha1(f"{self.seed}|{key}|{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        if u >= self.rate:
            return None
        return self.kinds[int.from_bytes(digest[8:12], "big") % len(self.kinds)]

    def __str__(self) -> str:
        return f"rate={self.rate},kinds={'+'.join(self.kinds)},seed={self.seed},attempts={self.attempts}"


def parse(spec: str) -> FaultPlan:
    """`0.2`, `0.2:kill,exit`, or `rate=0.2,kinds=kill+exit,seed=1,attempts=2`."""
    text = spec.strip()
    fields: Dict[str, str] = {}
    try:
        if "=" in text:
            for part in text.split(","):
                k, _, v = part.partition("=")
                fields[k.strip()] = v.strip()
        else:
            rate_text, _, kinds_text = text.partition(":")
            fields["rate"] = rate_text
            if kinds_text:
                fields["kinds"] = kinds_text.replace(",", "+")
        unknown = set(fields) - {"rate", "kinds", "seed", "attempts"}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; valid: rate, kinds, seed, attempts")
        rate = float(fields.get("rate", "0"))
        kinds = tuple(k for k in fields.get("kinds", "+".join(KINDS)).split("+") if k)
        bad = [k for k in kinds if k not in KINDS]
        if not 0 <= rate <= 1 or bad or not kinds:
            raise ValueError(f"rate must be in 0..1 and kinds among {', '.join(KINDS)}")
        return FaultPlan(rate, kinds, int(fields.get("seed", "0")), int(fields.get("attempts", "1")))
    except ValueError as e:
        raise ConfigError(f"bad fault injection spec {spec!r}: {e}; e.g. 0.2, 0.3:exception,kill or "
                          "rate=0.3,kinds=exit+segfault,seed=7,attempts=1") from None


class InjectedFault(RuntimeError):
    """The exception an injected 'exception' fault raises."""


def strike(kind: str) -> None:
    """Fail the current attempt, in the worker process, the way `kind` says."""
    if kind == "exception":
        raise InjectedFault("injected fault: exception")
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "oom":
        _exhaust_memory()


def _exhaust_memory() -> None:
    """Run out of memory for real, inside a limit: the allocation fails with MemoryError."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20), hard))
    try:
        hog = bytearray(1 << 30)  # more than the limit leaves: MemoryError
        del hog
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    raise MemoryError("injected fault: memory exhausted")  # pragma: no cover (the allocation fails first)
