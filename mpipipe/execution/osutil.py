"""Process hygiene shared by every process mpipipe starts."""
from __future__ import annotations

import ctypes
import io
import logging
import os
import signal
import sys
from typing import Any, Dict, Mapping, NoReturn, Optional, Tuple

# variables a launcher gives its MPI ranks; a child that inherits them may try to join the world
_MPI_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "PRTE_", "MPIR_")


def child_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for a non-MPI child process of an MPI rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_PREFIXES)}
    env.pop("MPIPIPE_WORLD_SIZE", None)
    if extra:
        env.update(extra)
    return env


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to signal this process when its parent dies (no orphans after a kill -9)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def exit_without_teardown(code: int = 0) -> NoReturn:
    """End a process of mpipipe's own (a worker, a local executor) at once: the exit handlers run (logging's
    flush among them, and any a task registered) and the standard streams are flushed, but not the interpreter's
    teardown, which frees every object one by one (a few hundred ms after data tasks) while the job waits."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(code)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hints = {"SIGSEGV": " (segmentation fault)", "SIGKILL": " (killed: out of memory or by a signal)",
                 "SIGABRT": " (aborted)", "SIGBUS": " (bus error)"}
        return f"killed by {name}{hints.get(name, '')}"
    return f"exited with code {returncode}"


class RankLogHandler(logging.FileHandler):
    """A rank's log file, readable by its owner only. A write that fails (a full disk) drops that record instead
    of printing a traceback on the job's terminal for every message; a job that cannot write its journal stops
    with one line."""

    mpipipe_own = True  # mpipipe's, not the application's: the terminal's handler stays (mpipipe.console)

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        pass


# what stops a job cleanly: Ctrl-C, kill, a closed terminal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _not_here(_signum: int, _frame: Any) -> None:
    """Rank 0 stops the job when it gets this signal, and then this process: nothing to do here."""


def leave_stop_signals_to_rank0(signals: Tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Dict[int, Any]:
    """Executors and workers outlive SIGTERM and SIGHUP (which reach every process of a job at once: a closed
    terminal signals the whole process group, mpiexec and srun every rank) so that rank 0 can stop them in
    order after journaling. The signals are caught, not ignored: a program a task starts gets them back at
    their default. Returns the previous handlers (nothing outside the main thread, where none can be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _not_here) for s in signals}


def leave_hung_up_terminal() -> None:
    """After SIGHUP: stdin, stdout and stderr that are a terminal that has gone now read from and write to
    /dev/null, so that the job's last words (the summary, the one-line message) cannot fail with EIO on the way
    out. Anything else (a file, a pipe, a terminal still open) is left alone."""
    import errno
    import termios

    for fd in (0, 1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as e:
            if e.args and e.args[0] == errno.EIO:  # a terminal after hangup answers EIO; a non-terminal ENOTTY
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
        except OSError:
            pass


def physical_memory() -> int:
    """This host's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie does not: one killed a moment ago may not be reaped
    yet); one of another user's counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
