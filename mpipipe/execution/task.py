"""Small picklable task and result records, and the context a task body sees.

Tasks travel in batches between ranks, so they are plain named tuples of
strings and numbers; data never travels with them, only paths.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Type


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
    # shadows tuple.count(value), which nothing calls on a TaskRange: it is read as a record
    count: int  # type: ignore[assignment]
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
    def count(self) -> int:  # type: ignore[override]  # as TaskRange.count: shadows tuple.count, never called
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
    """A per-attempt path beside the final one, so attempts never collide (`pid`: the worker's, default this
    process)."""
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
        self.attempt = task.attempt
        self.inputs: List[List[str]] = [list(paths) for paths in task.inputs]
        self.final_output = task.output
        self._where(npartitions, rank, size, host, job_dir, args)
        self.resources = dict(resources or {})
        self._log: Optional[logging.Logger] = None
        self._staging: Optional[str] = None

    @property
    def log(self) -> logging.Logger:
        """A logger named after the node (made on first use: most tasks never log)."""
        if self._log is None:
            self._log = logging.getLogger(f"mpipipe.task.{self.node_name}")
        return self._log

    # an MPI shuffle's map task writes into its rank's store, and its readers find their buckets there
    # (execution/shuffle_store.py); None: everything is in the job directory
    store: Any = None
    local_output = False

    def keep_local(self, store: Any, local_output: bool) -> None:
        """Use this rank's shuffle store: for the output when `local_output`, and to find shuffled inputs."""
        self.store = store
        self.local_output = local_output

    def shuffle_path(self, path: str) -> str:
        """Where this task finds a folder of an MPI shuffle's output (its rank's store)."""
        return self.store.resolve(path) if self.store is not None else path

    @property
    def output_dir(self) -> str:
        if self._staging is None and self.local_output:
            part = os.path.basename(self.final_output)
            self._staging = self.store.staging(self.store.tier_for(0), f"{self.node_name}.{part}.a{self.attempt}."
                                                                      f"r{self.rank}.{os.getpid()}")
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
        if self.local_output:
            self.store.publish(self._staging, self.final_output)
            if os.path.lexists(self.final_output):  # a run before wrote it to the job directory: readers would
                shutil.rmtree(self.final_output, ignore_errors=True)  # find that one first
            return self.final_output
        replace_into_place(self._staging, self.final_output)
        return self.final_output

    def abort(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _where(self, npartitions: int, rank: int, size: int, host: str, job_dir: str,
               args: Optional[Dict[str, Any]]) -> None:
        """The fields a task's context shares with every task of its node on this rank."""
        self.npartitions = npartitions
        self.rank = rank
        self.world_size = size
        self.host = host
        self.job_dir = job_dir
        self.args = dict(args or {})


class RangeTaskContext(TaskContext):
    """The TaskContext of one task of a TaskRange. One is built per range and `at(p)` copies it per task (a
    dict copy): its Task record, output path and input lists are made only when the body reads them, so a
    tiny task pays for none of them. Each task still gets an object of its own."""

    def __init__(self, rng: TaskRange, node_name: str, npartitions: int, rank: int, size: int, host: str,
                 job_dir: str, args: Optional[Dict[str, Any]] = None) -> None:
        self._range = rng
        self._inputs: Optional[List[List[str]]] = None
        self.node_name = node_name
        self.partition = rng.first
        self.attempt = rng.attempt
        self._where(npartitions, rank, size, host, job_dir, args)
        self.resources: Dict[str, Any] = {}
        self._log = None
        self._staging = None

    def at(self, partition: int) -> "RangeTaskContext":
        """A fresh context for partition `partition` of the range."""
        ctx = object.__new__(RangeTaskContext)
        d = ctx.__dict__
        d.update(self.__dict__)
        d["partition"] = partition
        if self.args:
            d["args"] = dict(self.args)
        d["resources"] = {}
        return ctx

    @property
    def task(self) -> Task:  # type: ignore[override]
        return self._range.task(self.partition - self._range.first)

    @property
    def final_output(self) -> str:  # type: ignore[override]
        rng = self._range
        return f"{rng.prefix}{self.partition:0{rng.digits}d}"

    @property  # type: ignore[override]
    def inputs(self) -> List[List[str]]:
        if self._inputs is None:
            self._inputs = [list(paths) for paths in self._range.inputs]
        return self._inputs

    @inputs.setter
    def inputs(self, value: List[List[str]]) -> None:
        self._inputs = value


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


# --- smallpond's names for the job and the running task ---------------------------------------------------
# A process function written for smallpond reads `runtime_ctx.task.cpu_limit`, `runtime_ctx.task.
# python_random_gen`, `runtime_ctx.secs_executor_probe_interval`, ...; mpipipe hands such functions a
# RuntimeContext bound to the TaskContext, which answers those names and every TaskContext attribute.

class JobId(str):
    """A job's id (a string in mpipipe: it names the job directory)."""

    @staticmethod
    def new() -> "JobId":
        import uuid

        return JobId(uuid.uuid4().hex)


class PartitionInfo:
    """Which partition of which dimension a task works on (smallpond's partition info)."""

    toplevel_dimension = "@toplevel@"
    default_dimension = "__data_partition__"
    __slots__ = ("index", "npartitions", "dimension")

    def __init__(self, index: int = 0, npartitions: int = 1, dimension: str = toplevel_dimension) -> None:
        self.index = index
        self.npartitions = npartitions
        self.dimension = dimension

    def __repr__(self) -> str:
        return f"{self.dimension}[{self.index}/{self.npartitions}]"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PartitionInfo) and (self.dimension, self.index) == (other.dimension, other.index)

    def __lt__(self, other: "PartitionInfo") -> bool:
        return (self.dimension, self.index) < (other.dimension, other.index)

    def __hash__(self) -> int:
        return hash((self.dimension, self.index))


