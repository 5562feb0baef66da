"""The Platform base class: a few narrow hooks that say how the world of ranks is made.

A platform plays two parts. Outside the world (a plain `python script.py`),
`in_world()` is False and `start_job()` starts the world, usually by running
the same command again under a launcher; `wait_job()` forwards its exit code
and Ctrl-C. Inside the world, `connect()` says which rank this process is and
how it talks to the others. Override `launch_command()` to change the launcher,
`connect()` to change how ranks meet.

A subclass may instead define only smallpond's hook, `start_job(num_nodes,
entrypoint, args, envs, extra_opts) -> job ids`: this process is then rank 0,
and start_job is asked to start `python ENTRYPOINT ARGS...` (with ENVS) on
num_nodes nodes; each of those executors connects back to rank 0 over TCP,
proving it belongs to the job with a secret token in its environment.
"""
from __future__ import annotations

import hmac
import inspect
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from mpipipe.config import JobConfig
from mpipipe.errors import PlatformError
from mpipipe.execution.osutil import die_with_parent, process_alive
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

    def __init__(self, config: Optional[JobConfig] = None) -> None:
        self.config = config if config is not None else JobConfig()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that defines smallpond's start_job(num_nodes, entrypoint, args, envs, extra_opts) gets
        the world that hook makes: this process is rank 0 and the executors connect back to it."""
        super().__init_subclass__(**kwargs)
        if "start_job" in cls.__dict__ and smallpond_style(cls.__dict__["start_job"]):
            cls.callback_world = True
            if "name" not in cls.__dict__:
                cls.name = cls.__name__
            for hook in ("in_world", "connect", "disconnect", "wait_job", "stop_job"):
                if hook not in cls.__dict__:
                    setattr(cls, hook, getattr(CallbackWorld, hook))

    callback_world = False  # True when the world comes from smallpond's start_job hook

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
        raise PlatformError(
            f"platform {self.name!r} ({type(self).__module__}.{type(self).__qualname__}) has no way to start its "
            "world: implement start_job(self, num_nodes, entrypoint, args, envs, extra_opts) -> List[str] "
            "(smallpond's hook), or launch_command(self, argv) -> List[str], or connect(self) -> World")

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
        known = getattr(self, "_procs", {})
        missing = [h for h in handles if h not in known]
        if missing:
            raise PlatformError(
                f"platform {self.name!r}: start_job() returned {missing}, which the base class did not start and "
                "cannot wait for; implement wait_job(self, handles) -> exit code and stop_job(self, handles), or "
                "define start_job(self, num_nodes, entrypoint, args, envs, extra_opts) as in smallpond")
        procs = [known[h] for h in handles]
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


def smallpond_style(fn: Any) -> bool:
    """Whether a start_job takes smallpond's arguments (num_nodes, entrypoint, args, ...) rather than mpipipe's
    (argv)."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][1:]
    except (TypeError, ValueError):
        return False
    names = {p.name for p in params}
    return bool(names & {"num_nodes", "entrypoint", "envs", "extra_opts"}) or \
        sum(1 for p in params if p.default is p.empty) >= 2


ENTRYPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "execution", "driver.py")
TOKEN_ENV = "MPIPIPE_JOB_TOKEN"
ADDRESS_ENV = "MPIPIPE_CALLBACK_ADDRESS"  # the host name executors use to reach rank 0 (default: this host's)


