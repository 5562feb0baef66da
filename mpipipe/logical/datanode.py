"""Data nodes: steps that read and write partitions of tabular data.

A data node's partition p reads, from each input, the slice that belongs to p:
- the same partition, when counts match (tasks then run pointwise, no barrier);
- bucket p of every task of a partitioning input (hash or user partitioning);
- everything, when the input has a single partition (broadcast) or the node
  gathers (sources of a split, limit, union, consolidate, sink).
Counts that do not line up are plan errors that name the node.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from mpipipe.errors import PlanError
from mpipipe.logical.dataset import DataSet, dataset_for
from mpipipe.logical.plan import Context, Node

Inputs = Union[Node, Iterable[Node], Mapping[str, Node]]


def _as_inputs(inputs: Inputs) -> Tuple[Tuple[Node, ...], Optional[Tuple[str, ...]]]:
    if isinstance(inputs, Node):
        return (inputs,), None
    if isinstance(inputs, Mapping):
        return tuple(inputs.values()), tuple(inputs.keys())
    return tuple(inputs), None


def num_outputs(node: Node) -> int:
    """How many partitions a consumer sees: buckets for a partitioning node (times its tasks when nested),
    else its task count."""
    nb = getattr(node, "nbuckets", None)
    if nb is None:
        return int(node.npartitions)
    return int(nb) * input_partitions(node) if getattr(node, "nested", False) else int(nb)


def input_partitions(node: Node) -> int:
    """The input partitions a partitioning node's tasks cover: its tasks, unless it cut a one-partition
    source into several map tasks (see mpipipe.logical.mapsplit)."""
    return int(node.npartitions) // int(getattr(node, "map_split", 1))


def is_bucketed(node: Node) -> bool:
    return getattr(node, "nbuckets", None) is not None


def output_schema_of(node: Node) -> Any:
    """The Arrow schema a node writes when it can be known before running (else None)."""
    fn = getattr(node, "output_schema", None)
    return fn() if fn is not None else None


class DataNode(Node):
    """Base of the data steps: input slicing, per-task resources, and a body that writes Parquet.

    `cpus` and `memory` (bytes or '4GB') bound what one task uses (DuckDB threads
    and memory limit); by default a task gets its share of its host: what the host offers divided among
    the executors there, or among the node's tasks when they are fewer.
    """

    kind = "data"
    gathers = False  # every task reads all partitions of every input
    # its tasks read their inputs only through PartitionData (any file form, Arrow IPC shuffle files too),
    # never by their paths (mpipipe.logical.intermediates)
    reads_any_format = False

    # smallpond's class-wide defaults for cpu_limit and memory_limit (None: the task's share of its host)
    default_cpu_limit: Optional[int] = None
    default_memory_limit: Union[int, str, None] = None

    def __init__(self, ctx: Context, inputs: Inputs = (), npartitions: Optional[int] = None,
                 name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None, *, output_name: Optional[str] = None,
                 output_path: Optional[str] = None, cpu_limit: Optional[int] = None, gpu_limit: float = 0,
                 memory_limit: Union[int, str, None] = None, **no_effect: Any) -> None:
        deps, names = _as_inputs(inputs)
        name = name or output_name
        label = name or self.default_name()
        check_no_effect(label, no_effect)
        self.no_effect = dict(no_effect)
        for d in deps:
            if not isinstance(d, Node):
                raise PlanError(f"node {label!r}: inputs must be nodes, got {type(d).__name__}")
        # partition counts that do not line up are reported when the plan is made (LogicalPlan, a DataFrame
        # action), where smallpond reports them; the node is still built, so the script reaches that point
        self._deferred: Optional[PlanError] = None
        self._dim_map: Dict[int, List[int]] = {}
        if npartitions is None:
            try:
                npartitions = self._default_partitions(label, deps)
            except PlanError as e:
                aligned = None if self.gathers else align_by_dimensions(deps)
                if aligned is None:
                    self._deferred = e
                    npartitions = max(num_outputs(d) for d in deps)
                else:
                    npartitions, self._dim_map = aligned
        if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {label!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        if not self.gathers and self._deferred is None:
            try:
                self._check_alignment(label, [d for i, d in enumerate(deps) if i not in self._dim_map], npartitions)
            except PlanError as e:
                self._deferred = e
        pointwise = bool(deps) and not self.gathers and all(
            not is_bucketed(d) and d.npartitions == npartitions for d in deps)
        # cpus=/memory= are what a task needs (placement) and may use (DuckDB); smallpond's cpu_limit=/
        # memory_limit= (and the class defaults) only bound what it uses: placement does not wait for them
        placed = bool(cpus or memory)
        self.limit_only = not placed
        self.cpus = self._check_cpus(label, cpus or cpu_limit or type(self).default_cpu_limit)
        self.memory = self._check_memory(label, memory or memory_limit or type(self).default_memory_limit)
        if isinstance(gpu_limit, bool) or not isinstance(gpu_limit, (int, float)) or gpu_limit < 0:
            raise PlanError(f"node {label!r}: gpu_limit must be a number >= 0, got {gpu_limit!r}")
        self.gpu_limit = gpu_limit
        # smallpond's output_path: the partitions also appear under <publish_path>/<node name>/
        self.publish_path = os.path.abspath(os.fspath(output_path)) if output_path else None
        self.input_names = names
        if resources is None and placed:
            resources = {"cpus": self.cpus or 0, "memory": self.memory or 0}
        super().__init__(ctx, deps, npartitions, name, pointwise, version, resources)
        if self.input_names is None:
            self.input_names = tuple(d.name for d in deps)

    def check_plan(self) -> None:
        """Hook: what is checked when the plan is made (LogicalPlan(...)), e.g. a query."""

    def check_partitions(self) -> None:
        """Partition counts that do not line up, reported when the plan is submitted (a run, explain(),
        Planner.create_exec_plan), where smallpond's planner reports them."""
        if self._deferred is not None:
            raise self._deferred

    @property
    def output_name(self) -> str:
        """smallpond's name for a node's output folder: the node's name."""
        return self.name

    @property
    def input_deps(self) -> Tuple[Node, ...]:
        return self.inputs

    # --- build time ---------------------------------------------------------------------

    def _default_partitions(self, label: str, deps: Sequence[Node]) -> int:
        if self.gathers or not deps:
            return 1
        counts = sorted({num_outputs(d) for d in deps} - {1})
        if len(counts) > 1:
            listing = ", ".join(f"{d.name}: {num_outputs(d)}" for d in deps)
            raise PlanError(f"node {label!r}: inputs have different partition counts ({listing}); "
                            "repartition them to the same count (inputs with 1 partition are sent to every task)")
        return counts[0] if counts else 1

    @staticmethod
    def _check_alignment(label: str, deps: Sequence[Node], n: int) -> None:
        for d in deps:
            k = num_outputs(d)
            if k not in (1, n):
                raise PlanError(f"node {label!r} has {n} partitions but input {d.name!r} has {k}; "
                                f"repartition the input to {n} or give this node npartitions={k}")

    @staticmethod
    def _check_cpus(label: str, cpus: Optional[int]) -> Optional[int]:
        if cpus is None:
            return None
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise PlanError(f"node {label!r}: cpus must be a whole number >= 1, got {cpus!r}")
        return cpus

    @staticmethod
    def _check_memory(label: str, memory: Union[int, str, None]) -> Optional[int]:
        if memory is None:
            return None
        from mpipipe.errors import RequirementError
        from mpipipe.requirements import parse_size

        try:
            return parse_size(memory)
        except RequirementError as e:
            raise PlanError(f"node {label!r}: memory: {e}") from None

    def config_fingerprint(self) -> str:
        return f"{super().config_fingerprint()}|{self.input_names}|{self.step_fingerprint()}"

    def step_fingerprint(self) -> str:
        """Hook: what else decides the output (a query, a function's code, options)."""
        return ""

    def output_schema(self) -> Any:
        """Hook: the Arrow schema this node writes, if known before running."""
        return None

    def input_schemas(self) -> List[Any]:
        return [output_schema_of(d) for d in self.inputs]

    # --- run time (in a worker process) ----------------------------------------------------

    def input_folders(self, task: Any, i: int) -> List[str]:
        """The partition folders of input i that partition `task.partition` reads."""
        folders = self._input_folders(task, i)
        if getattr(self.inputs[i], "shuffle_transport", "files") == "mpi":  # in this rank's store
            return [task.shuffle_path(f) for f in folders]
        return folders

    def _input_folders(self, task: Any, i: int) -> List[str]:
        dep = self.inputs[i]
        paths = list(task.inputs[i])
        if self.pointwise or self.gathers:
            return paths
        p = task.partition
        if i in self._dim_map:  # an input partitioned by some of this node's dimensions: the matching partition
            index = _indexes(p, [n for _, n in partition_dims(self)])
            q = 0
            for pos, (_, n) in zip(self._dim_map[i], partition_dims(dep)):
                q = q * n + index[pos]
            return partition_folders(dep, paths, q)
        if is_bucketed(dep):
            return paths if num_outputs(dep) == 1 else bucket_folders(dep, paths, p)
        if dep.npartitions == 1:
            return paths
        return [paths[p]]

    def input_data(self, task: Any) -> List[Any]:
        from mpipipe.steps.partio import PartitionData

        return [PartitionData.from_folders(self.input_folders(task, i)) for i in range(len(self.inputs))]

    def task_resources(self, task: Any) -> Tuple[int, Optional[int]]:
        """(threads, memory bytes) for this task: the node's own, else a share of the host."""
        res = getattr(task, "resources", None) or {}
        cpus = self.cpus or res.get("cpus")
        # what placement gave the task first: after a memory failure it is more than the node asked for
        memory = res.get("memory") or self.memory
        if not res.get("memory") and self.memory and getattr(self, "limit_only", False):
            # smallpond's memory_limit bounds, it does not place: a retry (after DuckDB ran out, say) gets twice
            # the limit of the attempt before it
            memory = self.memory * memory_boost(getattr(task, "attempt", 0))
        if cpus is None or memory is None:
            share = getattr(task, "host_share", None)
            if callable(share) and not res.get("sharers"):  # this rank's share of its host: the executors there
                cores, host_memory = _share_of_host(task, self.npartitions) or share()
                cpus = cpus or max(1, int(cores))
                if memory is None and host_memory:
                    memory = int(host_memory * 0.7)
                return int(cpus), memory
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:
                cores = os.cpu_count() or 1
            sharers = max(1, int(res.get("sharers") or max(1, getattr(task, "world_size", 2) - 1)))
            sharers = min(sharers, max(1, int(self.npartitions)))  # a node of fewer tasks leaves cores idle
            cpus = cpus or max(1, cores // sharers)
            if memory is None:
                try:
                    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                    memory = int(total * 0.7) // sharers
                except (ValueError, OSError):
                    memory = None
        return int(cpus), memory

    def run_task(self, task: Any) -> Any:
        inputs = self.input_data(task)
        value = self.process_partition(task, inputs)
        if isinstance(value, dict):
            value.setdefault("bytes_in", _bytes_in(inputs))
        publish_path = getattr(self, "publish_path", None)
        if publish_path:
            publish(task, publish_path, self.name)
        return value

    def runtime_context(self, task: Any) -> Any:
        """What a process function is given: the TaskContext with smallpond's RuntimeContext names on it."""
        from mpipipe.execution.task import RuntimeContext

        return RuntimeContext.for_task(task, self)

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        """Hook: read `inputs` (PartitionData per input), write under task.output_dir, return a small summary."""
        raise NotImplementedError(f"{type(self).__name__} does not define process_partition()")


def _share_of_host(task: Any, tasks: int) -> Optional[Tuple[int, int]]:
    """(cores, memory bytes) of the task's host divided among the executors that share them, or among the
    node's tasks when those are fewer (a 1-task step on a host of 2 executors gets both cores); None when
    the task cannot say what its host is (then host_share() decides)."""
    job_dir, rank, size = (getattr(task, k, None) for k in ("job_dir", "rank", "world_size"))
    if not isinstance(job_dir, str) or not isinstance(rank, int) or not isinstance(size, int):
        return None
    from mpipipe.execution.task import host_view

    view = host_view(job_dir, rank, size)
    offer = view["offer"]
    busy = max(1, int(tasks))
    return (max(1, int(offer.get("cores") or 1) // max(1, min(int(view["core_sharers"]), busy))),
            int(offer.get("memory") or 0) // max(1, min(int(view["memory_sharers"]), busy)))


# keywords smallpond's nodes take that change nothing in mpipipe (each is documented in the README's table)
NO_EFFECT = frozenset({
    "parquet_row_group_size", "parquet_dictionary_encoding", "parquet_compression", "parquet_compression_level",
    "use_duckdb_reader", "background_io_thread", "per_thread_output", "materialize_output", "materialize_in_memory",
    "relax_memory_if_oom", "batched_processing", "extension_paths", "udf_module_paths", "enable_temp_directory",
    "cpu_overcommit_ratio", "memory_overcommit_ratio", "use_parquet_writer", "is_final_node", "engine_type",
    "hive_partitioning", "shuffle_only", "drop_partition_column"})
ENGINE_TYPES = (None, "duckdb", "arrow")


def memory_boost(attempt: int) -> int:
    """How many times its memory limit an attempt gets: 1, 2, 4, ... (at most 16)."""
    return 1 << min(max(0, int(attempt)), 4)


def check_no_effect(label: str, options: Dict[str, Any]) -> None:
    """Keywords outside the node's signature are accepted only if they are smallpond's that change nothing."""
    unknown = sorted(set(options) - NO_EFFECT)
    if unknown:
        raise PlanError(f"node {label!r}: unknown keyword argument(s) {', '.join(unknown)}; check the spelling "
                        "against the node's signature")
    if options.get("engine_type") not in ENGINE_TYPES:
        raise PlanError(f"node {label!r}: engine_type must be 'duckdb' or 'arrow', got {options['engine_type']!r}")


def publish(task: Any, output_path: str, name: str) -> None:
    """A node's `output_path`: its partition's files also appear in <output_path>/<node>/<partition>/
    (hard links, symlinks across file systems), replacing what an earlier attempt put there."""
    import shutil

    from mpipipe.steps.sink import PUBLISHED

    os.makedirs(output_path, exist_ok=True)
    marker = os.path.join(output_path, PUBLISHED + name)
    if not os.path.exists(marker):  # says the folder <name>/ is this node's (a sink there keeps it)
        tmp = f"{marker}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(name + "\n")
        os.replace(tmp, marker)
    dest = os.path.join(output_path, name, f"{task.partition:06d}")
    shutil.rmtree(dest, ignore_errors=True)
    src = getattr(task, "_staging", None) or task.output_dir
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith("."):
                continue
            s = os.path.join(root, f)
            d = os.path.join(dest, os.path.relpath(s, src))
            os.makedirs(os.path.dirname(d), exist_ok=True)
            try:
                os.link(s, d)
            except OSError:
                os.symlink(os.path.abspath(s), d)


def _bytes_in(inputs: List[Any]) -> int:
    """Size of the local files a task read (whole files, each counted once): a figure for the summary."""
    seen, total = set(), 0
    for data in inputs:
        for frag in getattr(data, "fragments", ()):
            if frag.path not in seen and "://" not in frag.path:
                seen.add(frag.path)
                try:
                    total += os.path.getsize(frag.path)
                except OSError:
                    pass
    return total


def rows_written(folder: str) -> Dict[str, int]:
    """A summary of what a task wrote (rows, bytes), journaled with its outcome."""
    import pyarrow.parquet as pq

    from mpipipe.steps import ipcfile

    rows = size = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            if f.endswith(".parquet"):
                size += os.path.getsize(p)
                rows += pq.ParquetFile(p).metadata.num_rows
            elif f.endswith(ipcfile.SUFFIX):
                size += os.path.getsize(p)
                rows += ipcfile.open_table(p).num_rows
    return {"rows": rows, "bytes": size}


class DataSourceNode(DataNode):
    """Input data as one partition: files are referenced (no copy), in-memory tables written to Parquet.

    Split it with DataSetPartitionNode (by files, row groups or rows) or
    HashPartitionNode to work on it in parallel.
    """

    kind = "source"

    def __init__(self, ctx: Context, dataset: Any, name: Optional[str] = None, version: str = "",
                 **options: Any) -> None:
        label = name or options.get("output_name") or "source"
        self.dataset: DataSet = dataset_for(dataset)
        try:
            self._fragments = self.dataset.fragments()
            self._schema = self._checked_schema()
            self._fingerprint = self.dataset.fingerprint()
            self._stamps = _stamps(self._fragments)
        except PlanError as e:
            raise PlanError(f"node {label!r}: {e}") from None
        except Exception as e:  # noqa: BLE001  a corrupt file: say which node and file
            raise PlanError(f"node {label!r}: {_clean(e)}") from None
        super().__init__(ctx, (), 1, name, version, **options)

    def _checked_schema(self) -> Any:
        """The dataset's schema, after every file was checked as far as is cheap: each Parquet footer read
        and compared with the first (so a corrupt or mismatched file anywhere in the dataset stops the plan,
        not just the first), each CSV header row compared with the first, and the first CSV file's
        timestamps looked at for a day/month order DuckDB would have to guess."""
        from mpipipe.steps.checks import check_csv_formats, check_csv_headers, check_parquet_files
        from mpipipe.steps.partio import nullable_schema

        table = self.dataset.in_memory_table()
        if table is not None:
            return nullable_schema(self._columns(table).schema)
        frags = self._fragments
        if frags and all(f.format == "parquet" for f in frags):
            paths = list(dict.fromkeys(f.path for f in frags))
            schema, footers = check_parquet_files(paths)
            # rows per row group of each file: how a partitioning node cuts its map side (not shipped)
            self._row_groups = {p: tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
                                for p, md in zip(paths, footers)}
            return self._columns(schema)
        check_csv_headers(frags)
        check_csv_formats(frags)
        schema = self.dataset.schema()
        return self._columns(nullable_schema(schema)) if schema is not None else None

    def _columns(self, table_or_schema: Any) -> Any:
        """Only the dataset's `columns`, when it names some (the source then writes them as a new file)."""
        cols = getattr(self.dataset, "columns", None)
        if not cols or "*" in cols:
            return table_or_schema
        import pyarrow as pa

        if isinstance(table_or_schema, pa.Schema):
            missing = [c for c in cols if c not in table_or_schema.names]
            if missing:
                raise PlanError(f"columns {missing} are not in the dataset (its columns: {table_or_schema.names})")
            return pa.schema([table_or_schema.field(c) for c in cols], table_or_schema.metadata)
        return table_or_schema.select(cols)

    def default_name(self) -> str:
        return "source"

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state.pop("_row_groups", None)  # what the plan needed; tasks do not
        return state

    def file_layout(self) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, int]]:
        """(rows per row group of each Parquet file, bytes of each local file), as the plan found them."""
        return getattr(self, "_row_groups", None) or {}, {p: size for p, (size, _) in self._stamps.items()}

    @property
    def format(self) -> str:
        return self.dataset.format if self.dataset.in_memory_table() is None else "parquet"

    def step_fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> str:
        return f"source {self.dataset!r}"

    def output_schema(self) -> Any:
        return self._schema

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_manifest, write_table

        table = self.dataset.in_memory_table()
        if table is not None:
            table = self._columns(table)
            write_table(table, task.output_dir)
            return {"rows": table.num_rows}
        _check_stamps(self._stamps)
        cols = getattr(self.dataset, "columns", None)
        if cols and "*" not in cols:
            from mpipipe.steps.partio import PartitionData

            table = PartitionData(self._fragments).to_arrow(list(cols))
            write_table(table, task.output_dir)
            return {"rows": table.num_rows}
        write_manifest(task.output_dir, self._fragments, self._schema)
        return {"files": len(self._fragments)}


def _clean(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _stamps(frags: Sequence[Any]) -> Dict[str, Tuple[int, int]]:
    """(size, mtime) of each local input file when the plan was made."""
    out: Dict[str, Tuple[int, int]] = {}
    for f in frags:
        if "://" not in f.path and f.path not in out:
            st = os.stat(f.path)
            out[f.path] = (st.st_size, st.st_mtime_ns)
    return out


def _check_stamps(stamps: Dict[str, Tuple[int, int]]) -> None:
    """The files the plan checked are the files the tasks will read: none removed or rewritten since."""
    from mpipipe.steps.partio import DataError

    for path, (size, mtime) in stamps.items():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"input file {path} was removed after the plan was made; run the job again") from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise DataError(f"input file {path} changed after the plan was made (size {size} -> {st.st_size} bytes); "
                            "run the job again so the plan checks the new file")


PARTITION_MODES = ("files", "row_groups", "rows")


def bucket_folders(dep: Node, paths: Sequence[str], j: int) -> List[str]:
    """The folders holding partition j of a partitioning node `dep`, given all its task outputs."""
    from mpipipe.data.buckets import bucket_folders_of

    return bucket_folders_of(paths, j, int(getattr(dep, "nbuckets")), bool(getattr(dep, "nested", False)),
                             int(getattr(dep, "map_split", 1)))


def partition_folders(dep: Node, paths: Sequence[str], j: int) -> List[str]:
    """The folders holding partition j of `dep`, given all of its task outputs."""
    if is_bucketed(dep):
        return bucket_folders(dep, paths, j)
    return [paths[j]]


def _indexes(j: int, sizes: Sequence[int]) -> List[int]:
    """Partition j's index in each dimension (the last varies fastest)."""
    out = []
    for n in reversed(sizes):
        out.append(j % n)
        j //= n
    return list(reversed(out))


def align_by_dimensions(deps: Sequence[Node]) -> Optional[Tuple[int, Dict[int, List[int]]]]:
    """Inputs with different partition counts line up when each one's dimensions are some of the dimensions
    of the most partitioned one (smallpond's nested partitions: a node reading host x url partitions and
    host partitions gets, in partition (h, u), host partition h). Returns (partitions, {input: positions of its
    dimensions among the node's}), or None when they do not line up."""
    split = [(i, partition_dims(d)) for i, d in enumerate(deps) if num_outputs(d) > 1]
    if not split:
        return None
    target = max((dims for _, dims in split), key=len)
    names = [n for n, _ in target]
    if len(set(names)) != len(names):
        return None
    out: Dict[int, List[int]] = {}
    total = 1
    for _, n in target:
        total *= n
    for i, dims in split:
        if dims == target:
            continue
        try:
            positions = [names.index(n) for n, _ in dims]
        except ValueError:
            return None
        if positions != sorted(positions) or any(target[k][1] != size for k, (_, size) in zip(positions, dims)):
            return None
        out[i] = positions
    return total, out


def partition_dims(node: Node) -> List[Tuple[str, int]]:
    """The named dimensions of a node's partitions, outermost first (their sizes multiply to its partition
    count): a partitioning node adds its own (`dimension`, else its partition column, else
    `__data_partition__`), nested on its input's when `nested`; other nodes keep their inputs'."""
    own = getattr(node, "partition_dims_own", None)
    if own is not None:
        return own()
    n = num_outputs(node)
    if n == 1:
        return []
    for d in node.inputs:
        if num_outputs(d) == n:
            return partition_dims(d)
    return [(DATA_PARTITION_DIM, n)]


DATA_PARTITION_DIM = "__data_partition__"


class PartitionNode(DataNode):
    """Base of the nodes that set how data is partitioned (smallpond's name); `dimension` names the
    partitioning, and `nested=True` splits each input partition again instead of the whole input."""

    # smallpond's knob for its producer tasks; mpipipe runs one task per input partition (or per range of a
    # one-partition source, see mapsplit)
    max_num_producer_tasks = 100
    max_card_of_producers_x_consumers = 4_096_000

    def _set_dimension(self, dimension: Optional[str], nested: bool) -> None:
        self.dimension = dimension
        self.nested = bool(nested)

    def partition_dims_own(self) -> List[Tuple[str, int]]:
        name = self.dimension or getattr(self, "partition_column", None) or \
            getattr(self, "data_partition_column", None) or DATA_PARTITION_DIM
        size = getattr(self, "inner", None) or getattr(self, "nbuckets", None) or self.npartitions
        outer = partition_dims(self.inputs[0]) if self.nested and self.inputs else []
        return outer + [(name, int(size))]


class DataSetPartitionNode(PartitionNode):
    """Split the input evenly into `npartitions` without copying data: by files, row groups or rows.

    Each partition is a manifest of file fragments; partitions beyond the number of files (or groups, or
    rows) are empty but valid. `random_shuffle` shuffles the files first (the same order in every run of
    the plan); `nested=True` splits every input partition into `npartitions` (k inputs give k *
    npartitions partitions, partition q being part q % npartitions of input partition q // npartitions).
    """

    kind = "split"
    gathers = True

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, dimension: Optional[str] = None,
                 nested: bool = False, *, partition_by: str = "files", partition_by_rows: bool = False,
                 random_shuffle: bool = False, name: Optional[str] = None, version: str = "",
                 **options: Any) -> None:
        if partition_by_rows:
            partition_by = "rows"
        label = name or options.get("output_name") or "split"
        if partition_by not in PARTITION_MODES:
            raise PlanError(f"node {label!r}: partition_by must be one of {', '.join(PARTITION_MODES)}, "
                            f"got {partition_by!r}")
        deps, _ = _as_inputs(inputs)
        if not deps:
            raise PlanError(f"node {label!r} needs an input to split")
        if npartitions is None or isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {label!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        if partition_by != "files":
            for d in deps:
                if isinstance(d, DataSourceNode) and d.format != "parquet":
                    raise PlanError(f"node {label!r}: splitting by {partition_by} needs Parquet input, but "
                                    f"{d.name!r} is {d.format}; split it by files instead")
        if nested and len(deps) != 1:
            raise PlanError(f"node {label!r}: nested=True splits the partitions of exactly one input, got {len(deps)}")
        self.partition_by = partition_by
        self.random_shuffle = random_shuffle
        self.inner = npartitions
        self._set_dimension(dimension, nested)
        total = npartitions * num_outputs(deps[0]) if nested else npartitions
        super().__init__(ctx, inputs, total, name, version, **options)

    def default_name(self) -> str:
        return "split"

    def step_fingerprint(self) -> str:
        return f"{self.partition_by}|{self.random_shuffle}|{self.nested}|{self.inner}"

    def describe(self) -> str:
        return f"split by {self.partition_by}" + (" (nested)" if self.nested else "")

    def output_schema(self) -> Any:
        s = self.input_schemas()
        return s[0] if s else None

    def input_folders(self, task: Any, i: int) -> List[str]:
        if not self.nested:
            return super().input_folders(task, i)
        dep = self.inputs[i]
        outer = task.partition // self.inner
        return partition_folders(dep, task.inputs[i], outer if num_outputs(dep) > 1 else 0)

    def input_data(self, task: Any) -> List[Any]:
        """A split of sources whose files the plan already lists takes them from there: each of many tasks
        would otherwise read the whole source manifest to keep a slice of it. Split by files, a task takes
        just its slice of the listing, which each process puts together once (a million files in ten
        thousand partitions would otherwise cost every task a pass over the million)."""
        if not self.nested and self.inputs and all(_listed(d) for d in self.inputs):
            from mpipipe.steps.partio import PartitionData

            if self.partition_by == "files":
                from mpipipe.steps.partition import even_split

                share = PartitionData(even_split(self._listing(), self.inner, task.partition, "files"),
                                      self.output_schema())
                share.file_share = True  # type: ignore[attr-defined]  # process_partition splits no further
                return [share]
            return [PartitionData(list(d._fragments), d.output_schema()) for d in self.inputs
                    if isinstance(d, DataSourceNode)]  # all of them (_listed)
        return super().input_data(task)

    def _listing(self) -> List[Any]:
        """The listed sources' files in split order (shuffled as process_partition shuffles), made once."""
        frags = self.__dict__.get("_listing_cache")
        if frags is None:
            frags = [f for d in self.inputs if isinstance(d, DataSourceNode) for f in d._fragments]
            self._shuffle(frags)
            self._listing_cache = frags
        return frags

    def _shuffle(self, frags: List[Any]) -> None:
        if self.random_shuffle:
            import random

            # the same order in every task and every run: the split is a function of the plan
            random.Random(f"{self.name}|{len(frags)}").shuffle(frags)

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state.pop("_listing_cache", None)  # rebuilt where it is needed
        return state

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partition import even_split
        from mpipipe.steps.partio import write_manifest

        if len(inputs) == 1 and getattr(inputs[0], "file_share", False):  # input_data took this partition's slice
            mine = list(inputs[0].fragments)
        else:
            frags = [f for data in inputs for f in data.fragments]
            self._shuffle(frags)
            part = task.partition % self.inner if self.nested else task.partition
            mine = even_split(frags, self.inner, part, self.partition_by)
        # the schema (for an empty partition) known before running saves reading every footer in every task
        schema = self.output_schema()
        if schema is None:
            first = inputs[0] if inputs and inputs[0].fragments else None
            if first is None and inputs and getattr(inputs[0], "file_share", False) and self._listing():
                from mpipipe.steps.partio import PartitionData

                first = PartitionData(self._listing()[:1])  # an empty slice: the listing's first file has it
            if first is None:
                raise PlanError(f"node {self.name!r}: the input has no files to take a schema from")
            schema = first.schema()
        write_manifest(task.output_dir, mine, schema)
        return {"fragments": len(mine)}


EvenlyDistributedPartitionNode = DataSetPartitionNode


def _listed(node: Node) -> bool:
    """A source whose output is exactly the files the plan listed (no in-memory table, no column choice)."""
    if not isinstance(node, DataSourceNode) or node.dataset.in_memory_table() is not None:
        return False
    cols = getattr(node.dataset, "columns", None)
    return not cols or "*" in cols


class RepeatPartitionNode(PartitionNode):
    """`npartitions` partitions that each hold all of the input (zero-copy)."""

    kind = "repeat"
    gathers = True

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, dimension: Optional[str] = None,
                 name: Optional[str] = None, version: str = "", **options: Any) -> None:
        self._set_dimension(dimension, False)
        super().__init__(ctx, inputs, npartitions, name, version, **options)

    def default_name(self) -> str:
        return "repeat"

    def output_schema(self) -> Any:
        s = self.input_schemas()
        return s[0] if s else None

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_manifest

        frags = [f for data in inputs for f in data.fragments]
        write_manifest(task.output_dir, frags, self.output_schema() or (inputs[0].schema() if frags else None))
        return {"fragments": len(frags)}