class StreamOutput(NamedTuple):
    """What a stream's process function may yield instead of a bare table: the table, the input batches it
    finished (ignored: mpipipe counts consumed batches itself), and whether to checkpoint now."""

    output: Any
    batch_indices: Optional[List[int]] = None
    force_checkpoint: bool = False


class InjectedFault(Exception):
    """Raised by RunningTask.inject_fault() to test retries; the attempt fails and runs again."""


# the settings a job gives its tasks when run through mpipipe.execution.manager.JobManager (smallpond's
# options); a node carries them as `runtime_settings`
DEFAULT_SETTINGS: Dict[str, Any] = {"fault_inject_prob": 0.0, "secs_executor_probe_interval": 0.0,
                                    "random_seed": None, "max_usable_cpu_count": 1024, "max_usable_gpu_count": 1024,
                                    "enable_profiling": False, "enable_diagnostic_metrics": False,
                                    "remove_empty_parquet": False, "skip_task_with_empty_input": False,
                                    "nonzero_exitcode_as_oom": False}


class RunningTask:
    """The running task as smallpond's process functions see it (`runtime_ctx.task`); attributes it does not
    define come from the Task record (partition, attempt, key, ...)."""

    def __init__(self, ctx: "TaskContext", node: Any, settings: Dict[str, Any]) -> None:
        self._ctx = ctx
        self._node = node
        self._settings = settings
        self._py_random: Any = None
        self._np_random: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx.task, name)

    @property
    def id(self) -> int:
        return self._ctx.task.tid

    @property
    def key(self) -> str:
        return self._ctx.task.key

    @property
    def retry_count(self) -> int:
        return self._ctx.attempt

    @property
    def fail_count(self) -> int:
        return self._ctx.attempt

    @property
    def cpu_limit(self) -> int:
        res = self._ctx.resources
        return int(res.get("cpus") or getattr(self._node, "cpus", None) or 1)

    @property
    def gpu_limit(self) -> float:
        return float(getattr(self._node, "gpu_limit", 0) or 0)

    @property
    def memory_limit(self) -> Optional[int]:
        return self._ctx.resources.get("memory") or getattr(self._node, "memory", None)

    @property
    def _memory_boost(self) -> float:
        """How much more memory this attempt has than the first: what placement added after a memory failure,
        or, for a node whose memory is a limit only (smallpond's memory_limit) or when the job treats a
        crash as running out of memory (nonzero_exitcode_as_oom), twice as much per retry."""
        asked = getattr(self._node, "memory", None)
        given = self._ctx.resources.get("memory")
        if asked and given:
            return given / asked
        if (asked and getattr(self._node, "limit_only", False)) or self._settings.get("nonzero_exitcode_as_oom"):
            return float(1 << min(self._ctx.attempt, 4))
        return 1

    @property
    def local_gpu_ranks(self) -> List[int]:
        """The devices placement gave this task (empty unless the node asked for devices with resources=)."""
        devices = self._ctx.resources.get("devices") or self._ctx.resources.get("accelerators") or []
        return [int(d) for d in devices if str(d).isdigit()]

    @property
    def output_name(self) -> str:
        return self._ctx.node_name

    @property
    def partition_infos(self) -> Tuple[PartitionInfo, ...]:
        return (PartitionInfo(0, 1), PartitionInfo(self._ctx.partition, self._ctx.npartitions,
                                                   PartitionInfo.default_dimension))

    @property
    def random_seed_bytes(self) -> bytes:
        import hashlib

        seed = self._settings.get("random_seed")
        base = str(seed) if seed is not None else self._ctx.job_dir
        return hashlib.sha256(f"{base}|{self._ctx.node_name}|{self._ctx.partition}".encode()).digest()

    @property
    def python_random_gen(self) -> Any:
        """A random.Random seeded by the job's seed, the node and the partition: the same in every attempt."""
        if self._py_random is None:
            import random

            self._py_random = random.Random(int.from_bytes(self.random_seed_bytes, "little"))
        return self._py_random

    @property
    def numpy_random_gen(self) -> Any:
        if self._np_random is None:
            import numpy as np

            self._np_random = np.random.default_rng(int.from_bytes(self.random_seed_bytes, "little"))
        return self._np_random

    def random_uint32(self) -> int:
        return self.python_random_gen.randint(0, 0x7FFFFFFF)

    def random_float(self) -> float:
        return self.python_random_gen.random()

    def inject_fault(self) -> None:
        """With the job's fault_inject_prob, fail this task's first attempt (to test that retries work)."""
        import random

        prob = float(self._settings.get("fault_inject_prob") or 0)
        if prob > 0 and self._ctx.attempt == 0 and random.random() < prob:
            raise InjectedFault(f"fault injected into {self._ctx.node_name} partition {self._ctx.partition} "
                                f"(fault_inject_prob={prob})")


