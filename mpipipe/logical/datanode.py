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
from mpipipe.logical.node import Context, Node

Inputs = Union[Node, Iterable[Node], Mapping[str, Node]]


def _as_inputs(inputs: Inputs) -> Tuple[Tuple[Node, ...], Optional[Tuple[str, ...]]]:
    if isinstance(inputs, Node):
        return (inputs,), None
    if isinstance(inputs, Mapping):
        return tuple(inputs.values()), tuple(inputs.keys())
    return tuple(inputs), None


def num_outputs(node: Node) -> int:
    """How many partitions a consumer sees: buckets for a partitioning node, else its task count."""
    return int(getattr(node, "nbuckets", None) or node.npartitions)


def is_bucketed(node: Node) -> bool:
    return getattr(node, "nbuckets", None) is not None


def output_schema_of(node: Node) -> Any:
    """The Arrow schema a node writes when it can be known before running (else None)."""
    fn = getattr(node, "output_schema", None)
    return fn() if fn is not None else None


class DataNode(Node):
    """Base of the data steps: input slicing, per-task resources, and a body that writes Parquet.

    `cpus` and `memory` (bytes or '4GB') bound what one task uses (DuckDB threads
    and memory limit); by default a task gets its share of the host.
    """

    kind = "data"
    gathers = False  # every task reads all partitions of every input

    def __init__(self, ctx: Context, inputs: Inputs = (), npartitions: Optional[int] = None,
                 name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None) -> None:
        deps, names = _as_inputs(inputs)
        label = name or self.default_name()
        for d in deps:
            if not isinstance(d, Node):
                raise PlanError(f"node {label!r}: inputs must be nodes, got {type(d).__name__}")
        if npartitions is None:
            npartitions = self._default_partitions(label, deps)
        if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {label!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        if not self.gathers:
            self._check_alignment(label, deps, npartitions)
        pointwise = bool(deps) and not self.gathers and all(
            not is_bucketed(d) and d.npartitions == npartitions for d in deps)
        self.cpus = self._check_cpus(label, cpus)
        self.memory = self._check_memory(label, memory)
        self.input_names = names
        if resources is None and (self.cpus or self.memory):
            resources = {"cpus": self.cpus or 0, "memory": self.memory or 0}
        super().__init__(ctx, deps, npartitions, name, pointwise, version, resources)
        if self.input_names is None:
            self.input_names = tuple(d.name for d in deps)

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
        from mpipipe.steps.partio import bucket_dir

        dep = self.inputs[i]
        paths = list(task.inputs[i])
        if self.pointwise or self.gathers:
            return paths
        p = task.partition
        if is_bucketed(dep):
            return paths if num_outputs(dep) == 1 else [bucket_dir(d, p) for d in paths]
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
        if cpus is None or memory is None:
            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:
                cores = os.cpu_count() or 1
            sharers = max(1, int(res.get("sharers") or max(1, getattr(task, "world_size", 2) - 1)))
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
        return value

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        """Hook: read `inputs` (PartitionData per input), write under task.output_dir, return a small summary."""
        raise NotImplementedError(f"{type(self).__name__} does not define process_partition()")


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

    rows = size = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if f.endswith(".parquet"):
                p = os.path.join(root, f)
                size += os.path.getsize(p)
                rows += pq.ParquetFile(p).metadata.num_rows
    return {"rows": rows, "bytes": size}


class DataSourceNode(DataNode):
    """Input data as one partition: files are referenced (no copy), in-memory tables written to Parquet.

    Split it with DataSetPartitionNode (by files, row groups or rows) or
    HashPartitionNode to work on it in parallel.
    """

    kind = "source"

    def __init__(self, ctx: Context, dataset: Any, name: Optional[str] = None, version: str = "") -> None:
        label = name or "source"
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
        super().__init__(ctx, (), 1, name, version)

    def _checked_schema(self) -> Any:
        """The dataset's schema, after every file was checked as far as is cheap: each Parquet footer read
        and compared with the first (so a corrupt or mismatched file anywhere in the dataset stops the plan,
        not just the first), each CSV header row compared with the first, and the first CSV file's
        timestamps looked at for a day/month order DuckDB would have to guess."""
        from mpipipe.steps.checks import check_csv_formats, check_csv_headers, check_parquet_files
        from mpipipe.steps.partio import nullable_schema

        table = self.dataset.in_memory_table()
        if table is not None:
            return nullable_schema(table.schema)
        frags = self._fragments
        if frags and all(f.format == "parquet" for f in frags):
            return check_parquet_files(list(dict.fromkeys(f.path for f in frags)))[0]
        check_csv_headers(frags)
        check_csv_formats(frags)
        schema = self.dataset.schema()
        return nullable_schema(schema) if schema is not None else None

    def default_name(self) -> str:
        return "source"

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
            write_table(table, task.output_dir)
            return {"rows": table.num_rows}
        _check_stamps(self._stamps)
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


class DataSetPartitionNode(DataNode):
    """Split the input evenly into `npartitions` without copying data: by files, row groups or rows.

    Each partition is a manifest of file fragments; partitions beyond the
    number of files (or groups, or rows) are empty but valid.
    """

    kind = "split"
    gathers = True

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, partition_by: str = "files",
                 name: Optional[str] = None, version: str = "", partition_by_rows: bool = False) -> None:
        if partition_by_rows:
            partition_by = "rows"
        label = name or "split"
        if partition_by not in PARTITION_MODES:
            raise PlanError(f"node {label!r}: partition_by must be one of {', '.join(PARTITION_MODES)}, got {partition_by!r}")
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
        self.partition_by = partition_by
        super().__init__(ctx, inputs, npartitions, name, version)

    def default_name(self) -> str:
        return "split"

    def step_fingerprint(self) -> str:
        return self.partition_by

    def describe(self) -> str:
        return f"split by {self.partition_by}"

    def output_schema(self) -> Any:
        s = self.input_schemas()
        return s[0] if s else None

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partition import even_split
        from mpipipe.steps.partio import write_manifest

        frags = [f for data in inputs for f in data.fragments]
        mine = even_split(frags, self.npartitions, task.partition, self.partition_by)
        # the schema (for an empty partition) known before running saves reading every footer in every task
        schema = self.output_schema()
        if schema is None:
            if not (inputs and inputs[0].fragments):
                raise PlanError(f"node {self.name!r}: the input has no files to take a schema from")
            schema = inputs[0].schema()
        write_manifest(task.output_dir, mine, schema)
        return {"fragments": len(mine)}