class UserPartitionedDataSourceNode(DataNode):
    """A source whose partitions are given: partition i reads `partitioned_datasets[i]` (zero-copy)."""

    kind = "partitioned_source"

    def __init__(self, ctx: Context, partitioned_datasets: Sequence[Any], dimension: Optional[str] = None,
                 name: Optional[str] = None, version: str = "", **options: Any) -> None:
        label = name or options.get("output_name") or self.kind
        if not partitioned_datasets:
            raise PlanError(f"node {label!r} needs at least one dataset")
        self.datasets = [dataset_for(d) for d in partitioned_datasets]
        try:
            self._fragments = [d.fragments() for d in self.datasets]
            self._fingerprint = "|".join(d.fingerprint() for d in self.datasets)
        except PlanError as e:
            raise PlanError(f"node {label!r}: {e}") from None
        self.dimension = dimension
        schema = next((d.schema() for d in self.datasets if d.in_memory_table() is not None or d.fragments()), None)
        from mpipipe.steps.partio import nullable_schema

        self._schema = nullable_schema(schema) if schema is not None else None
        super().__init__(ctx, (), len(self.datasets), name, version, **options)

    def default_name(self) -> str:
        return "partitioned_source"

    def step_fingerprint(self) -> str:
        return self._fingerprint

    def output_schema(self) -> Any:
        return self._schema

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_manifest, write_table

        ds = self.datasets[task.partition]
        table = ds.in_memory_table()
        if table is not None:
            write_table(table, task.output_dir)
            return {"rows": table.num_rows}
        write_manifest(task.output_dir, self._fragments[task.partition], self._schema)
        return {"files": len(self._fragments[task.partition])}
