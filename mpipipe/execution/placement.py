"""Placement: which executor rank may run a task that states its needs, and what it is given.

Rank 0 keeps each rank's free capacity (cores, memory, devices). A task with a
requirement goes to a rank whose free capacity matches it (see
requirements.match); it holds those cores, that memory and those devices until
its result comes back. A requirement that no rank could serve even when idle
is an error before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mpipipe.errors import RequirementError
from mpipipe.execution.hostprobe import describe, device_ids, spec_of
from mpipipe.requirements import CPUSpecification, HostRequirement, HostSpecification


@dataclass(frozen=True)
class Allocation:
    """What one task holds on its rank; its resources travel with the task to set its environment."""

    rank: int
    cores: int  # reserved on the rank (what the requirement asked for)
    memory: int
    devices: Tuple[int, ...]  # indices into the rank's accelerator list
    threads: int  # thread count the task is told to use
    device_ids: Tuple[str, ...]  # what CUDA_VISIBLE_DEVICES calls the devices
    time: float  # seconds before the attempt is stopped; 0 = no limit

    def task_resources(self) -> Dict[str, Any]:
        return {"cpus": self.threads, "memory": self.memory, "devices": list(self.device_ids), "time": self.time}


class RankCapacity:
    """One rank's host and what is still free on it."""

    def __init__(self, rank: int, desc: Dict[str, Any], slots: int) -> None:
        self.rank = rank
        self.desc = desc
        self.spec = spec_of(desc)
        self.slots = max(1, slots)
        self.cores = self.spec.cpu.cores
        self.memory = self.spec.cpu.memory
        self.free_devices = list(range(len(self.spec.accelerators)))
        self.ids = device_ids(desc)

    def free_spec(self) -> HostSpecification:
        accel = tuple(self.spec.accelerators[d] for d in self.free_devices)
        return HostSpecification(CPUSpecification(max(0, self.cores), max(0, self.memory)), accel,
                                 self.spec.max_duration, self.spec.priority)

    def place(self, req: HostRequirement) -> Optional[Allocation]:
        m = req.match(self.free_spec())
        if m is None:
            return None
        alt = m.requirement
        taken = tuple(self.free_devices[i] for group in m.devices for i in group)
        unified = sum(request.memory for request, group in zip(alt.accelerators, m.devices)
                      for i in group if self.spec.accelerators[self.free_devices[i]].unified_memory)
        a = Allocation(self.rank, alt.cpu.cores, alt.cpu.memory + unified, taken,
                       alt.cpu.cores or max(1, self.spec.cpu.cores // self.slots),
                       tuple(self.ids[d] for d in taken), alt.duration)
        self.cores -= a.cores
        self.memory -= a.memory
        self.free_devices = [d for d in self.free_devices if d not in taken]
        return a

    def release(self, a: Allocation) -> None:
        self.cores += a.cores
        self.memory += a.memory
        self.free_devices = sorted(set(self.free_devices) | set(a.devices))


class Placement:
    """Free capacity of every executor rank, and the checks made before and during scheduling."""

    def __init__(self, hosts: Dict[int, Dict[str, Any]], slots: int) -> None:
        self.ranks = {r: RankCapacity(r, d, slots) for r, d in sorted(hosts.items())}

    def hosts_text(self) -> str:
        return "; ".join(f"rank {r} {describe(c.desc)}" for r, c in self.ranks.items())

    def servable(self, req: HostRequirement) -> bool:
        """Could some rank run it when idle?"""
        return any(req.match(c.spec) is not None for c in self.ranks.values())

    def check(self, node: str, req: HostRequirement) -> None:
        if not self.servable(req):
            raise RequirementError(f"node {node!r} needs {req}, which no executor can serve; executors: "
                                   f"{self.hosts_text()}")

    def place(self, rank: int, req: HostRequirement) -> Optional[Allocation]:
        return self.ranks[rank].place(req)

    def release(self, a: Allocation) -> None:
        self.ranks[a.rank].release(a)


def match_report(req: HostRequirement, hosts: Dict[int, Dict[str, Any]]) -> str:
    """For `mpipipe match`: which ranks could run a task with this requirement, best fit first."""
    rows = []
    for rank, desc in sorted(hosts.items()):
        m = req.match(spec_of(desc))
        rows.append((m.score if m else -1.0, rank, desc, m))
    lines = [f"requirement: {req}"]
    fits = [r for r in rows if r[3] is not None]
    for score, rank, desc, m in sorted(rows, key=lambda r: (-r[0], r[1])):
        if m is None:
            lines.append(f"  rank {rank}: no     {describe(desc)}")
        else:
            devs = [device_ids(desc)[i] for group in m.devices for i in group]
            extra = f", devices {','.join(devs)}" if devs else ""
            lines.append(f"  rank {rank}: yes    score {score:.3f} (alternative {m.requirement}{extra})  {describe(desc)}")
    lines.append(f"{len(fits)} of {len(rows)} rank(s) can run it" if rows else "no hosts to match against")
    return "\n".join(lines)
