"""What an executor's host offers within the job's allocation: cores, memory, accelerators; and overrides.

Each executor probes its own host when it starts and reports it to rank 0. The
figures are what this process may use, not what the machine has: the CPU
affinity, the cgroup (v1 or v2) CPU quota and memory limit, and SLURM's
allocation (cpus per task or on the node, memory per node or per CPU, the
GPUs of the job) each bound them. Every figure comes with a pool key saying
which ranks on the same host share it (ranks that see the same cores share
them; a SLURM per-task share is the rank's own), so rank 0 never places more
on a host than it has.

The configuration can override what a rank or a host offers (`--hosts`, e.g.
`"1,2=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2; node3=cpu(cores=16)"`),
written in the requirement language: how tests simulate GPU hosts, and how a
site describes nodes whose probe is wrong. A rank's entry is that rank's own;
a host's entry is shared by the ranks on that host.

The readers below take their files and environment as arguments, so they can
be tested against fake /sys/fs/cgroup trees.
"""
from __future__ import annotations

import fnmatch
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mpipipe.errors import RequirementError
from mpipipe.execution.osutil import physical_memory

if TYPE_CHECKING:  # the requirement language is rank 0's (placement) and --hosts's: an executor's probe needs none
    from mpipipe.requirements import AcceleratorSpecification, HostSpecification

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
_UNLIMITED_V1 = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


# --- CPU lists ---------------------------------------------------------------------------------------------

