"""Running real commands from tests: own process group, hard timeout, kill exactly what we started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
QUICKSTART = os.path.join(REPO, "examples", "quickstart.py")
FLAKY = os.path.join(REPO, "tests", "pipelines", "flaky.py")


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def env_for_tests(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The virtualenv's bin/ first on PATH (its mpiexec matches mpi4py), no SP_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SP_")}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run(argv: List[str], timeout: float = 120, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
        check: bool = False) -> Done:
    """Run a command in its own process group; on timeout kill the group and fail loudly."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or env_for_tests(), cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s: {argv}\nstdout:\n{out}\nstderr:\n{err}")
    done = Done(proc.returncode, out, err)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {argv}\nstdout:\n{out}\nstderr:\n{err}")
    return done


def python(script: str, *args: str, **kw) -> Done:  # type: ignore[no-untyped-def]
    return run([sys.executable, script, *args], **kw)


def mpiexec(n: int, script: str, *args: str, **kw) -> Done:  # type: ignore[no-untyped-def]
    return run([os.path.join(BIN, "mpiexec"), "-n", str(n), sys.executable, script, *args], **kw)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> List[int]:
    """Every live process started (directly or not) by `pid`, whatever its session or process group:
    mpiexec runs in a session of its own, and hydra gives each rank its own."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: List[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def wait_gone(pids: List[int], timeout: float, what: str = "the processes to exit") -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout, f"{what}: {[p for p in pids if pid_alive(p)]}")


def kill_tree(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL a started process and everything it started, as a lost node or `kill -9` of every process of a
    job would: first freeze them all (so none journals or starts anything more), then kill each by pid, and
    wait until all are gone. A group kill is not enough: mpiexec and its ranks live in sessions of their own."""
    frozen: List[int] = []
    todo = [proc.pid]
    while todo:
        for pid in todo:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            frozen.append(pid)
        todo = [p for p in descendants(proc.pid) if p not in frozen]
    for pid in frozen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout)
    wait_gone(frozen, timeout, "the killed processes to go")


def process_env(pid: int) -> Dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def process_argv(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def mpi_ranks(launcher_pid: int) -> Dict[int, int]:
    """MPI rank -> pid, among the processes a launcher started: the ranks have PMI_RANK, and so does a worker
    forked from its rank (/proc shows the environment a process started with), whose parent is that rank."""
    ranks = {}
    for pid in descendants(launcher_pid):
        rank = process_env(pid).get("PMI_RANK")
        if rank is not None and rank.isdigit() and "PMI_RANK" not in process_env(parent_pid(pid)):
            ranks[int(rank)] = pid
    return ranks


def parent_pid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def local_executors(rank0_pid: int) -> Dict[int, int]:
    """Executor rank -> pid of a local-platform run (python -m mpipipe.execution.local_executor FD RANK SIZE);
    a worker forked from its executor shows the same command line, and its parent is that executor."""
    ranks = {}
    for pid in descendants(rank0_pid):
        argv = process_argv(pid)
        if "mpipipe.execution.local_executor" in argv and \
                "mpipipe.execution.local_executor" not in process_argv(parent_pid(pid)):
            i = argv.index("mpipipe.execution.local_executor")
            ranks[int(argv[i + 2])] = pid
    return ranks
