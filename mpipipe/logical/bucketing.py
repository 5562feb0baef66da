"""The partitioning steps that write buckets: each map task splits its slice of the input into bucket folders,
and partition j of the next node reads bucket j of every map task (mpipipe.data.buckets).

Hash, column and user-function partitioning, and smallpond's partitioned datasets, all on _BucketingNode: one
map task per input partition, or per range of a listed source's files and row groups (mpipipe.logical.mapsplit);
the form of their files (mpipipe.logical.intermediates) and how they reach the next node (files or MPI,
mpipipe.logical.shuffles) are chosen per run.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence, Union

from mpipipe.data.duckdb_tables import register_empty
from mpipipe.errors import PlanError
from mpipipe.logical.datanode import (Inputs, PartitionNode, _as_inputs, _listed, num_outputs, output_schema_of,
                                      partition_dims, rows_written)
from mpipipe.logical.plan import Context, Node

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _BucketingNode(PartitionNode):
    """A partitioning step: each task splits its slice of the input into `nbuckets` bucket folders.

    One task per input partition; over a one-partition source that lists several files (or Parquet row
    groups), one map task per range of them, so the map side runs in parallel (the rule is in
    mpipipe.logical.mapsplit: one task per 8M rows or 128 MiB, at most 64). The buckets hold the same rows
    either way. `map_tasks=1` keeps one task; `map_tasks=k` asks for k (at most one per row group or file).
    """

    # the form of the bucket files its tasks write: Parquet, unless the job's shuffle_format applies to it
    # (mpipipe.logical.intermediates decides, per run, for the nodes whose output only the plan reads)
    intermediate_format = "parquet"
    # how its buckets reach the next node's tasks: "files" in the job directory, or "mpi" (rank to rank, kept in
    # the reading rank's memory); mpipipe.logical.shuffles decides per run from `shuffle` and the job's option
    shuffle_transport = "files"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, name: Optional[str], version: str,
                 cpus: Optional[int], memory: Union[int, str, None], resources: Any = None,
                 dimension: Optional[str] = None, nested: bool = False, *, map_tasks: Optional[int] = None,
                 shuffle: Optional[str] = None, **options: Any) -> None:
        label = name or options.get("output_name") or self.default_name()
        if shuffle is not None and shuffle not in ("files", "mpi"):
            raise PlanError(f"node {label!r}: shuffle must be 'files' or 'mpi', got {shuffle!r}")
        self.shuffle = shuffle  # None: the job's --shuffle
        deps, _ = _as_inputs(inputs)
        if len(deps) != 1:
            raise PlanError(f"node {label!r} partitions exactly one input, got {len(deps)}")
        if npartitions is None or isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {label!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        self.nbuckets = npartitions
        self.named = bool(name or options.get("output_name"))  # the user may ask for its files by that name
        self._set_dimension(dimension, nested)
        self._map_slices = self._cut_map_side(label, deps[0], map_tasks)
        self.map_split = len(self._map_slices) if self._map_slices else 1  # map tasks per input partition
        super().__init__(ctx, deps, num_outputs(deps[0]) * self.map_split, name, version, cpus, memory, resources,
                         **options)

    def map_units(self) -> Optional[str]:
        """Hook: how the map side over a one-partition source may be cut: "rows" (at row groups, about as
        many rows per task), "files" (whole files only), or None (one task)."""
        return "rows"

    def _cut_map_side(self, label: str, dep: Node, map_tasks: Optional[int]) -> Any:
        if map_tasks is not None and (isinstance(map_tasks, bool) or not isinstance(map_tasks, int) or map_tasks < 1):
            raise PlanError(f"node {label!r}: map_tasks must be a whole number >= 1, got {map_tasks!r}")
        units = self.map_units()
        if map_tasks == 1 or units is None or num_outputs(dep) != 1 or not _listed(dep):
            return None
        from mpipipe.logical import mapsplit

        frags = dep._fragments  # type: ignore[attr-defined]
        if map_tasks is not None and not all(mapsplit.typed(f) for f in frags):
            raise PlanError(f"node {label!r}: map_tasks={map_tasks} splits {dep.name!r} by files, but DuckDB takes "
                            "its column types from all of its files together; give the dataset schema= (or leave "
                            "map_tasks out)")
        row_groups, sizes = dep.file_layout()  # type: ignore[attr-defined]
        return mapsplit.plan_slices(frags, row_groups, sizes, self.nbuckets, self.max_card_of_producers_x_consumers,
                                    map_tasks, files_only=units == "files")

    def config_fingerprint(self) -> str:
        base = super().config_fingerprint()
        if not self._map_slices:
            return base
        from mpipipe.logical.mapsplit import digest

        return f"{base}|map {digest(self._map_slices)}"

    def input_data(self, task: Any) -> List[Any]:
        """A map task of a cut source reads its range of the files the plan listed."""
        if not self._map_slices:
            return super().input_data(task)
        from mpipipe.logical.mapsplit import fragments_of
        from mpipipe.steps.partio import PartitionData

        src = self.inputs[0]
        pieces = self._map_slices[task.partition % self.map_split]
        return [PartitionData(fragments_of(src._fragments, pieces), src.output_schema())]  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"{self.kind} into {self.nbuckets}" + (" (nested)" if self.nested else "")

    def step_fingerprint(self) -> str:
        return f"{self.nbuckets}|{self.nested}"


class HashPartitionNode(_BucketingNode):
    """Partition rows by a hash of `hash_columns` into `npartitions` (DuckDB does the work).

    `partition_column` (smallpond: `data_partition_column`, the fifth argument) keeps each row's
    partition number in a column of that name; without it no column is added (smallpond adds
    `__data_partition__`). `random_shuffle=True` spreads rows at random instead. `nested=True` splits each
    input partition into its own `npartitions` buckets.
    """

    kind = "hash_partition"
    reads_any_format = True

    default_data_partition_column = "__data_partition__"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int,
                 hash_columns: Union[str, Sequence[str], None] = None, data_partition_column: Optional[str] = None,
                 *, dimension: Optional[str] = None, nested: bool = False, random_shuffle: bool = False,
                 partition_column: Optional[str] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None, resources: Any = None,
                 **options: Any) -> None:
        label = name or options.get("output_name") or self.kind
        cols = [hash_columns] if isinstance(hash_columns, str) else list(hash_columns or [])
        if not cols and not random_shuffle:
            raise PlanError(f"node {label!r}: give hash_columns (the columns whose hash picks the partition)")
        self.hash_columns = cols
        self.partition_column = partition_column or data_partition_column
        self.random_shuffle = random_shuffle
        super().__init__(ctx, inputs, npartitions, name, version, cpus, memory, resources, dimension, nested,
                         **options)
        schema = self.input_schemas()[0]
        if schema is not None:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise PlanError(f"node {self.name!r}: hash column(s) {missing} not in the input's columns "
                                f"{schema.names}")
            if self.partition_column and self.partition_column in schema.names:
                raise PlanError(f"node {self.name!r}: partition_column {self.partition_column!r} already exists "
                                "in the input")

    def default_name(self) -> str:
        return "hash_partition"

    def step_fingerprint(self) -> str:
        return f"{self.nbuckets}|{self.hash_columns}|{self.partition_column}|{self.random_shuffle}|{self.nested}"

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
                        check=not self.buckets_in_range, fmt=self.intermediate_format)
        return rows_written(task.output_dir)


class ColumnPartitionNode(HashPartitionNode):
    """Partition by the value of an integer column that already holds the partition number (0..n-1)."""

    kind = "column_partition"
    buckets_in_range = False  # the user's column may hold anything

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, column: str,
                 name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None, **options: Any) -> None:
        if not isinstance(column, str) or not column.strip():
            raise PlanError(f"node {name or self.kind!r}: give the column (or SQL expression) holding the partition "
                            f"number, got {column!r}")
        self.expression = column
        label = name or options.get("output_name") or self.kind
        if not _IDENT.fullmatch(column):
            self._check_expression(label, inputs, column)
            super().__init__(ctx, inputs, npartitions, None, name=name, version=version, cpus=cpus, memory=memory,
                             resources=resources, random_shuffle=True, **options)
            self.random_shuffle = False
            self.hash_columns = []
            return
        super().__init__(ctx, inputs, npartitions, [column], name=name, version=version, cpus=cpus, memory=memory,
                         resources=resources, **options)

    @staticmethod
    def _check_expression(label: str, inputs: Inputs, expression: str) -> None:
        """An expression is bound against the input's columns when they are known, so a typo fails here."""
        deps, _ = _as_inputs(inputs)
        schema = output_schema_of(deps[0]) if len(deps) == 1 else None
        if schema is None:
            return
        import duckdb

        con = duckdb.connect()
        try:
            register_empty(con, "t", schema)
            con.execute(f"SELECT ({expression}) FROM t LIMIT 0")
        except duckdb.Error as e:
            raise PlanError(f"node {label!r}: the partition expression {expression!r} does not work on the input: "
                            f"{' '.join(str(e).split())}") from None
        finally:
            con.close()

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|{self.expression}"

    def default_name(self) -> str:
        return "column_partition"

    def describe(self) -> str:
        return f"partition by the value of {self.expression} into {self.nbuckets}"

    def bucket_sql(self) -> str:
        from mpipipe.steps.partio import _quote

        c = _quote(self.expression) if _IDENT.fullmatch(self.expression) else f"({self.expression})"
        # a value that is not a whole number becomes NULL, which the check refuses: a cast alone would
        # round 1.5 into partition 2
        return f"(CASE WHEN {c} = ({c})::BIGINT THEN ({c})::BIGINT END)"


