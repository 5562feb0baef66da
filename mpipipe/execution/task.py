"""Small picklable task and result records, and the context a task body sees.

Tasks travel in batches between ranks, so they are plain named tuples of
strings and numbers; data never travels with them, only paths.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict, List, NamedTuple, Optional, Tuple


class Task(NamedTuple):
    tid: int  # unique per run, for matching results
    node: int
    partition: int
    attempt: int
    key: str  # fingerprint of node + partition: the journal's key
    inputs: Tuple[Tuple[str, ...], ...]  # per input node, the upstream output paths
    output: str  # final output path of this partition
    resources: Optional[Dict[str, Any]] = None  # what placement gave it: cpus, memory, devices, time


EXTERNAL = 0  # the rank named for tasks a launcher ran outside the world (SLURM, ...): rank 0 handed them over
OK = "ok"
FAILED = "failed"


class Result(NamedTuple):
    tid: int
    status: str  # OK or FAILED
    info: Dict[str, Any]  # ok: output, value, t0, t1, log; failed: error, traceback, log, crash


def staging_path(output: str, attempt: int, rank: int, pid: Optional[int] = None) -> str:
    """A per-attempt path beside the final one, so attempts never collide (`pid`: the worker's, default this process)."""
    parent, base = os.path.split(output)
    return os.path.join(parent, ".staging", f"{base}.a{attempt}.r{rank}.{pid or os.getpid()}")


def remove_staging(output: str, attempt: int, rank: int, pid: int) -> None:
    """Drop what an attempt that died (or was stopped) left in its staging folder."""
    path = staging_path(output, attempt, rank, pid)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def replace_into_place(staging: str, final: str) -> None:
    """Rename a finished staging path over the final one (readers never see a partial output)."""
    try:
        os.rename(staging, final)
        return
    except OSError:
        if not os.path.lexists(final):
            raise
    # an older output is in the way (a run that crashed before journaling it): move it aside first
    trash = staging + ".old"
    os.rename(final, trash)
    os.rename(staging, final)
    if os.path.isdir(trash) and not os.path.islink(trash):
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.unlink(trash)


class TaskContext:
    """What a task body is given: its partition, inputs, and a private output folder.

    `output_dir` is created on first use, so tasks that write nothing cost no
    file system work; it is renamed to `final_output` when the body returns.
    """

    def __init__(self, task: Task, node_name: str, npartitions: int, rank: int, size: int,
                 host: str, job_dir: str, args: Optional[Dict[str, Any]] = None,
                 resources: Optional[Dict[str, Any]] = None) -> None:
        self.task = task
        self.node_name = node_name
        self.partition = task.partition
        self.npartitions = npartitions
        self.attempt = task.attempt
        self.inputs: List[List[str]] = [list(paths) for paths in task.inputs]
        self.final_output = task.output
        self.rank = rank
        self.world_size = size
        self.host = host
        self.job_dir = job_dir
        self.args = dict(args or {})
        self.resources = dict(resources or {})
        self.log = logging.getLogger(f"mpipipe.task.{node_name}")
        self._staging: Optional[str] = None

    @property
    def output_dir(self) -> str:
        if self._staging is None:
            self._staging = staging_path(self.final_output, self.attempt, self.rank)
            if os.path.lexists(self._staging):
                shutil.rmtree(self._staging, ignore_errors=True)
            os.makedirs(self._staging)
        return self._staging

    @property
    def input_paths(self) -> List[str]:
        """All upstream outputs flattened, in input order then partition order."""
        return [p for paths in self.inputs for p in paths]

    def commit(self) -> Optional[str]:
        if self._staging is None:
            return None
        replace_into_place(self._staging, self.final_output)
        return self.final_output

    def abort(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
