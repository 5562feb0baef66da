"""The embedded default: this process is rank 0, executors are local child processes.

Needs no MPI. Executors talk to rank 0 over socket pairs; each still runs its
tasks in worker processes of its own, exactly as on MPI.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from mpipipe.config import JobConfig
from mpipipe.errors import ConfigError
from mpipipe.execution.osutil import child_env, die_with_parent
from mpipipe.execution.reap import wait_all
from mpipipe.execution.protocol import STOP
from mpipipe.execution.transport import PeerLost, PipeTransport, make_pair
from mpipipe.platform.base import Platform, World


def executor_env(config: JobConfig) -> Dict[str, str]:
    """What local executors must know of the config that they cannot read from a command line of their own:
    --hosts, whose host-name entries each executor applies to its own probe."""
    return {"SP_HOSTS": config.hosts} if config.hosts else {}


def start_local_executors(n: int, command_prefix: List[str], env: Optional[Dict[str, str]] = None,
                          patient: bool = False) -> World:
    """Start `n` executor processes wired to this process (rank 0) by socket pairs. `patient`: they wait for
    the job's setup as long as this process lives (started before the script's first run)."""
    socks = {}
    procs = []
    for rank in range(1, n + 1):
        mine, theirs = make_pair()
        fd = theirs.fileno()
        cmd = command_prefix + [sys.executable, "-m", "mpipipe.execution.local_executor", str(fd), str(rank),
                                str(n + 1)] + (["patient"] if patient else [])
        procs.append(subprocess.Popen(cmd, pass_fds=[fd], env=child_env(env), close_fds=True,
                                      preexec_fn=lambda: die_with_parent(signal.SIGKILL)))
        theirs.close()
        socks[rank] = mine
    return World(0, n + 1, PipeTransport(0, n + 1, socks), handles=procs)


def stop_local_executors(world: World, timeout: float = 10.0) -> None:
    """Wait for the executors (told to stop) together, each noticed as it exits; kill what outlives `timeout`."""
    for proc in wait_all(world.handles, timeout):
        proc.kill()
        proc.wait()


class LocalPlatform(Platform):
    name = "local"
    description = "executors are child processes of this one; no MPI needed"

    def in_world(self) -> bool:
        return True  # the current process is rank 0 of the world it makes

    def executor_command(self) -> List[str]:
        """Hook: a prefix put before each executor's command (e.g. ['nice', '-n', '10'])."""
        return []

    def connect(self) -> World:
        given = [flag for flag, value in (("--hostfile", self.config.hostfile),
                                          ("--mpiexec-args", self.config.mpiexec_args)) if value]
        if given:
            raise ConfigError(f"{' and '.join(given)} start an MPI world on other hosts, but this job runs on the "
                              f"{self.name} platform, on this host only; add --platform mpi (or drop them)")
        n, prefix, env = self._shape()
        return _take_early(_key(n, prefix, env)) or start_local_executors(n, prefix, env)

    def _shape(self) -> Tuple[int, List[str], Dict[str, str]]:
        """(executors, command prefix, environment) of this job's executors."""
        return (self.config.num_executors or max(1, os.cpu_count() or 1), self.executor_command(),
                executor_env(self.config))

    def start_early(self) -> None:
        """Start the executors now, while the script builds its plan (mpipipe.init(), a Driver's flags): they
        boot on the other cores meanwhile. connect() takes them if nothing they were started with changed
        by then (their count, command, environment, the working folder), else stops them and starts others."""
        if not _EARLY:
            n, prefix, env = self._shape()
            _EARLY.append((_key(n, prefix, env), start_local_executors(n, prefix, env, patient=True)))

    def disconnect(self, world: World) -> None:
        world.transport.close()
        stop_local_executors(world)


_EARLY: List[Tuple[Any, World]] = []  # executors started before the first run, with what they were started with


def _key(n: int, prefix: List[str], env: Dict[str, str]) -> Any:
    return n, tuple(prefix), tuple(sorted(child_env(env).items())), os.getcwd(), sys.executable


def _take_early(key: Any) -> Optional[World]:
    """The executors started early, if they were started as `key` says and all still run; else None (and
    those are stopped)."""
    if not _EARLY:
        return None
    started, world = _EARLY.pop()
    if started == key and all(p.poll() is None for p in world.handles):
        return world
    discard_early(world)
    return None


def discard_early(world: Optional[World] = None) -> None:
    """Stop executors started early that no run will use (before they had the job's setup)."""
    if world is None:
        if not _EARLY:
            return
        world = _EARLY.pop()[1]
    for rank in range(1, world.size):
        try:
            world.transport.send(rank, (STOP, "not used"))
        except PeerLost:
            pass
    world.transport.close()
    stop_local_executors(world, timeout=2.0)