class ShuffleNode(ColumnPartitionNode):
    """smallpond's ShuffleNode: partition by the column (or SQL expression) holding each row's partition."""

    kind = "shuffle"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, data_partition_column: Optional[str] = None,
                 **options: Any) -> None:
        super().__init__(ctx, inputs, npartitions, data_partition_column or DATA_PARTITION_COLUMN, **options)

    def default_name(self) -> str:
        return "shuffle"


DATA_PARTITION_COLUMN = "__data_partition__"


class UserDefinedPartitionNode(_BucketingNode):
    """Partition rows with `partition_fn(table) -> partition number per row` (0..npartitions-1), or, as in
    smallpond, override `partition(runtime_ctx, dataset) -> list of npartitions datasets` to split the
    input by files (the fourth argument is then smallpond's `dimension`)."""

    kind = "user_partition"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, partition_fn: Any = None,
                 nested: bool = False, name: Optional[str] = None, version: str = "", cpus: Optional[int] = None,
                 memory: Union[int, str, None] = None, resources: Any = None, *, dimension: Optional[str] = None,
                 **options: Any) -> None:
        label = name or options.get("output_name") or self.kind
        if isinstance(partition_fn, str):  # smallpond's positional `dimension`
            dimension, partition_fn = partition_fn, None
        overridden = type(self).partition is not UserDefinedPartitionNode.partition
        if partition_fn is None and not overridden:
            raise PlanError(f"node {label!r}: give partition_fn(table) -> partition per row, or subclass and "
                            "override partition(runtime_ctx, dataset) -> list of datasets")
        if partition_fn is not None and not callable(partition_fn):
            raise PlanError(f"node {label!r}: partition_fn must be callable, got {type(partition_fn).__name__}")
        self.partition_fn = partition_fn
        super().__init__(ctx, inputs, npartitions, name, version, cpus, memory, resources, dimension, nested,
                         **options)

    def partition(self, runtime_ctx: Any, dataset: Any) -> List[Any]:
        """Hook: the input's dataset split into `self.npartitions` datasets (by files)."""
        raise NotImplementedError

    @property
    def reads_any_format(self) -> bool:  # type: ignore[override]
        return self.partition_fn is not None  # partition() hands the user the files

    def map_units(self) -> Optional[str]:
        # partition() sees the input's whole dataset: its split need not hold for parts of it
        return "rows" if self.partition_fn is not None else None

    @property
    def npartitions_out(self) -> int:
        return self.nbuckets

    def default_name(self) -> str:
        return "user_partition"

    def step_fingerprint(self) -> str:
        from mpipipe.logical.plan import code_fingerprint

        body = self.partition_fn if self.partition_fn is not None else type(self)
        return f"{self.nbuckets}|{self.nested}|{code_fingerprint(body)}"

    def output_schema(self) -> Any:
        return self.input_schemas()[0]

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        if self.partition_fn is not None:
            from mpipipe.steps.partition import bucket_with_function

            bucket_with_function(task, inputs[0], self.partition_fn, self.nbuckets, self.intermediate_format)
            return rows_written(task.output_dir)
        return self._partition_files(task, inputs[0])

    def _partition_files(self, task: Any, data: Any) -> Any:
        from mpipipe.logical.dataset import ParquetDataSet
        from mpipipe.steps.partio import bucket_dir, write_manifest

        # smallpond's partition() receives the dataset and `self.npartitions` is the number of partitions it
        # makes: the node's own task count is the input's, so the hook sees a copy with the bucket count
        view = _view_with(self, npartitions=self.nbuckets)
        parts = view.partition(self.runtime_context(task), ParquetDataSet._from_fragments(data.fragments))
        if len(parts) != self.nbuckets:
            raise PlanError(f"node {self.name!r}: partition() returned {len(parts)} datasets; return "
                            f"{self.nbuckets}, one per partition")
        schema = self.output_schema() or (data.schema() if data.fragments else None)
        for b, part in enumerate(parts):
            frags = part.fragments() if part.paths or getattr(part, "_resolved_paths", None) else []
            write_manifest(bucket_dir(task.output_dir, b), frags, schema)
        return {"fragments": len(data.fragments)}


