"""The body of the batch scripts mpipipe submits: it runs inside the SLURM job.

The script itself (written by mpipipe.platform.slurm) is a few lines of Python
with `#SBATCH` lines and one call, `main(SPEC)`, whose SPEC holds every argv as
data. main() starts the job's command (`srun --mpi=... python script.py ...`,
or one array element's argv) as a child process and then:

- on the warning signal (`--signal=B:USR1@S`, sent S seconds before the time
  limit or a preemption), it sends SIGTERM to the job step (rank 0 stops
  dispatching, flushes the journal, exits 130), waits for it, and requeues
  the job (`scontrol requeue ID`), so that the job starts again and resumes
  from its journal;
- on SIGTERM or SIGINT (scancel, an admin, the time limit itself) it forwards
  SIGTERM the same way and exits without requeueing;
- when the command ends by itself, or after a stop without requeue, it writes
  the exit code to `<exit_dir>/<name>.exit.json`, which the submitting side reads.

Before the world starts, stale MPICH shared-memory segments of this user are
removed from the job's nodes. MPICH names its segment after a hash of the PMI
name of the world, which under srun is "<job id>.<step id>": a requeued job
gets the same name again, and a segment that a killed earlier run left in
/dev/shm makes the new world hang in MPI_Init.

Only the standard library is used here: this runs on compute nodes before
anything else of the job.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional
from mpipipe.atomic import atomic_write

PREFIX = "[mpipipe slurm]"
WARNING_SIGNALS = {"USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2}


def say(text: str) -> None:
    print(f"{PREFIX} {time.strftime('%H:%M:%S')} {text}", flush=True)


def write_exit(path: str, record: Dict[str, Any]) -> None:
    """The job's exit record, owner-only like every file of the job directory."""
    atomic_write(path, json.dumps(record))


def run_command(argv: List[str], timeout: float = 60.0, quiet: bool = False) -> int:
    """A SLURM client command from inside the job (scancel, scontrol); its errors go to the job's output."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"{' '.join(argv)} failed: {e}")
        return 1
    if done.returncode != 0 and not quiet:
        say(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.returncode


class Child:
    """The job's command, and how to ask it to stop."""

    def __init__(self, argv: List[str], env: Dict[str, str], stop: str, job_id: str) -> None:
        self.stop_how = stop  # "step": scancel --signal=TERM the job's steps; "term"/"int": signal the child's group
        self.job_id = job_id
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=stop != "step")

    def ask_to_stop(self, quiet: bool) -> None:
        if self.stop_how == "step":
            # every task of the job's steps gets SIGTERM (not this batch script): rank 0 stops and flushes
            run_command(["scancel", "--signal=TERM", self.job_id], quiet=quiet)
            return
        sig = signal.SIGINT if self.stop_how == "int" else signal.SIGTERM
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.stop_how == "step":
            run_command(["scancel", "--signal=KILL", self.job_id], quiet=True)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


SHM_DIR = "/dev/shm"
SHM_PREFIXES = ("mpich_shm_", "mpich_vci_")


def _mapped_by_my_processes() -> set:
    """Paths of /dev/shm files mapped by any live process of this user."""
    mapped = set()
    uid = os.getuid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if SHM_DIR in line:
                        mapped.add(line.split(None, 5)[-1].strip())
        except OSError:
            continue
    return mapped


