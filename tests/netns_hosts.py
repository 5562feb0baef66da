"""Fake hosts on one machine: one network namespace per host on a private bridge, and an ssh stand-in.

A plain module (no pytest imports), used by tests/test_many_hosts.py::

    hosts = FakeHosts(Path(tmp), ["h1", "h2", "h3"], limits={"h3": Limits(cpu_quota=1.0, memory=1 << 30)})
    try:
        hosts.up()
        run(["mpiexec", "-iface", hosts.bridge, "-launcher", "ssh", "-launcher-exec", hosts.standin, "-f", hostfile, ...])
    finally:
        hosts.down()          # always: kills what runs on the hosts (by pid), removes namespaces, bridge, cgroups

Each host is a namespace on the bridge (10.77.N.0/24, N free here) with its own address. The stand-in is what
MPICH's hydra runs instead of ssh (`stand-in [-x] HOST COMMAND`): it enters the host's namespace with
`nsenter --net` (not `ip netns exec`, which remounts /sys and hides /sys/fs/cgroup), gives the command the
host's name in a UTS namespace of its own (`unshare -u`), puts it in the host's cgroups when the host has
limits, and runs it. Names carry a random tag, so several sessions can have fake hosts at once. The hosts
share the kernel: a lock or a pid taken on one is visible on the others.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

CGROUP = Path("/sys/fs/cgroup")


class FakeHostsError(RuntimeError):
    """A fake host could not be made."""


@dataclass(frozen=True)
class Limits:
    """A host's allocation, enforced with cgroups: CPU quota in cores, memory in bytes."""

    cpu_quota: Optional[float] = None
    memory: Optional[int] = None


def available() -> "tuple[bool, str]":
    """Whether fake hosts can be made here, and why not."""
    if os.uname().sysname != "Linux":
        return False, "fake hosts need Linux network namespaces"
    if os.geteuid() != 0:
        return False, "fake hosts need root (ip netns add, a bridge)"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (apt-get install -y iproute2 util-linux)"
    return True, "root, ip, nsenter and unshare are here"


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise FakeHostsError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def cgroup_version() -> int:
    """1 when the cpu and memory v1 controllers are mounted (as here), 2 for a unified tree with both
    controllers on offer to children, 0 when neither can hold limits."""
    if (CGROUP / "cpu" / "cpu.cfs_quota_us").exists() and (CGROUP / "memory" / "memory.limit_in_bytes").exists():
        return 1
    try:
        offered = (CGROUP / "cgroup.subtree_control").read_text().split()
    except OSError:
        return 0
    return 2 if {"cpu", "memory"} <= set(offered) else 0