class CallbackWorld:
    """The hooks a platform with smallpond's start_job gets: rank 0 listens, start_job starts the executors,
    each connects back, says the job's token and gets its rank."""

    def in_world(self: Any) -> bool:
        return True  # this process is rank 0 of the world start_job makes

    def connect(self: Any) -> World:
        from mpipipe.execution.transport import PipeTransport

        n = self.config.num_executors or max(1, os.cpu_count() or 1)
        token = secrets.token_hex(16)
        listener = socket.create_server(("", 0), backlog=max(8, n))
        port = listener.getsockname()[1]
        host = os.environ.get(ADDRESS_ENV) or socket.gethostname()
        args = ["--connect", f"{host}:{port}"]
        envs = {TOKEN_ENV: token, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        name = self.config.slurm_job_name or self.config.job_id or "mpipipe"
        extra = {"job_id": self.config.job_id, "job_name": name, "tags": ["mpipipe"],
                 "data_root": self.config.data_root}
        extra.update(dict(self.config.platform_options))  # what smallpond's init(**kwargs) gave its platform
        try:
            ids = self.start_job(num_nodes=n, entrypoint=ENTRYPOINT, args=args, envs=envs, extra_opts=extra)
        except BaseException:
            listener.close()
            raise
        self._job_ids = [str(i) for i in (ids or [])]
        try:
            socks = _accept_executors(listener, n, token, self.config.hello_timeout, self.name,
                                      [sys.executable, ENTRYPOINT] + args)
        except BaseException:
            _stop(self, self._job_ids)
            raise
        finally:
            listener.close()
        # a world with handles can be made again by a later run of this process; "callback" stands for one
        # whose start_job returned no ids
        return World(0, n + 1, PipeTransport(0, n + 1, socks), handles=list(self._job_ids) or ["callback"])

    def disconnect(self: Any, world: World) -> None:
        world.transport.close()  # the executors leave when rank 0 does
        deadline = time.monotonic() + 10.0
        left = list(world.handles)
        while left and time.monotonic() < deadline:
            left = [h for h in left if _alive(h)]
            if left:
                time.sleep(0.05)
        if left:
            _stop(self, left)

    def wait_job(self: Any, handles: List[str]) -> int:
        return 0

    def stop_job(self: Any, handles: Any) -> None:
        """Stop what start_job started (the ids it returned that are this host's processes)."""
        for h in [handles] if isinstance(handles, str) else list(handles):
            if str(h).isdigit() and _alive(str(h)):
                try:
                    os.kill(int(h), signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


def _stop(platform: Any, handles: List[str]) -> None:
    """stop_job with the ids, or once per id when it takes smallpond's single `pid`."""
    if not handles:
        return
    try:
        first = next(iter(list(inspect.signature(type(platform).stop_job).parameters)[1:]), "")
    except (TypeError, ValueError):
        first = ""
    if first == "pid":
        for h in handles:
            platform.stop_job(h)
    else:
        platform.stop_job(handles)


def _alive(handle: str) -> bool:
    """Whether a returned id is a live process of this host (reaping it if it is our child and has ended)."""
    if not str(handle).isdigit():
        return False
    pid = int(handle)
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return process_alive(pid)


_HELLO = b"mpipipe-executor "


def _accept_executors(listener: socket.socket, n: int, token: str, timeout: float, platform: str,
                      command: List[str]) -> Dict[int, socket.socket]:
    """Ranks 1..n in the order executors connect; a connection without the job's token is dropped."""
    socks: Dict[int, socket.socket] = {}
    deadline = time.monotonic() + timeout
    while len(socks) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PlatformError(
                f"platform {platform!r}: {len(socks)} of {n} executor(s) connected within {timeout:.0f} s; its "
                f"start_job must run `{' '.join(command)}` on each of num_nodes nodes, with `envs` in the "
                f"environment (it holds {TOKEN_ENV}) and this host reachable (set {ADDRESS_ENV} otherwise)")
        listener.settimeout(min(left, 1.0))
        try:
            conn, _addr = listener.accept()
        except socket.timeout:
            continue
        conn.settimeout(10.0)
        try:
            line = _read_line(conn)
        except OSError:
            conn.close()
            continue
        if not line.startswith(_HELLO) or not hmac.compare_digest(line[len(_HELLO):].strip(), token.encode()):
            conn.close()
            continue
        rank = len(socks) + 1
        conn.sendall(f"{rank} {n + 1}\n".encode())
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[rank] = conn
    return socks


def _read_line(conn: socket.socket, limit: int = 256) -> bytes:
    """One handshake line, read a byte at a time: what follows it on the connection (rank 0's first message,
    which may already be there) belongs to the transport and must stay unread."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def serve_callback(argv: List[str]) -> int:
    """An executor of a CallbackWorld: connect to rank 0, prove the token, serve until told to stop."""
    import argparse

    from mpipipe.console import error_line, say
    from mpipipe.execution.executor import Executor
    from mpipipe.execution.transport import PipeTransport

    parser = argparse.ArgumentParser(prog="mpipipe executor", description="join a job whose rank 0 waits at ADDRESS")
    parser.add_argument("--connect", required=True, metavar="HOST:PORT")
    args, _rest = parser.parse_known_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        error_line(f"{TOKEN_ENV} is not set; the platform's start_job must pass `envs` to the processes it starts")
        return 2
    host, _, port = args.connect.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(_HELLO + token.encode() + b"\n")
        reply = _read_line(sock).split()
        rank, size = int(reply[0]), int(reply[1])
    except (OSError, ValueError, IndexError) as e:
        error_line(f"cannot join the job at {args.connect}: {e}")
        return 1
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when to stop
    from mpipipe.execution.transport import PeerLost

    try:
        Executor(PipeTransport(rank, size, {0: sock})).run()
    except PeerLost:
        say(f"mpipipe: executor rank {rank}: rank 0 at {args.connect} went away before the job ended")
        return 1
    return 0
