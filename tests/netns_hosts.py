"""Fake hosts on one machine: one network namespace per host on a private bridge, and an ssh stand-in.

A plain module (no pytest imports), used by tests/test_many_hosts.py::

    hosts = FakeHosts(Path(tmp), ["h1", "h2", "h3"], limits={"h3": Limits(cpu_quota=1.0, memory=1 << 30)})
    try:
        hosts.up()
        run(["mpiexec", "-iface", hosts.bridge, "-launcher", "ssh", "-launcher-exec", hosts.standin,
             "-f", hosts.hostfile({"h1": 1, "h2": 2, "h3": 2}), ...])
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


def new_tag() -> str:
    """Five hex digits that name what one session makes (namespaces, bridge, cgroups, host names)."""
    return f"{random.randrange(16 ** 5):05x}"


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


def _apt_install(packages: Sequence[str]) -> None:
    """apt-get install, with apt-get update when the package lists are missing (a clean CI image)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold", *packages]
    if subprocess.run(argv, capture_output=True, timeout=900, env=env, stdin=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env,
                       stdin=subprocess.DEVNULL)
        subprocess.run(argv, capture_output=True, timeout=900, env=env, stdin=subprocess.DEVNULL)


def ensure_available() -> "tuple[bool, str]":
    """available(), after installing iproute2 when `ip` is missing and apt-get can (CI runs as root on a
    clean Debian, which may lack it)."""
    if os.geteuid() == 0 and shutil.which("ip") is None and shutil.which("apt-get"):
        _apt_install(["iproute2"])
    return available()


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30,
         env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=env)
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

    def __init__(self, folder: Path, names: Sequence[str], limits: Optional[Dict[str, Limits]] = None,
                 tag: Optional[str] = None) -> None:
        self.folder = folder
        self.names = list(names)
        self.limits = dict(limits or {})
        self.tag = tag or new_tag()
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


# --- a SLURM cluster whose nodes are fake hosts ------------------------------------------------------------

HOSTS_FILE = Path("/etc/hosts")
SBIN = "/usr/sbin"