class FakeHosts:
    """Network-namespace hosts on a bridge, their cgroups, and the ssh stand-in that runs commands on them."""

    def __init__(self, folder: Path, names: Sequence[str], limits: Optional[Dict[str, Limits]] = None) -> None:
        self.folder = folder
        self.names = list(names)
        self.limits = dict(limits or {})
        self.tag = f"{random.randrange(16 ** 5):05x}"
        self.bridge = f"mpb{self.tag}"
        self.namespaces = {h: f"mpipipe-{self.tag}-{h}" for h in self.names}
        self.subnet = ""
        self.addresses: Dict[str, str] = {}
        self.cgroups: List[Path] = []
        self.standin = str(folder / "ssh-stand-in")
        self._made_bridge = False
        self._made: List[str] = []

    # --- up ----------------------------------------------------------------------------------------------

    def up(self) -> "FakeHosts":
        """Make the bridge, the namespaces, the cgroups and the stand-in (down() undoes what was made)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.subnet = self._free_subnet()
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._made_bridge = True
        _run(["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i, host in enumerate(self.names, start=11):
            ns = self.namespaces[host]
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            veth = f"mpv{self.tag}{i - 10}"
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", veth, "master", self.bridge])
            _run(["ip", "link", "set", veth, "up"])
            self.addresses[host] = f"{self.subnet}.{i}"
            inside = ["nsenter", f"--net=/run/netns/{ns}"]
            _run(inside + ["ip", "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0"])
            _run(inside + ["ip", "link", "set", "eth0", "up"])
            _run(inside + ["ip", "link", "set", "lo", "up"])
        self._make_cgroups()
        self._write_standin()
        return self

    def _free_subnet(self) -> str:
        used = _run(["ip", "-4", "-o", "addr"]).stdout
        for n in random.sample(range(40, 250), 60):
            if f" 10.77.{n}." not in used:
                return f"10.77.{n}"
        raise FakeHostsError("no free 10.77.N.0/24 subnet for the fake hosts' bridge")

    def cgroup_dirs(self, host: str) -> List[Path]:
        """The cgroup folders that hold a host's limits (v1: one per controller; v2: one)."""
        name = f"mpipipe-{self.tag}-{host}"
        if cgroup_version() == 1:
            return [CGROUP / "cpu" / name, CGROUP / "memory" / name]
        return [CGROUP / name]

    def _make_cgroups(self) -> None:
        if not self.limits:
            return
        version = cgroup_version()
        if version == 0:
            raise FakeHostsError("no cgroup controller can hold CPU and memory limits here")
        for host, lim in self.limits.items():
            dirs = self.cgroup_dirs(host)
            for d in dirs:
                d.mkdir()
                self.cgroups.append(d)
            if version == 1:
                cpu, mem = dirs
                if lim.cpu_quota is not None:
                    (cpu / "cpu.cfs_period_us").write_text("100000")
                    (cpu / "cpu.cfs_quota_us").write_text(str(int(lim.cpu_quota * 100000)))
                if lim.memory is not None:
                    (mem / "memory.limit_in_bytes").write_text(str(lim.memory))
            else:
                if lim.cpu_quota is not None:
                    (dirs[0] / "cpu.max").write_text(f"{int(lim.cpu_quota * 100000)} 100000")
                if lim.memory is not None:
                    (dirs[0] / "memory.max").write_text(str(lim.memory))

    def _write_standin(self) -> None:
        cases = []
        for host in self.names:
            join = "".join(f" echo $$ > {d}/cgroup.procs;" for d in self.cgroup_dirs(host)) \
                if host in self.limits else ""
            cases.append(f"  {host}) ns={self.namespaces[host]};{join} ;;")
        script = "\n".join([
            "#!/bin/sh",
            "# ssh stand-in for fake hosts: [-x] HOST COMMAND (as MPICH's hydra calls ssh); exec keeps the pid,",
            "# so the command stays in the cgroups this shell joins",
            'while [ "${1#-}" != "$1" ]; do shift; done',
            "host=$1; shift",
            'case "$host" in',
            *cases,
            '  *) echo "no fake host $host" >&2; exit 255 ;;',
            "esac",
            'exec nsenter --net=/run/netns/$ns unshare -u sh -c "hostname $host; exec $*"',
            "",
        ])
        Path(self.standin).write_text(script)
        os.chmod(self.standin, 0o755)

    def hostfile(self, slots: Dict[str, int], form: str = "mpich") -> str:
        """A hostfile of these hosts, in MPICH ("h1:2") or Open MPI ("h1 slots=2") form; returns its path."""
        path = self.folder / f"hosts-{form}"
        lines = [f"{h}:{n}" if form == "mpich" else f"{h} slots={n}" for h, n in slots.items()]
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def run_on(self, host: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command on a fake host through the stand-in (as hydra would)."""
        import shlex

        return _run([self.standin, host, shlex.join(argv)], check=False, timeout=timeout)

    # --- down --------------------------------------------------------------------------------------------

    def pids(self) -> List[int]:
        """Processes on the fake hosts: in one of their namespaces or cgroups (never found by name)."""
        found = set()
        inodes = set()
        for ns in self._made:
            try:
                inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
            except OSError:
                pass
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    found.add(int(entry))
            except OSError:
                continue
        for d in self.cgroups:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def down(self) -> None:
        """Kill what runs on the hosts, then remove the namespaces, the bridge and the cgroups; every step is
        tried even when an earlier one failed."""
        errors = []
        for attempt in range(50):
            left = self.pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.1)
        for ns in reversed(self._made):
            done = _run(["ip", "netns", "del", ns], check=False)
            if done.returncode != 0 and os.path.exists(f"/run/netns/{ns}"):
                errors.append(f"ip netns del {ns}: {done.stderr.strip()}")
        self._made = []
        if self._made_bridge:
            done = _run(["ip", "link", "del", self.bridge], check=False)
            if done.returncode != 0 and self.bridge in _run(["ip", "-o", "link"], check=False).stdout:
                errors.append(f"ip link del {self.bridge}: {done.stderr.strip()}")
            self._made_bridge = False
        for d in reversed(self.cgroups):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                errors.append(f"cannot remove the cgroup {d}")
        self.cgroups = []
        if errors:
            raise FakeHostsError("; ".join(errors))

    def leftovers(self) -> List[str]:
        """What of these hosts still exists (for a test that checks the cleanup)."""
        out = [f"netns {ns}" for ns in self.namespaces.values() if os.path.exists(f"/run/netns/{ns}")]
        if self.bridge in _run(["ip", "-o", "link"], check=False).stdout:
            out.append(f"bridge {self.bridge}")
        out += [f"cgroup {d}" for host in self.limits for d in self.cgroup_dirs(host) if d.exists()]
        return out