def parse_cpu_list(text: str) -> List[int]:
    """"0-3,8,10-11" (as in cpuset.cpus and /sys/devices/system/cpu/online) -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: List[int] = []
    for item in text.strip().split(","):
        item = item.strip()
        if not item:
            continue
        lo, _, hi = item.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(cpus))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of parse_cpu_list: the shortest "0-3,8" form."""
    out: List[str] = []
    run: List[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [c]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


# --- cgroups -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CgroupLimits:
    """The CPU quota (in cores) and memory limit of this process's cgroups, and which cgroup sets each."""

    cpu_quota: Optional[float] = None
    cpu_group: str = ""
    memory: Optional[int] = None
    memory_group: str = ""


def read_proc_cgroup(text: str) -> Dict[str, str]:
    """Controller -> cgroup path from /proc/self/cgroup: v1 lines "4:cpu,cpuacct:/a"; the v2 line "0::/a"
    is under the key ""."""
    paths: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for name in controllers.split(","):
            if name:
                paths[name] = path
    return paths


def _chain(base: str, path: str) -> List[Tuple[str, str]]:
    """(folder, cgroup path) from this process's cgroup up to the mount's root, the folders that exist.

    A cgroup path that the mount does not show (a container that sees only its own subtree) leaves only
    the folders that exist, at least the mount's root."""
    parts = [p for p in path.split("/") if p]
    out = []
    for i in range(len(parts), -1, -1):
        folder = os.path.join(base, *parts[:i])
        if os.path.isdir(folder):
            out.append((folder, "/" + "/".join(parts[:i])))
    return out


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _v1_folder(root: str, controller: str) -> Optional[str]:
    """Where a v1 controller is mounted: root/cpu, or a joint mount such as root/cpu,cpuacct."""
    direct = os.path.join(root, controller)
    if os.path.isdir(direct):
        return direct
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in names:
        if controller in name.split(",") and os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _lower(current: Optional[float], group: str, value: Optional[float], where: str) -> Tuple[Optional[float], str]:
    if value is not None and (current is None or value < current):
        return value, where
    return current, group


def cgroup_limits(root: str = CGROUP_ROOT, proc_cgroup_text: Optional[str] = None) -> CgroupLimits:
    """The tightest CPU quota and memory limit on the way from this process's cgroups to the root, in
    cgroup v2 (cpu.max, memory.max) and v1 (cpu.cfs_quota_us / cpu.cfs_period_us, memory.limit_in_bytes)."""
    if proc_cgroup_text is None:
        proc_cgroup_text = _read(PROC_CGROUP) or ""
    paths = read_proc_cgroup(proc_cgroup_text)
    quota: Optional[float] = None
    quota_group = ""
    memory: Optional[float] = None
    memory_group = ""
    for base in (root, os.path.join(root, "unified")):  # v2: the whole tree, or its part in a hybrid mount
        if "" not in paths or not os.path.exists(os.path.join(base, "cgroup.controllers")):
            continue
        for folder, group in _chain(base, paths[""]):
            cpu_max = _read(os.path.join(folder, "cpu.max"))
            if cpu_max:
                q, _, period = cpu_max.partition(" ")
                if q.isdigit() and period.strip().isdigit() and int(period) > 0:
                    quota, quota_group = _lower(quota, quota_group, int(q) / int(period), group)
            mem_max = _read(os.path.join(folder, "memory.max"))
            if mem_max and mem_max.isdigit():
                memory, memory_group = _lower(memory, memory_group, int(mem_max), group)
        break
    cpu_folder = _v1_folder(root, "cpu")
    if cpu_folder and "cpu" in paths:
        for folder, group in _chain(cpu_folder, paths["cpu"]):
            cfs_quota = _read(os.path.join(folder, "cpu.cfs_quota_us")) or ""
            cfs_period = _read(os.path.join(folder, "cpu.cfs_period_us")) or ""
            if cfs_quota.isdigit() and cfs_period.isdigit() and int(cfs_quota) > 0 and int(cfs_period) > 0:
                quota, quota_group = _lower(quota, quota_group, int(cfs_quota) / int(cfs_period), group)
    mem_folder = _v1_folder(root, "memory")
    if mem_folder and "memory" in paths:
        for folder, group in _chain(mem_folder, paths["memory"]):
            limit = _read(os.path.join(folder, "memory.limit_in_bytes"))
            if limit and limit.isdigit() and int(limit) < _UNLIMITED_V1:
                memory, memory_group = _lower(memory, memory_group, int(limit), group)
    return CgroupLimits(quota, quota_group, None if memory is None else int(memory), memory_group)


# --- SLURM's allocation ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmShare:
    """What SLURM gave this task: cores and memory (each the rank's own, or the job's on this node), GPUs."""

    job: str
    cores: Optional[int] = None
    cores_per_rank: bool = False
    memory: Optional[int] = None
    memory_per_rank: bool = False
    gpus: Optional[Tuple[str, ...]] = None  # the node's GPU ids SLURM gave the job (or this step)


def _positive_int(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def slurm_share(env: Mapping[str, str]) -> Optional[SlurmShare]:
    """SLURM's allocation from a task's environment (None outside SLURM).

    SLURM_CPUS_PER_TASK is the rank's own; without it SLURM_CPUS_ON_NODE is shared by the job's ranks on
    the node. SLURM_MEM_PER_NODE (MiB) is the job's on the node; SLURM_MEM_PER_CPU (MiB) times the cores.
    GPUs: SLURM_STEP_GPUS, else SLURM_JOB_GPUS.
    """
    job = (env.get("SLURM_JOB_ID") or "").strip()
    if not job:
        return None
    per_task = _positive_int(env.get("SLURM_CPUS_PER_TASK"))
    on_node = _positive_int(env.get("SLURM_CPUS_ON_NODE"))
    cores = per_task or on_node
    memory: Optional[int] = None
    memory_per_rank = False
    per_node_mb = _positive_int(env.get("SLURM_MEM_PER_NODE"))
    per_cpu_mb = _positive_int(env.get("SLURM_MEM_PER_CPU"))
    if per_node_mb:
        memory = per_node_mb << 20
    elif per_cpu_mb and cores:
        memory = (per_cpu_mb * cores) << 20
        memory_per_rank = per_task is not None
    gpus_text = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS")
    gpus = tuple(g.strip() for g in gpus_text.split(",") if g.strip()) if gpus_text is not None else None
    return SlurmShare(job, cores, per_task is not None, memory, memory_per_rank, gpus)


# --- accelerators -----------------------------------------------------------------------------------------

def nvidia_smi_rows() -> List[Tuple[str, str, int]]:
    """(index, uuid, memory bytes) of every NVIDIA device nvidia-smi lists (none without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
            rows.append((parts[0], parts[1], int(parts[2]) << 20))
    return rows


def cuda_devices(env: Mapping[str, str], smi: Sequence[Tuple[str, str, int]],
                 slurm: Optional[SlurmShare]) -> List[Dict[str, Any]]:
    """The CUDA devices this process may use: [{"kind": "cuda", "memory", "index", "device"}].

    `index` is what CUDA_VISIBLE_DEVICES calls the device for a task (the entries of this process's own
    CUDA_VISIBLE_DEVICES when it is set, else nvidia-smi's index); `device` names the physical device, so
    ranks on one host that see the same device share it. SLURM's GPUs without nvidia-smi are listed with
    memory 0 (unknown): a task that asks for a device without a memory size can still have one.
    """
    by_id = {}
    for index, uuid, memory in smi:
        by_id[index] = (index, memory)
        by_id[uuid] = (index, memory)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    slurm_ids = list(slurm.gpus) if slurm is not None and slurm.gpus is not None else None
    if visible is not None:
        names = [v.strip() for v in visible.split(",") if v.strip()]
        if names and names[0].lstrip("-").isdigit() and int(names[0]) < 0:
            names = []  # CUDA_VISIBLE_DEVICES=-1: no device
        physical = slurm_ids if slurm_ids is not None and len(slurm_ids) == len(names) else names
        if not smi and slurm_ids is None:
            return []
    elif slurm_ids is not None:
        names, physical = slurm_ids, slurm_ids
    else:
        return [{"kind": "cuda", "memory": memory, "index": index, "device": index} for index, _, memory in smi]
    out = []
    for name, phys in zip(names, physical):
        index, memory = by_id.get(phys, by_id.get(name, (phys, 0)))
        out.append({"kind": "cuda", "memory": memory, "index": name, "device": str(index)})
    return out


def nvidia_gpus() -> List[Dict[str, Any]]:
    """NVIDIA devices this process may use (none if nvidia-smi is absent and SLURM gave none)."""
    return cuda_devices(os.environ, nvidia_smi_rows(), slurm_share(os.environ))


def apple_mps(memory: int) -> List[Dict[str, Any]]:
    if sys.platform == "darwin" and os.uname().machine == "arm64":
        return [{"kind": "mps", "memory": memory, "index": 0, "device": "mps"}]
    return []


# --- the whole allocation ---------------------------------------------------------------------------------

def allocation(affinity: Sequence[int], physical_memory: int, cgroup: CgroupLimits,
               slurm: Optional[SlurmShare]) -> Dict[str, Any]:
    """This rank's cores and memory: the tightest of affinity, cgroup and SLURM, each figure with the pool
    key of the limit that set it (ranks on one host with equal keys share the figure; "rank": its own)
    and, under "limits", what set it."""
    cpus = format_cpu_list(affinity)
    # (figure, pool key, what set it): the tightest wins
    cores = [(max(1, len(affinity)), f"cpus {cpus}", f"CPU affinity {cpus or '?'}")]
    memory = [(physical_memory, "host", "physical memory")] if physical_memory > 0 else []
    if cgroup.cpu_quota is not None:
        cores.append((max(1, math.floor(cgroup.cpu_quota)), f"cpus {cpus} cgroup {cgroup.cpu_group}",
                      f"cgroup {cgroup.cpu_group} CPU quota of {cgroup.cpu_quota:g} cores"))
    if cgroup.memory is not None:
        memory.append((cgroup.memory, f"cgroup {cgroup.memory_group}", f"cgroup {cgroup.memory_group} memory limit"))
    if slurm is not None and slurm.cores is not None:
        cores.append((slurm.cores, "rank" if slurm.cores_per_rank else f"slurm job {slurm.job}",
                      f"SLURM_CPUS_PER_TASK={slurm.cores}" if slurm.cores_per_rank
                      else f"SLURM_CPUS_ON_NODE={slurm.cores}"))
    if slurm is not None and slurm.memory is not None:
        memory.append((slurm.memory, "rank" if slurm.memory_per_rank else f"slurm job {slurm.job}",
                       "SLURM_MEM_PER_CPU x cores" if slurm.memory_per_rank else "SLURM's memory per node"))
    cores_n, cores_key, cores_why = _tightest(cores)
    memory_n, memory_key, memory_why = _tightest(memory) if memory else (0, "host", "unknown")
    return {"cores": cores_n, "memory": memory_n, "cpus": cpus, "pools": {"cores": cores_key, "memory": memory_key},
            "limits": {"cores": cores_why, "memory": memory_why}}


def _tightest(candidates: List[Tuple[int, str, str]]) -> Tuple[int, str, str]:
    """The smallest figure; on a tie SLURM's (its share is the job's, whoever else shares the machine), else
    the broader pool (two cgroups whose limits equal the machine's still share the machine)."""
    best = candidates[0]
    for c in candidates[1:]:
        if c[0] < best[0] or c[0] == best[0] and (c[1] == "rank" or c[1].startswith("slurm")):
            best = c
    return best


def _affinity() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def host_id(hostname: str) -> str:
    """Names a host for pooling: its name and its kernel's boot id (two machines that share a name stay
    apart; network namespaces or containers with names of their own too)."""
    boot = _read("/proc/sys/kernel/random/boot_id") or ""
    return f"{hostname}/{boot[:8]}" if boot else hostname


def local_allocation(env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """This process's cores and memory within its allocation (no device probe: no nvidia-smi call)."""
    return allocation(_affinity(), physical_memory(), cgroup_limits(), slurm_share(os.environ if env is None else env))


LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE")


def launcher_local_size(env: Mapping[str, str]) -> Optional[int]:
    """Ranks the MPI launcher started on this host (rank 0 included when it runs here), if it says."""
    for var in LOCAL_SIZE_VARIABLES:
        n = _positive_int(env.get(var))
        if n:
            return n
    return None


def probe(env: Optional[Mapping[str, str]] = None, cgroup_root: str = CGROUP_ROOT) -> Dict[str, Any]:
    """This host, within this process's allocation, as a small JSON-able description sent to rank 0."""
    env = os.environ if env is None else env
    slurm = slurm_share(env)
    desc = allocation(_affinity(), physical_memory(), cgroup_limits(cgroup_root), slurm)
    name = socket.gethostname()
    accelerators = cuda_devices(env, nvidia_smi_rows(), slurm) + apple_mps(physical_memory())
    desc.update(host=name, host_id=host_id(name), pid=os.getpid(), accelerators=accelerators)
    return desc


# --- what rank 0 does with the descriptions ----------------------------------------------------------------

def _device(kind: str, memory: int) -> AcceleratorSpecification:
    from mpipipe.requirements import AcceleratorSpecification, CudaSpecification, MPSSpecification

    return CudaSpecification(memory) if kind == "cuda" else MPSSpecification(memory) if kind == "mps" \
        else AcceleratorSpecification(kind, memory)


def spec_of(desc: Dict[str, Any]) -> HostSpecification:
    from mpipipe.requirements import CPUSpecification, HostSpecification

    return HostSpecification(CPUSpecification(int(desc.get("cores", 0)), int(desc.get("memory", 0))),
                             tuple(_device(a["kind"], int(a["memory"])) for a in desc.get("accelerators", ())),
                             float(desc.get("max_duration", 0) or 0))


def device_ids(desc: Dict[str, Any]) -> List[str]:
    """What CUDA_VISIBLE_DEVICES calls each accelerator of a host (its index on the host)."""
    return [str(a.get("index", i)) for i, a in enumerate(desc.get("accelerators", ()))]


PoolKey = Tuple[Any, ...]


def pool_keys(rank: int, desc: Dict[str, Any]) -> Tuple[PoolKey, PoolKey, List[PoolKey]]:
    """(cores pool, memory pool, one pool per device) of a rank: ranks with equal keys share what they name.

    A description without pool keys (an older mpipipe, a test's hand-made host) is its rank's own."""
    pools = desc.get("pools") or {}
    host = desc.get("host_id") or desc.get("host") or "?"

    def key(kind: str) -> PoolKey:
        name = pools.get(kind, "rank")
        return ("rank", rank, kind) if name == "rank" else ("host", host, kind, name)

    devices = desc.get("accelerators", ())
    if pools.get("devices", "host" if pools else "rank") == "rank":
        dev_keys: List[PoolKey] = [("rank", rank, "device", i) for i in range(len(devices))]
    else:
        dev_keys = [("host", host, "device", a.get("kind"), str(a.get("device", a.get("index", i))))
                    for i, a in enumerate(devices)]
    return key("cores"), key("memory"), dev_keys


def pool_members(hosts: Dict[int, Dict[str, Any]], rank: int, kind: str = "cores") -> List[int]:
    """The executor ranks that share `rank`'s cores (kind "cores") or memory ("memory"), itself included."""
    if rank not in hosts:
        return [rank]
    at = 0 if kind == "cores" else 1
    mine = pool_keys(rank, hosts[rank])[at]
    return sorted(r for r, d in hosts.items() if pool_keys(r, d)[at] == mine)


def host_members(hosts: Dict[int, Dict[str, Any]], rank: int) -> List[int]:
    """The executor ranks on `rank`'s host, itself included."""
    if rank not in hosts:
        return [rank]
    mine = hosts[rank].get("host_id") or hosts[rank].get("host")
    return sorted(r for r, d in hosts.items() if (d.get("host_id") or d.get("host")) == mine)


def parse_host(text: str) -> Dict[str, Any]:
    """A host description from the requirement language: cpu(cores, mem), cuda/mps(mem) * N, duration."""
    from mpipipe.requirements import parse

    req = parse(text)
    if len(req.alternatives) != 1:
        raise RequirementError(f"a host is one description, not alternatives: {text!r}")
    alt = req.alternatives[0]
    accelerators: List[Dict[str, Any]] = []
    for request in alt.accelerators:
        if request.kind == "gpu":
            raise RequirementError(f"say which kind of device a host has (cuda or mps), not gpu: {text!r}")
        accelerators.extend({"kind": request.kind, "memory": request.memory} for _ in range(request.count))
    return {"cores": alt.cpu.cores, "memory": alt.cpu.memory, "accelerators": accelerators,
            "max_duration": alt.duration}


_PART = re.compile(r"^\s*([^=]*?)\s*=(.*)$", re.S)
_RANK_ITEM = re.compile(r"^\d+(?:\s*-\s*\d+)?$")
_HOST_ITEM = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+$")
_EXAMPLE = "e.g. 1,2=cpu(cores=4, mem=16GiB) & cuda(mem=16GiB) * 2; node3=cpu(cores=8)"


def parse_override_parts(text: str) -> List[Tuple[List[int], List[str], Dict[str, Any]]]:
    """`"1,2=...; 3-5=...; node7,gpu*=..."` -> [(ranks, host name patterns, host fields to replace)]."""
    out = []
    for part in (p for p in text.split(";") if p.strip()):
        m = _PART.match(part)
        items = [i.strip() for i in m.group(1).split(",")] if m else []
        if not m or not items or any(not (_RANK_ITEM.match(i) or _HOST_ITEM.match(i)) for i in items):
            raise RequirementError(f"bad host override {part.strip()!r}: write RANKS=DESCRIPTION or "
                                   f"HOSTNAMES=DESCRIPTION, {_EXAMPLE}")
        desc = parse_host(m.group(2))
        ranks: List[int] = []
        names: List[str] = []
        for item in items:
            if not _RANK_ITEM.match(item):
                names.append(item)
                continue
            lo, _, hi = item.partition("-")
            for rank in range(int(lo), int(hi or lo) + 1):
                if rank < 1:
                    raise RequirementError(f"host overrides name executor ranks (1 and up), not {rank}; "
                                           f"{_EXAMPLE}")
                ranks.append(rank)
        out.append((ranks, names, desc))
    return out


def parse_overrides(text: str) -> Dict[int, Dict[str, Any]]:
    """The rank entries of `--hosts`: rank -> host fields to replace (host-name entries are checked here
    and applied by each executor to itself, see host_override)."""
    out: Dict[int, Dict[str, Any]] = {}
    for ranks, _names, desc in parse_override_parts(text):
        for rank in ranks:
            out[rank] = desc
    return out


def host_matches(pattern: str, hostname: str) -> bool:
    """A host entry names a host by its name or its short name (before the first dot), or a shell pattern."""
    short = hostname.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(n.lower(), pattern.lower()) for n in (hostname, short))


def host_override(text: str, hostname: str) -> Optional[Dict[str, Any]]:
    """The last `--hosts` entry that names this host (by name), or None."""
    found = None
    for _ranks, names, desc in parse_override_parts(text):
        if any(host_matches(n, hostname) for n in names):
            found = desc
    return found


def apply_override(desc: Dict[str, Any], override: Dict[str, Any], scope: str = "rank") -> Dict[str, Any]:
    """Fields the override sets (non-zero cores/memory, its device list) replace the probe's.

    scope "rank": what it sets is the rank's own; "host": shared by the ranks of the host (each applies
    the same entry to itself, so their pool keys agree)."""
    merged = dict(desc)
    pools = dict(desc.get("pools") or {})
    limits = dict(desc.get("limits") or {})
    own = "rank" if scope == "rank" else "override"
    if override.get("cores"):
        merged["cores"] = override["cores"]
        pools["cores"], limits["cores"] = own, f"--hosts ({scope})"
    if override.get("memory"):
        merged["memory"] = override["memory"]
        pools["memory"], limits["memory"] = own, f"--hosts ({scope})"
    merged["accelerators"] = [dict(a, index=i, device=f"override {i}")
                              for i, a in enumerate(override.get("accelerators", []))]
    pools["devices"] = "rank" if scope == "rank" else "host"
    if override.get("max_duration"):
        merged["max_duration"] = override["max_duration"]
    if desc.get("pools") is not None or scope == "host":
        merged["pools"] = pools
    merged["limits"] = limits
    merged["overridden"] = scope if scope == "host" else True
    return merged


def describe(desc: Dict[str, Any]) -> str:
    """One line for messages: host, cores, memory, devices."""
    devs = ", ".join(f"{a['kind']}({_gib(a['memory'])})" for a in desc.get("accelerators", ())) or "no accelerators"
    return f"{desc.get('host', '?')}: {desc.get('cores', 0)} cores, {_gib(desc.get('memory', 0))} memory, {devs}"


def _gib(size: Any) -> str:
    return f"{int(size) / (1 << 30):.3g}GiB"