def clean_stale_shm(min_age: float = 10.0, folder: str = SHM_DIR) -> List[str]:
    """Remove this user's MPICH segments that no live process maps and that are older than min_age seconds."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(SHM_PREFIXES)]
    except OSError:
        return []
    if not names:
        return []
    mapped = _mapped_by_my_processes() if folder == SHM_DIR else set()
    removed = []
    now = time.time()
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
            if st.st_uid != os.getuid() or now - st.st_mtime < min_age or path in mapped:
                continue
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue
    return removed


def clean_nodes(spec: Dict[str, Any], env: Dict[str, str]) -> None:
    """Stale MPICH segments off this node, and off the job's other nodes with one short step."""
    removed = clean_stale_shm()
    if removed:
        say(f"removed {len(removed)} stale MPICH shared-memory segment(s) of killed earlier runs")
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1)
    if nodes > 1 and spec.get("python"):
        argv = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", spec["python"], "-m",
                "mpipipe.platform.slurm_batch", "clean-shm"]
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        step_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p))
        try:
            subprocess.run(argv, env=step_env, stdin=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            say(f"cleaning the other nodes failed: {e}")


def main(spec: Dict[str, Any]) -> int:
    job_id = os.environ.get("SLURM_JOB_ID", "0")
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    if spec["kind"] == "array":
        task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
        index = int(spec["offset"]) + task
        env["MPIPIPE_ARRAY_INDEX"] = str(index)
        env["MPIPIPE_ARRAY_COUNT"] = str(spec["count"])
        name = f"element-{index}"
        what = f"array element {index} (SLURM job {os.environ.get('SLURM_ARRAY_JOB_ID', job_id)}_{task})"
    else:
        name = job_id
        what = f"SLURM job {job_id}"
    exit_path = os.path.join(spec["exit_dir"], f"{name}.exit.json")
    try:
        os.unlink(exit_path)  # a requeued job starts again: its earlier run's code is not the answer
    except FileNotFoundError:
        pass
    if spec.get("cwd"):
        os.chdir(spec["cwd"])

    received: List[int] = []
    handled = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]  # SIGHUP: as SIGTERM, wherever it comes from
    warning = WARNING_SIGNALS.get(spec.get("warning_signal") or "")
    if warning is not None:
        handled.append(warning)
    for sig in handled:
        signal.signal(sig, lambda signum, _frame: received.append(signum))

    again = f", restart {restart}" if restart else ""
    say(f"{what} started on {socket.gethostname()}{again}")
    if spec.get("stop") == "step":
        clean_nodes(spec, env)
    child = Child(list(spec["argv"]), env, spec.get("stop", "term"), job_id)
    stopped: Optional[int] = None
    deadline: Optional[float] = None
    while child.proc.poll() is None:
        if received and stopped is None:
            stopped = received[0]
            if stopped == warning:
                say(f"got SIG{spec['warning_signal']}: the time limit or a preemption is near; stopping the job step "
                    "(the journal keeps what finished)")
            else:
                say(f"got {signal.Signals(stopped).name}: stopping the job step")
                # SLURM kills this script too when KillWait is over: leave the answer in place already
                write_exit(exit_path, {"job": job_id, "restart": restart, "code": 130,
                                       "stopped": signal.Signals(stopped).name})
            deadline = time.monotonic() + float(spec.get("grace", 60))
            # when SLURM itself stops the job (scancel, time limit), the steps got SIGTERM already
            child.ask_to_stop(quiet=stopped != warning)
        if deadline is not None and time.monotonic() > deadline:
            say("the job step did not stop in time: killing it")
            child.kill()
            deadline = None
        time.sleep(0.1)
    code = child.proc.returncode
    code = code if code >= 0 else 128 - code
    if stopped is None:
        write_exit(exit_path, {"job": job_id, "restart": restart, "code": code, "stopped": None})
        say(f"{what} finished with exit code {code}")
        return code
    if stopped == warning and code != 0 and spec.get("requeue"):
        say(f"requeueing SLURM job {job_id}: it starts again and resumes from its journal")
        if run_command(["scontrol", "requeue", job_id]) == 0:
            return 0
        say("scontrol requeue failed: the job ends here; run the same command again to resume")
    final = 0 if code == 0 else 130
    write_exit(exit_path, {"job": job_id, "restart": restart, "code": final,
                           "stopped": signal.Signals(stopped).name})
    say(f"{what} stopped by {signal.Signals(stopped).name}, exit code {final}")
    return final


if __name__ == "__main__":  # one task per node of the cleaning step (the batch script calls main() itself)
    if sys.argv[1:] == ["clean-shm"]:
        clean_stale_shm()
        sys.exit(0)
    sys.exit(main(json.loads(sys.argv[1])))
