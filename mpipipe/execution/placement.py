"""Placement: which executor rank may run a task that states its needs, and what it is given.

Rank 0 keeps the free capacity of every pool: the cores, memory and devices
that ranks on one host share (see hostprobe.pool_keys: ranks that see the same
cores share them; a rank's own share, such as SLURM's cpus per task or a
per-rank override, is its own pool). A task with a requirement goes to a rank
whose own figures and whose pools' free capacity match it (see
requirements.match); it holds those cores, that memory and those devices until
its result comes back, so a host never runs more than it has. A requirement
that no rank could serve even when idle is an error before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from mpipipe.errors import RequirementError
from mpipipe.execution.hostprobe import PoolKey, describe, device_ids, pool_keys, spec_of
from mpipipe.requirements import CPUSpecification, HostRequirement, HostSpecification


@dataclass(frozen=True)
class Allocation:
    """What one task holds on its rank; its resources travel with the task to set its environment."""

    rank: int
    cores: int  # reserved in the rank's cores pool (what the requirement asked for)
    memory: int
    devices: Tuple[int, ...]  # indices into the rank's accelerator list
    threads: int  # thread count the task is told to use
    device_ids: Tuple[str, ...]  # what CUDA_VISIBLE_DEVICES calls the devices
    time: float  # seconds before the attempt is stopped; 0 = no limit

    def task_resources(self) -> Dict[str, Any]:
        return {"cpus": self.threads, "memory": self.memory, "devices": list(self.device_ids), "time": self.time}


class Pools:
    """Free cores and memory per pool, and the devices held anywhere, for every host of the world."""

    def __init__(self) -> None:
        self.cores: Dict[PoolKey, int] = {}
        self.memory: Dict[PoolKey, int] = {}
        self.size: Dict[PoolKey, int] = {}  # a pool's cores when idle
        self.members: Dict[PoolKey, List[int]] = {}  # ranks that share a cores pool
        self.held: Set[PoolKey] = set()  # devices in use

    def join(self, rank: int, cores_key: PoolKey, cores: int, memory_key: PoolKey, memory: int) -> None:
        """A rank offers its figures to its pools; ranks of one pool report the same figure (the largest
        counts, so a rank that saw less still cannot hold more than its own)."""
        self.cores[cores_key] = max(self.cores.get(cores_key, 0), cores)
        self.size[cores_key] = self.cores[cores_key]
        self.memory[memory_key] = max(self.memory.get(memory_key, 0), memory)
        self.members.setdefault(cores_key, []).append(rank)


class RankCapacity:
    """One rank's host: its own figures (what one task on it may have at most) and its pools."""

    def __init__(self, rank: int, desc: Dict[str, Any], slots: int, pools: Pools) -> None:
        self.rank = rank
        self.desc = desc
        self.spec = spec_of(desc)
        self.slots = max(1, slots)
        self.pools = pools
        self.cores_key, self.memory_key, self.device_keys = pool_keys(rank, desc)
        pools.join(rank, self.cores_key, self.spec.cpu.cores, self.memory_key, self.spec.cpu.memory)
        self.ids = device_ids(desc)

    @property
    def cores(self) -> int:
        """Cores still free to this rank: its pool's free cores, at most its own."""
        return min(self.spec.cpu.cores, self.pools.cores[self.cores_key])

    @property
    def memory(self) -> int:
        return min(self.spec.cpu.memory, self.pools.memory[self.memory_key])

    @property
    def free_devices(self) -> List[int]:
        return [i for i, key in enumerate(self.device_keys) if key not in self.pools.held]

    def sharers(self) -> List[int]:
        """The ranks that share this rank's cores (itself included)."""
        return self.pools.members[self.cores_key]

    def idle_spec(self) -> HostSpecification:
        """What one task could have here when the whole host is idle."""
        cpu = CPUSpecification(min(self.spec.cpu.cores, self.pools.size[self.cores_key]), self.spec.cpu.memory)
        return HostSpecification(cpu, self.spec.accelerators, self.spec.max_duration, self.spec.priority)

    def free_spec(self) -> HostSpecification:
        accel = tuple(self.spec.accelerators[d] for d in self.free_devices)
        return HostSpecification(CPUSpecification(max(0, self.cores), max(0, self.memory)), accel,
                                 self.spec.max_duration, self.spec.priority)

    def place(self, req: HostRequirement) -> Optional[Allocation]:
        free = self.free_devices
        m = req.match(self.free_spec())
        if m is None:
            return None
        alt = m.requirement
        taken = tuple(free[i] for group in m.devices for i in group)
        unified = sum(request.memory for request, group in zip(alt.accelerators, m.devices)
                      for i in group if self.spec.accelerators[free[i]].unified_memory)
        share = self.pools.size[self.cores_key] // (self.slots * len(self.sharers()))
        a = Allocation(self.rank, alt.cpu.cores, alt.cpu.memory + unified, taken,
                       alt.cpu.cores or max(1, min(self.spec.cpu.cores, share)),
                       tuple(self.ids[d] for d in taken), alt.duration)
        self.pools.cores[self.cores_key] -= a.cores
        self.pools.memory[self.memory_key] -= a.memory
        self.pools.held.update(self.device_keys[d] for d in taken)
        return a

    def release(self, a: Allocation) -> None:
        self.pools.cores[self.cores_key] += a.cores
        self.pools.memory[self.memory_key] += a.memory
        self.pools.held.difference_update(self.device_keys[d] for d in a.devices)


class Placement:
    """Free capacity of every pool, and the checks made before and during scheduling."""

    def __init__(self, hosts: Dict[int, Dict[str, Any]], slots: int) -> None:
        self.pools = Pools()
        self.ranks = {r: RankCapacity(r, d, slots, self.pools) for r, d in sorted(hosts.items())}

    def hosts_text(self) -> str:
        return "; ".join(f"rank {r} {describe(c.desc)}{self._shared(c)}" for r, c in self.ranks.items())

    @staticmethod
    def _shared(c: RankCapacity) -> str:
        others = [str(r) for r in c.sharers() if r != c.rank]
        return f" (cores shared with rank {', '.join(others)})" if others else ""

    def servable(self, req: HostRequirement) -> bool:
        """Could some rank run it when its host is idle?"""
        return any(req.match(c.idle_spec()) is not None for c in self.ranks.values())

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
            lines.append(f"  rank {rank}: yes    score {score:.3f} (alternative {m.requirement}{extra})  "
                         f"{describe(desc)}")
    lines.append(f"{len(fits)} of {len(rows)} rank(s) can run it" if rows else "no hosts to match against")
    return "\n".join(lines)
