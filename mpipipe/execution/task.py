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


class TaskRange(NamedTuple):
    """Partitions first..first+count-1 of one node, attempt `attempt`, task ids tid..tid+count-1: how plain tasks
    travel (rank 0 never builds them one by one; an executor or worker expands them where they run). Every
    partition reads the same inputs (not a pointwise node)."""

    tid: int
    node: int
    first: int
    count: int
    attempt: int
    fingerprint: str
    inputs: Tuple[Tuple[str, ...], ...]
    prefix: str  # output path of partition p: f"{prefix}{p:0{digits}d}"
    digits: int

    @property
    def resources(self) -> None:
        """Ranges are plain tasks: no placement."""
        return None

    def task(self, i: int) -> Task:
        p = self.first + i
        return Task(self.tid + i, self.node, p, self.attempt, f"{self.fingerprint}:{p}", self.inputs,
                    f"{self.prefix}{p:0{self.digits}d}")

    def tasks(self) -> List[Task]:
        return [self.task(i) for i in range(self.count)]

    def split(self, k: int) -> "Tuple[TaskRange, Optional[TaskRange]]":
        """The first k tasks, and the rest (None when nothing is left)."""
        if k >= self.count:
            return self, None
        return (self._replace(count=k),
                self._replace(tid=self.tid + k, first=self.first + k, count=self.count - k))


class OkRun(NamedTuple):
    """Consecutive successful tasks of one TaskRange, as columns: task ids tid..tid+len(t0)-1."""

    tid: int
    t0: List[float]
    t1: List[float]
    outputs: List[Optional[str]]
    values: List[Any]
    log: str  # the worker's log file
    log_offsets: List[int]  # where each task's output starts in it; the last entry is where the run's ends

    @property
    def count(self) -> int:
        return len(self.t0)


def unit_size(unit: Any) -> int:
    """How many tasks a Task or TaskRange (what travels in a TASKS message) stands for."""
    return unit.count if type(unit) is TaskRange else 1


VALUE_INLINE_BYTES = 64 * 1024  # a task's value up to this much JSON goes in its journal record; larger: a file
VALUES_DIR = "values"  # <job dir>/values/<node>/: the values too large for the journal

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


def value_ref(node_name: str, partition: int, attempt: int, rank: int, pid: Optional[int] = None) -> str:
    """Where a large value of one attempt goes, relative to the job directory (unique like a staging path)."""
    return f"{VALUES_DIR}/{node_name}/p{partition}.a{attempt}.r{rank}.{pid or os.getpid()}.json"


def is_value_ref(ref: Any, node_name: Optional[str] = None) -> bool:
    """Whether `ref` has the shape value_ref() gives (of `node_name`'s values when given): a journal record
    names its value file relative to the job directory, and nothing else is ever read as a value."""
    if not isinstance(ref, str):
        return False
    parts = ref.split("/")
    return (len(parts) == 3 and parts[0] == VALUES_DIR and parts[1] not in ("", ".", "..")
            and (node_name is None or parts[1] == node_name) and parts[2].endswith(".json")
            and not parts[2].startswith(".") and "\0" not in ref)


def write_value(job_dir: str, ref: str, text: str) -> None:
    """Write a value's JSON to its file in the job directory, owner-only, whole or not at all."""
    from mpipipe.ownership import make_private_tree, write_private_file

    path = os.path.join(job_dir, ref)
    make_private_tree(os.path.dirname(path), "value folder")
    write_private_file(path, text.encode())


def read_value(job_dir: str, ref: str) -> Any:
    """The value a record names by its file; only a file of the job's values/ that this user alone could have
    written is read."""
    import json

    from mpipipe.errors import JournalError
    from mpipipe.ownership import check_trusted_file

    if not is_value_ref(ref):
        raise JournalError(f"a journal record names the value file {ref!r}, which is not in {VALUES_DIR}/ of the "
                           f"job {job_dir}; only files there are read as values: run the job with --fresh")
    path = os.path.join(job_dir, ref)
    check_trusted_file(path, "value file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise JournalError(f"cannot read the value file {path} ({e}); run the same command again: a task whose value "
                           "file is missing runs again") from None


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
        self._log: Optional[logging.Logger] = None
        self._staging: Optional[str] = None

    @property
    def log(self) -> logging.Logger:
        """A logger named after the node (made on first use: most tasks never log)."""
        if self._log is None:
            self._log = logging.getLogger(f"mpipipe.task.{self.node_name}")
        return self._log

    @property
    def output_dir(self) -> str:
        if self._staging is None:
            self._staging = staging_path(self.final_output, self.attempt, self.rank)
            if os.path.lexists(self._staging):
                shutil.rmtree(self._staging, ignore_errors=True)
            from mpipipe.ownership import make_owner_only_dirs

            make_owner_only_dirs(self._staging)  # outputs/<node>/, .staging and the attempt's folder: 0700
        return self._staging

    @property
    def host_executors(self) -> int:
        """Executor ranks on this task's host, this one included: a task that states no needs of its own
        shares the host with their tasks (see host_share), not with the whole world's."""
        return host_view(self.job_dir, self.rank, self.world_size)["executors"]

    @property
    def host_offer(self) -> Dict[str, Any]:
        """What this rank's host offers within the job's allocation, as rank 0 placed by it: {"cores",
        "memory", "accelerators", "limits", ...} (see execution.hostprobe)."""
        return dict(host_view(self.job_dir, self.rank, self.world_size)["offer"])

    def host_share(self) -> Tuple[int, int]:
        """(cores, memory bytes): this rank's share of what its host offers, each divided among the executor
        ranks that share it (at least 1 core); what a task that states no needs should use."""
        view = host_view(self.job_dir, self.rank, self.world_size)
        offer = view["offer"]
        return (max(1, int(offer.get("cores") or 1) // view["core_sharers"]),
                int(offer.get("memory") or 0) // view["memory_sharers"])

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


_HOST_VIEWS: Dict[Tuple[str, int], Dict[str, Any]] = {}


def host_view(job_dir: str, rank: int, world_size: int) -> Dict[str, Any]:
    """What `rank` knows of its host: {"executors": ranks on it, "core_sharers"/"memory_sharers": ranks that
    share its cores/memory, "offer": what it offers}, from the hosts rank 0 recorded in job.json (written
    before any task is sent); without it, from this process's own probe and the launcher's count of ranks
    on this host."""
    key = (job_dir, rank)
    found = _HOST_VIEWS.get(key)
    if found is not None:
        return found
    import json

    from mpipipe.execution import hostprobe

    try:
        with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
            hosts = {int(r): d for r, d in (json.load(f).get("hosts") or {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        hosts = {}
    if rank in hosts and isinstance(hosts[rank], dict):
        found = {"executors": len(hostprobe.host_members(hosts, rank)),
                 "core_sharers": len(hostprobe.pool_members(hosts, rank, "cores")),
                 "memory_sharers": len(hostprobe.pool_members(hosts, rank, "memory")), "offer": hosts[rank]}
        _HOST_VIEWS[key] = found
        return found
    n = max(1, hostprobe.launcher_local_size(os.environ) or world_size - 1)
    return {"executors": n, "core_sharers": n, "memory_sharers": n, "offer": hostprobe.local_allocation()}