EvenlyDistributedPartitionNode = DataSetPartitionNode


class _BucketingNode(DataNode):
    """A partitioning step: each task splits its slice of the input into `nbuckets` bucket folders."""

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, name: Optional[str], version: str,
                 cpus: Optional[int], memory: Union[int, str, None], resources: Any = None) -> None:
        label = name or self.default_name()
        deps, _ = _as_inputs(inputs)
        if len(deps) != 1:
            raise PlanError(f"node {label!r} partitions exactly one input, got {len(deps)}")
        if npartitions is None or isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {label!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        self.nbuckets = npartitions
        super().__init__(ctx, deps, num_outputs(deps[0]), name, version, cpus, memory, resources)

    def describe(self) -> str:
        return f"{self.kind} into {self.nbuckets}"

    def step_fingerprint(self) -> str:
        return f"{self.nbuckets}"


class HashPartitionNode(_BucketingNode):
    """Partition rows by a hash of `hash_columns` into `npartitions` (DuckDB does the work).

    `partition_column` (optional) keeps each row's partition number in a
    column of that name. `random_shuffle=True` spreads rows at random instead.
    """

    kind = "hash_partition"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int,
                 hash_columns: Union[str, Sequence[str], None] = None, partition_column: Optional[str] = None,
                 random_shuffle: bool = False, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None,
                 data_partition_column: Optional[str] = None, resources: Any = None) -> None:
        label = name or self.kind
        cols = [hash_columns] if isinstance(hash_columns, str) else list(hash_columns or [])
        if not cols and not random_shuffle:
            raise PlanError(f"node {label!r}: give hash_columns (the columns whose hash picks the partition)")
        self.hash_columns = cols
        self.partition_column = partition_column or data_partition_column
        self.random_shuffle = random_shuffle
        super().__init__(ctx, inputs, npartitions, name, version, cpus, memory, resources)
        schema = self.input_schemas()[0]
        if schema is not None:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise PlanError(f"node {self.name!r}: hash column(s) {missing} not in the input's columns {schema.names}")
            if self.partition_column and self.partition_column in schema.names:
                raise PlanError(f"node {self.name!r}: partition_column {self.partition_column!r} already exists in the input")

    def default_name(self) -> str:
        return "hash_partition"

    def step_fingerprint(self) -> str:
        return f"{self.nbuckets}|{self.hash_columns}|{self.partition_column}|{self.random_shuffle}"

    def describe(self) -> str:
        how = "at random" if self.random_shuffle else f"by hash of {', '.join(self.hash_columns)}"
        return f"partition {how} into {self.nbuckets}"

    def bucket_sql(self) -> str:
        from mpipipe.steps.sql import hash_expression

        if self.random_shuffle:
            return f"(floor(random() * {self.nbuckets}))::BIGINT"
        return hash_expression(self.hash_columns, self.nbuckets)

    def output_schema(self) -> Any:
        schema = self.input_schemas()[0]
        if schema is None or not self.partition_column:
            return schema
        import pyarrow as pa

        return schema.append(pa.field(self.partition_column, pa.int64()))

    # hash(...) % n and floor(random() * n) are always in 0..n-1 and never NULL: no checking pass over the rows
    buckets_in_range = True

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partition import bucket_with_sql

        threads, memory = self.task_resources(task)
        bucket_with_sql(task, inputs[0], self.bucket_sql(), self.nbuckets, self.partition_column, threads, memory,
                        check=not self.buckets_in_range)
        return rows_written(task.output_dir)


