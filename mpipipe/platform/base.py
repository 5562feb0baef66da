"""The Platform base class: a few narrow hooks that say how the world of ranks is made.

A platform plays two parts. Outside the world (a plain `python script.py`),
`in_world()` is False and `start_job()` starts the world, usually by running
the same command again under a launcher; `wait_job()` forwards its exit code
and Ctrl-C. Inside the world, `connect()` says which rank this process is and
how it talks to the others. Override `launch_command()` to change the launcher,
`connect()` to change how ranks meet.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from mpipipe.config import JobConfig
from mpipipe.errors import PlatformError
from mpipipe.execution.osutil import die_with_parent
from mpipipe.execution.transport import Transport


@dataclass
class World:
    """This process's place in the job: its rank, the world size, and the transport."""

    rank: int
    size: int
    transport: Transport
    host: str = field(default_factory=socket.gethostname)
    handles: List[Any] = field(default_factory=list)  # what disconnect() must stop

    @property
    def num_executors(self) -> int:
        return self.size - 1


class Platform:
    """Base class of every platform. Subclasses fill in the hooks below."""

    name = "base"
    description = "abstract base class"

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    # --- facts --------------------------------------------------------------------------

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        """Whether this platform can run here, and why (shown by `mpipipe platforms`)."""
        return True, "always available"

    @classmethod
    def detect(cls) -> bool:
        """Whether this process already runs inside a world of this platform (auto-detection)."""
        return False

    def in_world(self) -> bool:
        """True when this process is a member of the world; False when it must start one."""
        return self.detect()

    # --- outside the world ----------------------------------------------------------------

    def launch_command(self, argv: List[str]) -> List[str]:
        """The argv list that starts the world running `argv` (never a shell string)."""
        raise PlatformError(f"platform {self.name!r} cannot start a world from outside; run the script inside one")

    def launch_env(self) -> Dict[str, str]:
        """Extra environment for the launched world."""
        return {}

    def start_job(self, argv: List[str]) -> List[str]:
        """Start the job's processes; return handles (here: pids) that stop_job() can stop."""
        cmd = self.launch_command(argv)
        env = dict(os.environ, **self.launch_env())
        try:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                    preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        except FileNotFoundError:
            raise PlatformError(f"cannot start {cmd[0]!r}: not found on PATH; install it or set SP_MPIEXEC") from None
        self._procs = getattr(self, "_procs", {})
        self._procs[str(proc.pid)] = proc
        return [str(proc.pid)]

    def wait_job(self, handles: List[str]) -> int:
        """Wait for the started job; Ctrl-C or SIGTERM here stops it. Returns its exit code."""
        return self.wait_processes(handles, lambda signum: self.signal_job(
            handles, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM), grace=15.0)

    def wait_processes(self, handles: List[str], on_signal: Callable[[int], None], grace: float) -> int:
        """Wait for what start_job() started, calling `on_signal` on Ctrl-C/SIGTERM; `grace` seconds after
        the first such signal, stop_job() ends what is left. Returns 130 if stopped, else the exit code."""
        procs = [self._procs[h] for h in handles]
        stopping: List[int] = []

        def handler(signum: int, _frame: Any) -> None:
            stopping.append(signum)
            on_signal(signum)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            deadline: Optional[float] = None
            while any(p.poll() is None for p in procs):
                if stopping and deadline is None:
                    deadline = time.monotonic() + grace
                if deadline is not None and time.monotonic() > deadline:
                    self.stop_job(handles)
                    break
                time.sleep(0.05)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        codes = [p.wait() for p in procs]
        if stopping:
            return 130
        return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)

    def signal_job(self, handles: List[str], sig: int) -> None:
        for h in handles:
            try:
                os.kill(int(h), sig)
            except (ProcessLookupError, ValueError):
                pass

    def stop_job(self, handles: List[str]) -> None:
        """Stop what start_job() started: SIGTERM, a grace period, then SIGKILL of its process group."""
        for h in handles:
            try:
                os.killpg(int(h), signal.SIGTERM)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
        deadline = time.monotonic() + 5.0
        for h in handles:
            proc = getattr(self, "_procs", {}).get(h)
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                os.killpg(int(h), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass

    # --- inside the world -------------------------------------------------------------------

    def connect(self) -> World:
        """Join the world: which rank this process is, and the transport to the others."""
        raise NotImplementedError

    def disconnect(self, world: World) -> None:
        """Leave the world (rank 0 after the job, executors after their loop)."""
        world.transport.close()

    def explain(self) -> str:
        return f"{self.name}: {self.description}"


def relaunch_argv() -> List[str]:
    """The command that started this process, for launchers that run it again as every rank."""
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return [sys.executable] + list(orig[1:])
    return [sys.executable] + sys.argv
