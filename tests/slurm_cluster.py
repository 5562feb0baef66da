"""Start and stop the real single-node SLURM cluster of ``scripts/slurm-up``.

A plain module (no pytest imports) so that a fixture in ``conftest.py`` can use
it::

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(reason)
    env = start_cluster(path)        # os.environ + SLURM_CONF
    try:
        ...
    finally:
        stop_cluster(path)

Every subprocess runs with a timeout, in its own session (so a stray terminal
signal does not reach it) and with no stdin.  On a timeout the whole process
group of the script is killed; the Slurm daemons are not in it (they detach
into their own sessions), so call :func:`stop_cluster` afterwards anyway.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SLURM_UP = SCRIPTS / "slurm-up"
SLURM_DOWN = SCRIPTS / "slurm-down"

#: Generous because a cold ``slurm-up`` may apt-get install slurm-wlm and munge.
UP_TIMEOUT = 180.0
DOWN_TIMEOUT = 60.0

_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class SlurmClusterError(RuntimeError):
    """``slurm-up`` / ``slurm-down`` failed or timed out."""


def default_dir() -> Path:
    """The cluster directory the scripts use when given none."""
    return Path(os.environ.get("MPIPIPE_SLURM_DIR") or REPO / ".slurm").absolute()


def _which(cmd: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + _SBIN_PATH
    return shutil.which(cmd, path=path)


def slurm_available() -> tuple[bool, str]:
    """Whether ``scripts/slurm-up`` can bring a cluster up on this machine.

    True when we are root on Linux and either Slurm and MUNGE are installed or
    apt-get can install them (the network is not probed).  The reason says
    why not, or how the cluster will be obtained.
    """
    if not os.uname().sysname == "Linux":
        return False, "the local SLURM cluster needs Linux"
    if not SLURM_UP.is_file() or not os.access(SLURM_UP, os.X_OK):
        return False, f"{SLURM_UP} is missing or not executable"
    missing = [c for c in ("slurmctld", "slurmd", "sinfo", "srun", "munged")
               if _which(c) is None]
    if os.geteuid() != 0:
        if missing:
            return False, ("not root and Slurm is not installed: run "
                           "`apt-get install slurm-wlm munge` as root")
        return False, "starting slurmctld/slurmd/munged needs root"
    for tool in ("flock", "timeout", "runuser"):
        if _which(tool) is None:
            return False, f"{tool} not found (util-linux/coreutils needed)"
    if missing:
        if _which("apt-get") is None:
            return False, (f"{', '.join(missing)} not installed and no apt-get "
                           "to install slurm-wlm and munge")
        return True, "Slurm will be installed with apt-get by scripts/slurm-up"
    return True, "Slurm and MUNGE are installed"


def _run(cmd: list[str], timeout: float,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` with a timeout; kill its whole process group on timeout."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=dict(env) if env is not None else None)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild kept the pipes open
            proc.kill()
            out, err = "", ""
        raise SlurmClusterError(
            f"{' '.join(cmd)} timed out after {timeout:.0f} s\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _script_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


def cluster_env(slurm_conf: str | os.PathLike[str],
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Slurm clients talking to the cluster of ``slurm_conf``.

    A copy of ``base`` (default ``os.environ``) with ``SLURM_CONF`` set and
    any other inherited ``SLURM_*`` variables removed (if the tests run inside
    a Slurm allocation they would otherwise point srun at that one), and with
    the sbin directories appended to ``PATH``.
    """
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(slurm_conf)
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + _SBIN_PATH
    return env


def start_cluster(directory: str | os.PathLike[str], *,
                  timeout: float = UP_TIMEOUT,
                  extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Run ``scripts/slurm-up DIRECTORY``; return the environment to use.

    Idempotent like the script.  ``extra_env`` is passed to the script, e.g.
    ``{"MPIPIPE_SLURM_CTLD_PORT": "16817", "MPIPIPE_SLURM_SLURMD_PORT":
    "16818"}`` to run next to another cluster.  The returned dict is
    ``os.environ`` plus ``SLURM_CONF`` (see :func:`cluster_env`).
    Raises :class:`SlurmClusterError` with the script's output on failure.
    """
    res = _run_script(SLURM_UP, directory, timeout, extra_env)
    lines = res.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("SLURM_CONF="):
        raise SlurmClusterError(
            f"slurm-up printed no SLURM_CONF= line\n--- stdout ---\n{res.stdout}"
            f"\n--- stderr ---\n{res.stderr}")
    return cluster_env(lines[-1].split("=", 1)[1])


def stop_cluster(directory: str | os.PathLike[str], *,
                 timeout: float = DOWN_TIMEOUT,
                 extra_env: Mapping[str, str] | None = None) -> str:
    """Run ``scripts/slurm-down DIRECTORY`` (idempotent); return its stderr.

    Raises :class:`SlurmClusterError` if the script fails or times out.
    """
    return _run_script(SLURM_DOWN, directory, timeout, extra_env).stderr


def _run_script(script: Path, directory: "str | os.PathLike[str]", timeout: float,
                extra_env: "Mapping[str, str] | None"):  # type: ignore[no-untyped-def]
    """Run slurm-up or slurm-down on DIRECTORY; raise with its output if it fails."""
    directory = Path(directory).absolute()
    res = _run([str(script), str(directory)], timeout, _script_env(extra_env))
    if res.returncode != 0:
        raise SlurmClusterError(
            f"{script.name} {directory} failed (exit {res.returncode})\n"
            f"--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}")
    return res


def daemon_pids(directory: str | os.PathLike[str]) -> dict[str, int]:
    """Pids recorded in DIRECTORY/run/*.pid (slurmctld, slurmd, munged if ours)."""
    pids = {}
    for name in ("slurmctld", "slurmd", "munged"):
        try:
            text = (Path(directory) / "run" / f"{name}.pid").read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            pids[name] = int(text)
    return pids


def pid_running(pid: int, name: str | None = None) -> bool:
    """``pid`` is a live, non-zombie process (named ``name`` if given).

    Zombies count as gone: in some containers PID 1 never reaps orphans.
    """
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if name is not None and comm != name:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_ports(n: int) -> list[int]:
    """n TCP ports free right now on 127.0.0.1, so several test clusters can run side by side."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def running_cluster(prefix: str, passed: Callable[[], bool], cpus: int = 16) -> Iterator[str]:
    """A cluster of its own under .slurm/test-clusters (not pytest's tmp: socket paths must stay short), on free
    ports; yields its SLURM_CONF and stops its daemons after. Its folder is removed if `passed()`, else kept
    for the daemons' logs."""
    parent = Path(__file__).resolve().parent.parent / ".slurm" / "test-clusters"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).resolve()
    ctld, slurmd = free_ports(2)
    extra = {"MPIPIPE_SLURM_CTLD_PORT": str(ctld), "MPIPIPE_SLURM_SLURMD_PORT": str(slurmd),
             "MPIPIPE_SLURM_CPUS": str(cpus)}
    try:
        yield start_cluster(directory, extra_env=extra)["SLURM_CONF"]
    finally:
        stop_cluster(directory, extra_env=extra)
    if passed():
        shutil.rmtree(directory, ignore_errors=True)