class ColumnPartitionNode(HashPartitionNode):
    """Partition by the value of an integer column that already holds the partition number (0..n-1)."""

    kind = "column_partition"
    buckets_in_range = False  # the user's column may hold anything

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, column: str,
                 name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None) -> None:
        super().__init__(ctx, inputs, npartitions, [column], name=name, version=version, cpus=cpus, memory=memory,
                         resources=resources)

    def default_name(self) -> str:
        return "column_partition"

    def describe(self) -> str:
        return f"partition by the value of {self.hash_columns[0]} into {self.nbuckets}"

    def bucket_sql(self) -> str:
        from mpipipe.steps.partio import _quote

        c = _quote(self.hash_columns[0])
        # a value that is not a whole number becomes NULL, which the check refuses: a cast alone would
        # round 1.5 into partition 2
        return f"(CASE WHEN {c} = ({c})::BIGINT THEN ({c})::BIGINT END)"


class UserDefinedPartitionNode(_BucketingNode):
    """Partition rows with `partition_fn(table) -> partition number per row` (0..npartitions-1)."""

    kind = "user_partition"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, partition_fn: Any,
                 name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None) -> None:
        if not callable(partition_fn):
            raise PlanError(f"node {name or self.kind!r}: partition_fn must be callable, got {type(partition_fn).__name__}")
        self.partition_fn = partition_fn
        super().__init__(ctx, inputs, npartitions, name, version, cpus, memory, resources)

    def default_name(self) -> str:
        return "user_partition"

    def step_fingerprint(self) -> str:
        from mpipipe.logical.node import code_fingerprint

        return f"{self.nbuckets}|{code_fingerprint(self.partition_fn)}"

    def output_schema(self) -> Any:
        return self.input_schemas()[0]

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partition import bucket_with_function

        bucket_with_function(task, inputs[0], self.partition_fn, self.nbuckets)
        return rows_written(task.output_dir)
