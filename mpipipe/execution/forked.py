"""A worker process forked from its executor rank, instead of a new interpreter started for it.

An executor rank's first worker starts while `import mpipipe` runs (execution/early.py), when every rank of
the world and every first worker boot at once on the same cores: a fresh interpreter that imports the
worker's modules costs tens of ms of CPU, all of it while MPI starts; a fork costs about one, and the
child already has those modules. The child goes straight into the worker's loop and leaves with os._exit,
after dropping what it inherited that a new interpreter would not have: descriptors other than its pipes
and the ones it is told to keep, the rank's MPI variables, signal handlers, exit handlers and logging
handlers.

Forking is only safe in a process with one thread, no MPI library loaded (mpi4py.MPI starts MPI as it
loads), and no module of the user half-imported (the child would keep it half-done): `fork_allowed()`
says so; anywhere else a worker starts as a new interpreter.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import traceback
from typing import Any, Callable, Dict, Optional, Sequence

IN_PROGRESS_OK = ("mpipipe",)  # modules that may be half-imported when forking (begin() runs inside mpipipe's)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # threads of C libraries too, not only Python's
    except OSError:
        import threading

        return threading.active_count()


def fork_allowed() -> bool:
    """Whether this process may fork a worker now (see the module's docstring)."""
    if not hasattr(os, "fork") or "mpi4py.MPI" in sys.modules or _threads() > 1:
        return False
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False) and name not in IN_PROGRESS_OK:
            return False
    return True


class ForkedProcess:
    """What WorkerHandle and reap.wait_all use of a subprocess.Popen (pid, stdin, stdout, poll, wait,
    send_signal, kill, returncode), for a forked child."""

    def __init__(self, pid: int, stdin: Any, stdout: Any) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: Optional[int] = None

    def _reaped(self, flags: int) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped by someone else: its code is lost, as with Popen
                self.returncode = 0
                return 0
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        return self._reaped(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is None:
            code = self._reaped(0)
            assert code is not None
            return code
        from mpipipe.execution.reap import wait_all

        if wait_all([self], timeout):  # type: ignore[list-item]
            raise subprocess.TimeoutExpired(["worker"], timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_process(body: Callable[[], Any], keep: Sequence[int] = (), env: Optional[Dict[str, str]] = None
                 ) -> ForkedProcess:
    """Fork a child that runs `body()` with a pipe from this process as its stdin and a pipe to it as its
    stdout (its stderr stays this process's), and leaves with os._exit when `body` returns or raises; `keep`:
    descriptors the child keeps (same numbers), `env`: its environment."""
    for stream in (sys.stdout, sys.stderr):  # else what they buffered would be written twice
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    child_in, to_child = os.pipe()
    from_child, child_out = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        for fd in (child_in, to_child, from_child, child_out):
            os.close(fd)
        raise
    if pid == 0:  # pragma: no cover  (the child; coverage does not follow it)
        code = 1
        try:
            os.dup2(child_in, 0)
            os.dup2(child_out, 1)
            _forget_parent(keep, env)
            body()
            code = 0
        except BaseException:  # noqa: BLE001  nothing may go back up into the rank's script
            try:  # on descriptor 2 itself: sys.stderr may be an object of the rank's on a descriptor now closed
                os.write(2, traceback.format_exc().encode(errors="replace"))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(child_in)
    os.close(child_out)
    return ForkedProcess(pid, open(to_child, "wb", buffering=0), open(from_child, "rb", buffering=0))


def _forget_parent(keep: Sequence[int], env: Optional[Dict[str, str]]) -> None:
    """In the child: what a new interpreter would not have had."""
    import logging

    atexit._clear()  # the script's and the libraries' exit handlers are the rank's
    for s in signal.valid_signals():
        try:
            handler = signal.getsignal(s)
            if callable(handler) and handler is not signal.default_int_handler:
                signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.set_wakeup_fd(-1)
    # the rank's handlers (a file, its terminal) are not the worker's: it sets its own (worker.main)
    for logger in [logging.getLogger()] + list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every number up to the limit
        fds = list(range(3, min(os.sysconf("SC_OPEN_MAX"), 65536)))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