class RuntimeContext:
    """smallpond's RuntimeContext: a job's settings, built with smallpond's constructor; and, inside a task
    (`RuntimeContext.for_task`), what a process function receives: `task` is the RunningTask and every
    TaskContext attribute (partition, npartitions, attempt, log, output_dir, ...) is there too."""

    def __init__(self, job_id: Any = None, job_time: Any = None, data_root: str = "", *, num_executors: int = 1,
                 random_seed: Optional[int] = None, output_path: Optional[str] = None, **settings: Any) -> None:
        import datetime

        self.job_id = JobId(job_id) if job_id is not None else JobId.new()
        self.job_time = job_time or datetime.datetime.now()
        self.data_root = os.path.abspath(data_root or ".")
        self.num_executors = num_executors
        self.random_seed = random_seed
        self.final_output_path = os.path.abspath(output_path) if output_path else None
        self.settings = dict(DEFAULT_SETTINGS, random_seed=random_seed, **settings)
        self._task_ctx: Optional[TaskContext] = None
        self._running: Optional[RunningTask] = None
        self.job_root = os.path.join(self.data_root, self.job_root_dirname)

    @classmethod
    def for_task(cls, ctx: "TaskContext", node: Any) -> "RuntimeContext":
        settings = dict(DEFAULT_SETTINGS, **(getattr(node, "runtime_settings", None) or {}))
        rc = cls.__new__(cls)
        rc.job_id = JobId(os.path.basename(ctx.job_dir.rstrip("/")))
        rc.job_time = None
        rc.data_root = os.path.dirname(ctx.job_dir.rstrip("/"))
        rc.num_executors = max(1, ctx.world_size - 1)
        rc.random_seed = settings.get("random_seed")
        rc.final_output_path = None
        rc.settings = settings
        rc._task_ctx = ctx
        rc._running = RunningTask(ctx, node, settings)
        rc.job_root = ctx.job_dir
        return rc

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings") or {}
        if name in settings:
            return settings[name]
        ctx = self.__dict__.get("_task_ctx")
        if ctx is not None:
            return getattr(ctx, name)
        raise AttributeError(f"RuntimeContext has no attribute {name!r}")

    @property
    def task(self) -> Optional[RunningTask]:
        """The running task (None outside a task)."""
        return self._running

    @property
    def job_root_dirname(self) -> str:
        stamp = f"{self.job_time:%Y-%m-%d-%H-%M-%S}." if self.job_time is not None else ""
        return f"{stamp}{self.job_id}"

    @property
    def output_root(self) -> str:
        """Where task outputs go (the job directory's outputs/ inside a task)."""
        return os.path.join(self.job_root, "outputs" if self._task_ctx is not None else "output")

    @property
    def log_root(self) -> str:
        return os.path.join(self.job_root, "logs" if self._task_ctx is not None else "log")

    @property
    def temp_root(self) -> str:
        return os.path.join(self.job_root, "temp")

    @property
    def usable_cpu_count(self) -> int:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        return min(int(self.settings.get("max_usable_cpu_count") or cores), cores)

    @property
    def usable_memory_size(self) -> int:
        from mpipipe.execution.osutil import physical_memory

        return physical_memory()

    def get_local_gpus(self) -> List[Any]:
        """The GPUs of this host as placement sees them (none is probed here: give devices with resources=)."""
        return []

    @property
    def usable_gpu_count(self) -> int:
        return min(int(self.settings.get("max_usable_gpu_count") or 0), len(self.get_local_gpus()))

    def initialize(self, exec_id: str = "", root_exist_ok: bool = True, cleanup_root: bool = False) -> None:
        """Make the job's folders (smallpond's layout: output, log, temp) under data_root."""
        if os.path.exists(self.job_root):
            if cleanup_root:
                shutil.rmtree(self.job_root)
            elif not root_exist_ok:
                from mpipipe.errors import ConfigError

                raise ConfigError(f"job folder {self.job_root} exists; pass root_exist_ok=True or another job id")
        for d in (self.output_root, self.log_root, self.temp_root):
            os.makedirs(d, exist_ok=True)

    def cleanup(self, remove_output_root: bool = True) -> None:
        if remove_output_root and os.path.isdir(self.output_root):
            shutil.rmtree(self.output_root, ignore_errors=True)

    def __repr__(self) -> str:
        where = f"task {self._task_ctx.node_name}[{self._task_ctx.partition}]" if self._task_ctx else self.job_root
        return f"<RuntimeContext {where}>"