def slurm_available() -> "tuple[bool, str]":
    """Whether a SLURM cluster can be made on fake hosts; as root with apt-get, slurm-wlm and munge are
    installed when missing (as scripts/slurm-up does)."""
    ok, why = ensure_available()
    if not ok:
        return ok, why
    if shutil.which("sbatch") is None and shutil.which("apt-get"):
        _apt_install(["slurm-wlm", "munge"])
    if not Path("/etc/munge/munge.key").exists() and shutil.which("mungekey"):
        _run(["mungekey", "--create", "--keyfile=/etc/munge/munge.key"], check=False)
        try:
            os.chown("/etc/munge/munge.key", *_munge_ids())
        except (OSError, KeyError):
            pass
    missing = [c for c in ("slurmctld", "slurmd", "munged") if not os.path.exists(os.path.join(SBIN, c))]
    missing += [c for c in ("sbatch", "srun", "sinfo", "squeue") if shutil.which(c) is None]
    if missing:
        return False, f"{', '.join(missing)} not installed (apt-get install -y slurm-wlm munge)"
    if not Path("/etc/munge/munge.key").exists():
        return False, "no /etc/munge/munge.key (apt-get install -y munge makes one)"
    return True, "SLURM and MUNGE are installed"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmOnFakeHosts:
    """slurmctld on the bridge's address (with a host name of its own), one slurmd per fake host, and a
    munged of their own on a socket in the cluster folder (other clusters on the machine keep theirs).

    The host names go into /etc/hosts (lines tagged with the cluster's tag, removed by down()): srun on one
    node must reach the others by name.
    """

    def __init__(self, hosts: FakeHosts, folder: Path, cpus: int = 2, memory_mb: int = 2048) -> None:
        self.hosts = hosts
        self.folder = folder
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.controller = f"ctl{hosts.tag}"
        self.conf = str(folder / "slurm.conf")
        self.munge_dir: Optional[Path] = None  # where the munge user can reach it (not under pytest's 0700 tmp)
        self._hosts_tag = f"# mpipipe fake hosts {hosts.tag}"
        self._pids: Dict[str, int] = {}

    def env(self) -> Dict[str, str]:
        return {"SLURM_CONF": self.conf}

    def up(self, timeout: float = 90) -> "SlurmOnFakeHosts":
        f = self.folder
        for sub in ("state", "spool", "run", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        self._add_host_names()
        self._start_munged()
        ctld_port, slurmd_port = _free_port(), _free_port()
        nodes = "\n".join(f"NodeName={h} NodeAddr={self.hosts.addresses[h]} CPUs={self.cpus} "
                          f"RealMemory={self.memory_mb} State=UNKNOWN" for h in self.hosts.names)
        Path(self.conf).write_text(f"""ClusterName=fake{self.hosts.tag}
SlurmctldHost={self.controller}({self.hosts.subnet}.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_dir}/munge.socket,cred_expire=30
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool/%n
SlurmctldPidFile={f}/run/slurmctld.pid
SlurmdPidFile={f}/run/slurmd-%n.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd-%n.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmdParameters=config_overrides
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        _run(["unshare", "-u", "sh", "-c", f"hostname {self.controller}; exec {SBIN}/slurmctld -f {self.conf}"])
        self._pids["slurmctld"] = self._wait_pid(f / "run" / "slurmctld.pid")
        for h in self.hosts.names:
            ns = self.hosts.namespaces[h]
            _run(["nsenter", f"--net=/run/netns/{ns}", "unshare", "-u", "sh", "-c",
                  f"hostname {h}; exec {SBIN}/slurmd -f {self.conf}"])
            self._pids[f"slurmd {h}"] = self._wait_pid(f / "run" / f"slurmd-{h}.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = _run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False, timeout=10, env=self._env()).stdout
            if sum(1 for line in states.splitlines() if line.split()[-1:] in (["idle"], ["mixed"])) == \
                    len(self.hosts.names):
                return self
            time.sleep(0.5)
        raise FakeHostsError(f"the SLURM nodes did not become idle in {timeout:.0f} s: {states!r}; logs in {f}/log")

    def _env(self) -> Dict[str, str]:
        return dict(os.environ, **self.env())

    def _wait_pid(self, path: Path, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        raise FakeHostsError(f"no pid file {path} after {timeout:.0f} s; logs in {self.folder}/log")

    def _start_munged(self) -> None:
        import tempfile

        d = self.munge_dir = Path(tempfile.mkdtemp(prefix=f"mpipipe-munge-{self.hosts.tag}-"))
        os.chown(d, *_munge_ids())
        os.chmod(d, 0o755)  # munged wants every client able to reach its socket
        _run(["runuser", "-u", "munge", "--", f"{SBIN}/munged", f"--socket={d}/munge.socket",
              f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"])
        self._pids["munged"] = self._wait_pid(d / "munged.pid")

    def _add_host_names(self) -> None:
        lines = [f"{self.hosts.subnet}.1 {self.controller} {self._hosts_tag}"]
        lines += [f"{self.hosts.addresses[h]} {h} {self._hosts_tag}" for h in self.hosts.names]
        with open(HOSTS_FILE, "a") as f:
            f.write("\n".join(lines) + "\n")

    def _remove_host_names(self) -> None:
        text = HOSTS_FILE.read_text()
        kept = [line for line in text.splitlines(keepends=True) if not line.rstrip().endswith(self._hosts_tag)]
        if len(kept) != len(text.splitlines()):
            with open(HOSTS_FILE, "w") as f:  # in place: /etc/hosts may be a bind mount
                f.write("".join(kept))

    def down(self) -> None:
        """Stop the daemons by their pids (SIGTERM, then SIGKILL), remove the /etc/hosts lines."""
        for name, pid in reversed(list(self._pids.items())):
            _stop(pid)
        self._pids = {}
        self._remove_host_names()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    def leftovers(self) -> List[str]:
        out = [line for line in HOSTS_FILE.read_text().splitlines() if line.rstrip().endswith(self._hosts_tag)]
        for pidfile in (self.folder / "run").glob("*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if _alive(pid):
                out.append(f"{pidfile.name}: {pid} runs")
        if self.munge_dir is not None and self.munge_dir.exists():
            out.append(f"munge folder {self.munge_dir}")
        return out


def _munge_ids() -> "tuple[int, int]":
    import pwd

    entry = pwd.getpwnam("munge")
    return entry.pw_uid, entry.pw_gid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
