"""The MPI platform: rank 0 schedules, every other rank of MPI_COMM_WORLD executes.

Outside a world, `--platform mpi --num-executors N` runs the same command under
`mpiexec -n N+1`; `--hostfile PATH` puts the world on the hosts of a file (in
the launcher's own form: MPICH's `-f`, Open MPI's `--hostfile`) and
`--mpiexec-args` adds anything else. Inside one (mpiexec, mpirun or srun
started us), it joins it. mpi4py is imported only in connect(), so nothing else
needs an MPI library.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import shlex
import shutil
import socket
import subprocess
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mpipipe.errors import ConfigError, PlatformError
from mpipipe.platform.base import Platform, World
from mpipipe.platform.local import executor_env, start_local_executors, stop_local_executors

# set by MPI launchers in every rank's environment (MPICH/hydra, PMI-2 under srun, Open MPI, PMIx)
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
WORLD_MARKERS = WORLD_SIZE_VARS + ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MPIPIPE_WORLD_SIZE")


def launcher_world_size() -> Tuple[int, str]:
    """The world size the launcher asked for, and which variable said so (0 if none)."""
    for var in ("MPIPIPE_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value), var
    return 0, ""


# --- the launcher's command line (pure: tested by comparing lists) ----------------------------------------

HOSTFILE_OPTION = {"mpich": "-f", "openmpi": "--hostfile"}
_HOST_LIST_OPTIONS = ("-hosts", "-host", "--host", "--hosts", "-H")
_HOST_FILE_OPTIONS = ("-f", "-hostfile", "-machinefile", "--hostfile", "--machinefile", "-machine")


def launcher_flavor(version_text: str) -> str:
    """"mpich" (MPICH's hydra and its kin) or "openmpi", from what `mpiexec --version` printed; "" if neither."""
    if any(mark in version_text for mark in ("Open MPI", "OpenRTE", "PRRTE", "prterun")):
        return "openmpi"
    if any(mark in version_text for mark in ("HYDRA", "MPICH", "Intel(R) MPI", "MVAPICH")):
        return "mpich"
    return ""


def mpiexec_argv(exe: str, nprocs: int, argv: Sequence[str], flavor: str = "", hostfile: Optional[str] = None,
                 extra: Sequence[str] = ()) -> List[str]:
    """`mpiexec [hostfile option] [extra...] -n N argv...`; the hostfile in the launcher's own form."""
    cmd = [exe]
    if hostfile:
        if flavor not in HOSTFILE_OPTION:
            raise PlatformError(f"cannot tell whether {exe} is MPICH's or Open MPI's mpiexec, so not how to pass it "
                                f"the hostfile {hostfile}; pass it yourself, e.g. --mpiexec-args='-f {hostfile}' "
                                f"(MPICH) or --mpiexec-args='--hostfile {hostfile}' (Open MPI), without --hostfile")
        cmd += [HOSTFILE_OPTION[flavor], hostfile]
    return cmd + list(extra) + ["-n", str(nprocs)] + list(argv)


def split_mpiexec_args(text: Optional[str]) -> List[str]:
    """--mpiexec-args / SP_MPIEXEC_ARGS, split as a shell would (quotes group, nothing is expanded)."""
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise ConfigError(f"cannot split --mpiexec-args {text!r} ({e}); write it as a shell would, e.g. "
                          "--mpiexec-args='-iface eth0 -genv OMP_NUM_THREADS 1'") from None


def parse_hostfile(text: str) -> List[Tuple[str, Optional[int]]]:
    """(host, slots or None) per line of an MPICH ("host:4") or Open MPI ("host slots=4") hostfile."""
    hosts = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        name, _, count = words[0].partition(":")
        slots = int(count) if count.isdigit() else None
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key in ("slots", "cpu", "cpus") and value.isdigit():
                slots = int(value)
        hosts.append((name, slots))
    return hosts


def hostfile_slots(hosts: Sequence[Tuple[str, Optional[int]]]) -> int:
    """Ranks a hostfile holds, counting a host without a count as one (MPICH's reading)."""
    return sum(slots if slots is not None else 1 for _, slots in hosts)


def hosts_in_args(args: Sequence[str]) -> List[str]:
    """Host names that mpiexec arguments name (-hosts a:2,b / --host a,b), for the loopback check."""
    names = []
    for i, arg in enumerate(args):
        opt, eq, value = arg.partition("=")
        if opt in _HOST_LIST_OPTIONS and (eq or i + 1 < len(args)):
            for item in (value if eq else args[i + 1]).split(","):
                if item.strip():
                    names.append(item.split(":", 1)[0].strip())
    return names


def hostfile_in_args(args: Sequence[str]) -> Optional[str]:
    for i, arg in enumerate(args):
        opt, eq, value = arg.partition("=")
        if opt in _HOST_FILE_OPTIONS and (eq or i + 1 < len(args)):
            return value if eq else args[i + 1]
    return None


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def loopback_problem(hostname: str, addresses: Sequence[str], hosts: Sequence[str], interface_named: bool,
                     interfaces: Sequence[str] = ()) -> Optional[str]:
    """Why MPICH's ranks on other hosts would fail to reach mpiexec here, or None.

    Hydra gives its proxies this host's name to connect back to; a name that resolves only to a loopback
    address (127.0.1.1 is Debian's default) sends them to themselves: "unable to connect ... Connection
    refused". Naming the interface (-iface, HYDRA_IFACE) makes hydra give an address instead."""
    local = {"localhost", hostname.lower(), hostname.split(".", 1)[0].lower()}
    remote = sorted({h for h in hosts if h.lower() not in local and not is_loopback(h)})
    if not remote or interface_named or not addresses or not all(is_loopback(a) for a in addresses):
        return None
    shown = ", ".join(remote[:3]) + (f" and {len(remote) - 3} more" if len(remote) > 3 else "")
    choices = f" (interfaces here: {', '.join(interfaces)})" if interfaces else ""
    return (f"this host's name {hostname!r} resolves to {addresses[0]}, a loopback address, so MPICH's ranks on "
            f"other hosts ({shown}) cannot connect back to mpiexec here (they fail with 'unable to connect ... "
            f"Connection refused'); give {hostname} its network address in /etc/hosts, or name the interface "
            f"the other hosts reach: --mpiexec-args='-iface IFACE' or HYDRA_IFACE=IFACE{choices}")


_FLAVORS: Dict[str, Tuple[str, str]] = {}


def mpiexec_flavor(exe: str) -> Tuple[str, str]:
    """(flavor, first line of `exe --version`) of a launcher, asked once per process."""
    if exe not in _FLAVORS:
        try:
            done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
            text = done.stdout + done.stderr
        except (OSError, subprocess.SubprocessError) as e:
            text = f"({e})"
        _FLAVORS[exe] = (launcher_flavor(text), (text.strip().splitlines() or ["(nothing)"])[0])
    return _FLAVORS[exe]


def _resolve(hostname: str) -> List[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(hostname, None)})
    except OSError:
        return []