def _view_with(node: Any, **attrs: Any) -> Any:
    import copy as _copy

    view = _copy.copy(node)
    view.__dict__.update(attrs)
    return view


class LoadPartitionedDataSetNode(_BucketingNode):
    """Files that already hold one partition each (written by a partitioning node) grouped by that number:
    read from the file's metadata, its `column=N` folder (`hive_partitioning`), or its single value of
    `data_partition_column`. Zero-copy."""

    kind = "load_partitioned"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int, dimension: Optional[str] = None,
                 nested: bool = False, data_partition_column: Optional[str] = None, hive_partitioning: bool = False,
                 name: Optional[str] = None, version: str = "", **options: Any) -> None:
        if not data_partition_column:
            raise PlanError(f"node {name or self.kind!r}: give data_partition_column (the column holding each "
                            "file's partition number)")
        self.data_partition_column = data_partition_column
        self.hive_partitioning = hive_partitioning
        deps, _ = _as_inputs(inputs)
        # what a source's dataset knows of its files' partitions (an earlier job's output, say)
        dataset = getattr(deps[0], "dataset", None) if deps else None
        self._known_keys = {p: k[data_partition_column] for p, k in
                            (getattr(dataset, "_partition_keys", None) or {}).items() if data_partition_column in k}
        super().__init__(ctx, inputs, npartitions, name, version, None, None, None, dimension, nested, **options)

    def default_name(self) -> str:
        return "load_partitioned"

    def map_units(self) -> Optional[str]:
        # worth cutting only when each file's rows say its partition (folder names and known keys cost nothing)
        return None if self.hive_partitioning or self._known_keys else "files"

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|{self.data_partition_column}|{self.hive_partitioning}"

    def output_schema(self) -> Any:
        return self.input_schemas()[0]

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.logical.dataset import _partition_key
        from mpipipe.steps.partio import bucket_dir, write_manifest

        groups: List[List[Any]] = [[] for _ in range(self.nbuckets)]
        # within a plan, the input partition this task reads says which partition its files hold
        dims = partition_dims(self.inputs[0])
        names = [d for d, _ in dims]
        structural = None
        if self.data_partition_column in names:
            index = names.index(self.data_partition_column)
            rest = task.partition
            for k in range(len(dims) - 1, index, -1):
                rest //= dims[k][1]
            structural = rest % dims[index][1]
        for frag in inputs[0].fragments:
            key = structural if structural is not None else self._known_keys.get(frag.path)
            if key is None:
                key = _partition_key(frag.path, self.data_partition_column, self.hive_partitioning)
            if key is None:
                continue
            if not 0 <= key < self.nbuckets:
                raise PlanError(f"node {self.name!r}: {frag.path} holds partition {key}, outside "
                                f"0..{self.nbuckets - 1}")
            groups[key].append(frag)
        schema = self.output_schema() or (inputs[0].schema() if inputs[0].fragments else None)
        for b, frags in enumerate(groups):
            write_manifest(bucket_dir(task.output_dir, b), frags, schema)
        return {"fragments": len(inputs[0].fragments)}