class ExecutionPlan:
    """smallpond's ExecutionPlan: a logical plan with the RuntimeContext it is to run in (what
    `Planner(runtime_ctx).create_exec_plan(plan)` returns), and after a run its outcome. A run returns the
    subclass mpipipe.execution.manager.ExecutionPlan, which also reads each node's output as a dataset."""

    def __init__(self, plan: Any, result: Any = None, error: Optional[BaseException] = None, job_dir: str = "",
                 runtime_ctx: Optional[RuntimeContext] = None) -> None:
        self.logical_plan = plan
        self.result = result
        self.error = error
        self.job_dir = result.job_dir if result is not None else job_dir
        self.runtime_ctx = runtime_ctx

    @property
    def ctx(self) -> Optional[RuntimeContext]:
        return self.runtime_ctx

    @property
    def successful(self) -> bool:
        return self.result is not None and self.error is None

    success = successful

    @property
    def final_output(self) -> Any:
        return self.get_output(self.logical_plan.roots[0].name)

    def get_output(self, output_name: str) -> Any:
        """The dataset a node wrote; None before the plan has run."""
        return None

    def __str__(self) -> str:
        return str(self.logical_plan)

    def __repr__(self) -> str:
        state = "not run" if not self.job_dir else "succeeded" if self.successful else "failed"
        return f"<ExecutionPlan {os.path.basename(self.job_dir) or '-'}: {state}>"

    def __reduce__(self) -> Any:
        """Pickled with cloudpickle whatever the pickler: its plan's nodes may hold lambdas, and smallpond's
        scheduler state (which holds this) travels through multiprocessing queues."""
        from mpipipe.pickling import dumps

        return _restore_exec_plan, (type(self), dumps(self.__dict__))


def _restore_exec_plan(cls: Type[ExecutionPlan], state: bytes) -> ExecutionPlan:
    import pickle

    plan = cls.__new__(cls)
    plan.__dict__.update(pickle.loads(state))
    return plan


class PythonScriptTask:
    """smallpond's task object for a PythonScriptNode whose `spawn()` returns one: subclass it and override
    `process(runtime_ctx, input_datasets, output_path) -> bool` (and, if needed, initialize/finalize).
    The constructor takes smallpond's spawn arguments; the running task's facts (`cpu_limit`,
    `local_gpu_ranks`, `inject_fault()`, `python_random_gen`, ...) come from the task it runs in."""

    def __init__(self, runtime_ctx: Any = None, input_deps: Any = None, partition_infos: Any = None,
                 process_func: Any = None, output_name: Optional[str] = None, output_path: Optional[str] = None,
                 cpu_limit: int = 1, gpu_limit: float = 0, memory_limit: Optional[int] = None) -> None:
        self.process_func = process_func
        self.output_name = output_name
        self.output_root = output_path
        self._running: Optional[RunningTask] = None

    def bind(self, runtime_ctx: RuntimeContext) -> None:
        """Attach the running task (done by the node before initialize())."""
        self._running = runtime_ctx.task

    def __getattr__(self, name: str) -> Any:
        running = self.__dict__.get("_running")
        if running is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return getattr(running, name)

    def initialize(self) -> None:
        """Hook: before process()."""

    def finalize(self) -> None:
        """Hook: after process(), also when it raised."""

    def process(self, runtime_ctx: RuntimeContext, input_datasets: List[Any], output_path: str) -> bool:
        if self.process_func is None:
            raise NotImplementedError(f"{type(self).__name__} does not override process()")
        return self.process_func(runtime_ctx, input_datasets, output_path)


class DataSinkTask:
    """The file a DataSinkNode with manifest_only=True (type="manifest") writes in its folder, one path per
    line (beside manifest.json, which also has each fragment's rows)."""

    manifest_filename = "manifest.txt"


class DataSourceTask:
    """smallpond's name for a source node's task; in mpipipe a DataSourceNode runs as a task of its own."""
