"""The SLURM client commands mpipipe runs: sbatch, squeue, scontrol, scancel, each as an argv list.

Every call has a timeout, no stdin, and on failure raises a PlatformError that
shows the command's own error. Status is read with ONE squeue call for any
number of jobs (`queue_states`); nothing here polls per job.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

from mpipipe.errors import PlatformError

# states in which a job may still run (or run again); anything else is final
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE",
    "UPDATE_DB",
})
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class QueueEntry:
    """One line of squeue: a job, or one element of an array (key "ARRAYID_INDEX")."""

    key: str  # %i: "123", or "123_4" for an array element
    job_id: str  # %F: the job's id, or its array's id
    task: Optional[int]  # %K: the array index, None for a plain job
    state: str  # %T
    reason: str  # %r
    nodes: str  # %N

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def run(argv: List[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> "subprocess.CompletedProcess[str]":
    """Run one SLURM client command; a missing command, a timeout or (with check) a failure is a PlatformError."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PlatformError(f"{argv[0]} not found on PATH: the SLURM platform needs the SLURM client commands "
                            "(sbatch, squeue, scontrol, scancel) where the job is submitted") from None
    except subprocess.TimeoutExpired:
        raise PlatformError(f"{' '.join(argv[:2])} did not answer within {timeout:.0f} s; is slurmctld up "
                            "(check SLURM_CONF and `sinfo`)?") from None
    if check and done.returncode != 0:
        err = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise PlatformError(f"{argv[0]} failed: {err}")
    return done


def sbatch(argv: List[str]) -> str:
    """Submit with an sbatch argv that includes --parsable; returns the job id."""
    done = run(argv)
    first = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    job_id = first.split(";", 1)[0]
    if not job_id.isdigit():
        raise PlatformError(f"sbatch printed no job id: {done.stdout.strip()!r} {done.stderr.strip()!r}")
    return job_id


SQUEUE_FORMAT = "%i|%F|%K|%T|%r|%N"


def squeue_argv(job_ids: Iterable[str]) -> List[str]:
    """One squeue call for all the ids: every state (recently ended jobs too), one line per array element."""
    return ["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}",
            f"--format={SQUEUE_FORMAT}"]


def parse_squeue(text: str) -> Dict[str, QueueEntry]:
    entries: Dict[str, QueueEntry] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        key, job_id, task, state, reason, nodes = parts
        state = state.split()[0] if state.strip() else "UNKNOWN"
        entries[key] = QueueEntry(key, job_id, int(task) if task.isdigit() else None, state, reason, nodes)
    return entries


def queue_states(job_ids: Iterable[str]) -> Dict[str, QueueEntry]:
    """What squeue knows of these jobs (and their array elements), in one call; jobs SLURM forgot are missing."""
    ids = sorted({str(j) for j in job_ids}, key=lambda j: (len(j), j))
    if not ids:
        return {}
    done = run(squeue_argv(ids), check=False)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # squeue says so when a single id is no longer known
            return {}
        raise PlatformError(f"squeue failed: {(done.stderr or done.stdout).strip()}")
    return parse_squeue(done.stdout)


def job_comment(job_id: str) -> Optional[str]:
    """The comment of a job SLURM still knows (pending, running or recently ended)."""
    done = run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%k"], check=False)
    text = done.stdout.strip() if done.returncode == 0 else ""
    return text.splitlines()[0] if text and text != "(null)" else None


def show_job(job_id: str) -> Dict[str, str]:
    """`scontrol show job` as key -> value (state, exit code, restarts); {} if SLURM no longer knows it."""
    done = run(["scontrol", "--oneliner", "show", "job", job_id], check=False)
    if done.returncode != 0:
        return {}
    out: Dict[str, str] = {}
    for key in ("JobState", "ExitCode", "Restarts", "Reason", "RunTime", "TimeLimit"):
        m = re.search(rf"(?:^|\s){key}=(\S+)", done.stdout)
        if m:
            out[key] = m.group(1)
    return out


def exit_code_of(info: Dict[str, str]) -> Optional[int]:
    """The exit code in `scontrol show job` (ExitCode=code:signal); a signal gives 128 + signal."""
    m = re.match(r"^(\d+):(\d+)$", info.get("ExitCode", ""))
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig else code


def scancel_argv(job_ids: Iterable[str], signal: Optional[str] = None) -> List[str]:
    argv = ["scancel"]
    if signal:
        argv.append(f"--signal={signal}")
    return argv + list(job_ids)


def scancel(job_ids: Iterable[str], signal: Optional[str] = None) -> None:
    ids = list(job_ids)
    if ids:
        run(scancel_argv(ids, signal), check=False)


def requeue_argv(job_id: str) -> List[str]:
    return ["scontrol", "requeue", job_id]


def max_array_size() -> int:
    """The cluster's MaxArraySize: array indices go from 0 to MaxArraySize - 1."""
    done = run(["scontrol", "show", "config"])
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", done.stdout, re.MULTILINE)
    if not m:
        raise PlatformError("scontrol show config does not say MaxArraySize")
    return int(m.group(1))