def _interfaces() -> List[str]:
    try:
        return [name for _, name in socket.if_nameindex() if name != "lo"]
    except OSError:
        return []


class MpiPlatform(Platform):
    name = "mpi"
    description = "ranks of an MPI world (mpi4py); launched with mpiexec when not already inside one"

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        if importlib.util.find_spec("mpi4py") is None:
            return False, "mpi4py is not installed (pip install 'mpipipe[mpi]')"
        exe = shutil.which(os.environ.get("SP_MPIEXEC", "mpiexec"))
        if exe is None:
            return False, "mpi4py is installed but no mpiexec is on PATH"
        return True, f"mpi4py installed, launcher {exe}"

    @classmethod
    def detect(cls) -> bool:
        return any(v in os.environ for v in WORLD_MARKERS)

    def executors_wanted(self) -> int:
        """--num-executors; else one per slot of the hostfile but rank 0's; else one per core here."""
        if self.config.num_executors:
            return self.config.num_executors
        if self.config.hostfile:
            return max(1, hostfile_slots(self.hostfile_hosts()) - 1)
        return max(1, os.cpu_count() or 1)

    def hostfile_path(self) -> Optional[str]:
        return os.path.abspath(os.path.expanduser(self.config.hostfile)) if self.config.hostfile else None

    def hostfile_hosts(self, path: Optional[str] = None) -> List[Tuple[str, Optional[int]]]:
        path = path or self.hostfile_path()
        if not path:
            return []
        try:
            with open(path, encoding="utf-8") as f:
                hosts = parse_hostfile(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the hostfile {path} ({getattr(e, 'strerror', None) or e}); give --hostfile "
                              "a file with one host per line, e.g. 'node1:4'") from None
        if not hosts and path == self.hostfile_path():
            raise ConfigError(f"the hostfile {path} names no host; write one host per line, e.g. 'node1:4' (MPICH) "
                              "or 'node1 slots=4' (Open MPI)")
        return hosts

    def launch_command(self, argv: List[str]) -> List[str]:
        exe = shutil.which(self.config.mpiexec) or self.config.mpiexec
        hostfile = self.hostfile_path()
        if hostfile:
            self.hostfile_hosts()  # a missing or empty file is an error before anything starts
        flavor = mpiexec_flavor(exe)[0] if hostfile else ""
        return mpiexec_argv(exe, self.executors_wanted() + 1, argv, flavor, hostfile,
                            split_mpiexec_args(self.config.mpiexec_args))

    def start_job(self, argv: List[str]) -> List[str]:
        if type(self).launch_command is MpiPlatform.launch_command:
            self.check_reachable(os.environ)
        return super().start_job(argv)

    def check_reachable(self, env: Mapping[str, str]) -> None:
        """Before MPICH starts ranks on other hosts: this host's name must not resolve to loopback."""
        extra = split_mpiexec_args(self.config.mpiexec_args)
        named_file = hostfile_in_args(extra) or env.get("HYDRA_HOST_FILE")
        hosts = [h for h, _ in self.hostfile_hosts()] + hosts_in_args(extra)
        if named_file and os.path.isfile(named_file):
            hosts += [h for h, _ in self.hostfile_hosts(named_file)]
        if not hosts:
            return
        exe = shutil.which(self.config.mpiexec) or self.config.mpiexec
        if mpiexec_flavor(exe)[0] != "mpich":
            return
        name = socket.gethostname()
        interface_named = bool(env.get("HYDRA_IFACE")) or any(a in ("-iface", "--iface") for a in extra)
        problem = loopback_problem(name, _resolve(name), hosts, interface_named, _interfaces())
        if problem:
            raise PlatformError(problem)

    def launch_env(self) -> Dict[str, str]:
        return {"MPIPIPE_WORLD_SIZE": str(self.executors_wanted() + 1)}

    def connect(self) -> World:
        try:
            from mpipipe.execution.mpi_transport import MpiTransport
        except ImportError as e:
            raise PlatformError(f"the MPI platform needs mpi4py: {e}; "
                                "install it with pip install 'mpipipe[mpi]'") from None
        except RuntimeError as e:  # mpi4py without a loadable MPI library
            raise PlatformError(f"mpi4py could not load an MPI library ({e}); "
                                "pip install mpich, or use --platform local") from None
        transport = MpiTransport()
        self._check_size(transport.size)
        if transport.size == 1:
            # a world of one: rank 0 runs the tasks itself, through local executor processes
            world = start_local_executors(self.config.num_executors or 1, [], executor_env(self.config))
            world.handles.append("local")
            return world
        return World(transport.rank, transport.size, transport)

    def _check_size(self, size: int) -> None:
        asked, var = launcher_world_size()
        if asked and asked != size:
            raise PlatformError(
                f"the launcher started a world of {asked} ranks (${var}) but mpi4py sees {size}: the mpiexec on PATH "
                f"({shutil.which('mpiexec')}) does not belong to mpi4py's MPI library; "
                "put the virtualenv's bin/ first on PATH"
            )
        wanted = self.config.num_executors
        if wanted and size > 1 and size - 1 != wanted:
            raise PlatformError(
                f"found {size} MPI ranks ({size - 1} executors), but --num-executors asks for {wanted}; "
                f"run with mpiexec -n {wanted + 1}, or drop --num-executors inside an MPI world"
            )

    def disconnect(self, world: World) -> None:
        if "local" in world.handles:
            world.handles.remove("local")
            world.transport.close()
            stop_local_executors(world)
        else:
            world.transport.close()
