"""What an executor's host offers: cores, memory, accelerators; and per-rank overrides.

Each executor probes its own host when it starts (cores it may use, physical
memory, NVIDIA GPUs through nvidia-smi, Apple's MPS on macOS) and reports it to
rank 0. The configuration can override what a rank offers (`--hosts`, e.g.
`"1,2=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2"`), written in the
requirement language: how tests simulate GPU hosts, and how a site can
describe nodes whose probe is wrong.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List

from mpipipe.errors import RequirementError
from mpipipe.requirements import (AcceleratorSpecification, CPUSpecification, CudaSpecification, HostSpecification,
                                  MPSSpecification, parse)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def nvidia_gpus() -> List[Dict[str, Any]]:
    """NVIDIA devices as [{"kind": "cuda", "memory": bytes, "index": i}] (none if nvidia-smi is absent)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    allowed = None if visible is None else {v.strip() for v in visible.split(",") if v.strip()}
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            if allowed is None or parts[0] in allowed:
                gpus.append({"kind": "cuda", "memory": int(parts[1]) << 20, "index": int(parts[0])})
    return gpus


def apple_mps(memory: int) -> List[Dict[str, Any]]:
    if sys.platform == "darwin" and os.uname().machine == "arm64":
        return [{"kind": "mps", "memory": memory, "index": 0}]
    return []


def probe() -> Dict[str, Any]:
    """This host, as a small JSON-able description sent to rank 0."""
    memory = _memory()
    return {"host": socket.gethostname(), "pid": os.getpid(), "cores": _cores(), "memory": memory,
            "accelerators": nvidia_gpus() + apple_mps(memory)}


def _device(kind: str, memory: int) -> AcceleratorSpecification:
    return CudaSpecification(memory) if kind == "cuda" else MPSSpecification(memory) if kind == "mps" \
        else AcceleratorSpecification(kind, memory)


def spec_of(desc: Dict[str, Any]) -> HostSpecification:
    return HostSpecification(CPUSpecification(int(desc.get("cores", 0)), int(desc.get("memory", 0))),
                             tuple(_device(a["kind"], int(a["memory"])) for a in desc.get("accelerators", ())),
                             float(desc.get("max_duration", 0) or 0))


def device_ids(desc: Dict[str, Any]) -> List[str]:
    """What CUDA_VISIBLE_DEVICES calls each accelerator of a host (its index on the host)."""
    return [str(a.get("index", i)) for i, a in enumerate(desc.get("accelerators", ()))]


def parse_host(text: str) -> Dict[str, Any]:
    """A host description from the requirement language: cpu(cores, mem), cuda/mps(mem) * N, duration."""
    req = parse(text)
    if len(req.alternatives) != 1:
        raise RequirementError(f"a host is one description, not alternatives: {text!r}")
    alt = req.alternatives[0]
    accelerators = []
    for request in alt.accelerators:
        if request.kind == "gpu":
            raise RequirementError(f"say which kind of device a host has (cuda or mps), not gpu: {text!r}")
        accelerators.extend({"kind": request.kind, "memory": request.memory} for _ in range(request.count))
    return {"cores": alt.cpu.cores, "memory": alt.cpu.memory, "accelerators": accelerators,
            "max_duration": alt.duration}


_RANKS = re.compile(r"^\s*(\d+(?:\s*-\s*\d+)?(?:\s*,\s*\d+(?:\s*-\s*\d+)?)*)\s*=(.*)$", re.S)


def parse_overrides(text: str) -> Dict[int, Dict[str, Any]]:
    """`"1,2=cpu(cores=4) & cuda(mem=16GiB) * 2; 3-5=cpu(cores=8)"` -> rank -> host fields to replace."""
    out: Dict[int, Dict[str, Any]] = {}
    for part in (p for p in text.split(";") if p.strip()):
        m = _RANKS.match(part)
        if not m:
            raise RequirementError(f"bad host override {part.strip()!r}: write RANKS=DESCRIPTION, "
                                   "e.g. 1,2=cpu(cores=4, mem=16GiB) & cuda(mem=16GiB) * 2")
        desc = parse_host(m.group(2))
        for item in m.group(1).split(","):
            lo, _, hi = item.partition("-")
            for rank in range(int(lo), int(hi or lo) + 1):
                if rank < 1:
                    raise RequirementError(f"host overrides name executor ranks (1 and up), not {rank}")
                out[rank] = desc
    return out


def apply_override(desc: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Fields the override sets (non-zero cores/memory, its device list) replace the probe's."""
    merged = dict(desc)
    if override.get("cores"):
        merged["cores"] = override["cores"]
    if override.get("memory"):
        merged["memory"] = override["memory"]
    merged["accelerators"] = [dict(a, index=i) for i, a in enumerate(override.get("accelerators", []))]
    if override.get("max_duration"):
        merged["max_duration"] = override["max_duration"]
    merged["overridden"] = True
    return merged


def describe(desc: Dict[str, Any]) -> str:
    """One line for messages: host, cores, memory, devices."""
    devs = ", ".join(f"{a['kind']}({_gib(a['memory'])})" for a in desc.get("accelerators", ())) or "no accelerators"
    return f"{desc.get('host', '?')}: {desc.get('cores', 0)} cores, {_gib(desc.get('memory', 0))} memory, {devs}"


def _gib(size: Any) -> str:
    return f"{int(size) / (1 << 30):.3g}GiB"
