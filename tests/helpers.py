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
