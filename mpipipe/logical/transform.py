"""Transform nodes: SQL, Arrow, pandas and Python bodies, projection, limit, union and consolidate.

A body is given either as a function or by subclassing and overriding
`process`, as in smallpond: `process(runtime_ctx, inputs)` where inputs are
Arrow tables, record-batch readers or pandas frames, one per input node.
"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Sequence, Union

from mpipipe.errors import PlanError
from mpipipe.logical.datanode import (DataNode, Inputs, _as_inputs, is_bucketed, num_outputs, output_schema_of,
                                      rows_written)
from mpipipe.logical.node import Context, Node, code_fingerprint
from mpipipe.steps.tables import to_table

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SqlEngineNode(DataNode):
    """Run a DuckDB query on each partition; inputs are `{0}`, `{1}`, ... or `{name}` in the query.

    Several statements may be given (separated by `;`): all but the last run
    first (e.g. CREATE MACRO), the last one's result is the partition's output.
    """

    kind = "sql"

    def __init__(self, ctx: Context, inputs: Inputs, sql_query: Union[str, Sequence[str]],
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None,
                 cpu_limit: Optional[int] = None, memory_limit: Union[int, str, None] = None,
                 resources: Any = None) -> None:
        from mpipipe.steps import sql as S

        label = name or "sql"
        deps, names = _as_inputs(inputs)
        names = names or tuple(d.name for d in deps)
        text = sql_query if isinstance(sql_query, str) else ";\n".join(sql_query)
        if not isinstance(text, str) or not text.strip():
            raise PlanError(f"node {label!r}: the SQL query is empty")
        self.sql_query = text
        self.statements = S.split_statements(label, S.substitute(label, text, names))
        super().__init__(ctx, inputs, npartitions, name, version, cpus or cpu_limit, memory or memory_limit, resources)
        self._schema = S.output_schema(self.name, self.statements, self.input_schemas()) if self._bindable() else None

    def _bindable(self) -> bool:
        """Binding runs the leading statements on an empty database: only when they have no side effects."""
        return all(re.match(r"\s*(CREATE\s+(OR\s+REPLACE\s+)?(TEMP\s+|TEMPORARY\s+)?(MACRO|FUNCTION|VIEW|TABLE)|SET)\b",
                            s, re.I) for s in self.statements[:-1])

    def default_name(self) -> str:
        return "sql"

    def step_fingerprint(self) -> str:
        return self.sql_query

    def describe(self) -> str:
        short = " ".join(self.sql_query.split())
        return f"sql {short[:60] + '...' if len(short) > 60 else short!r}"

    def output_schema(self) -> Any:
        return self._schema

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        import os

        from mpipipe.steps import sql as S

        threads, memory = self.task_resources(task)
        out = os.path.join(task.output_dir, "part-0.parquet")
        con = S.connect(threads, memory, os.path.join(task.output_dir, ".tmp"))
        try:
            S.run_query(con, self.statements, inputs, out)
        finally:
            con.close()
        import shutil

        shutil.rmtree(os.path.join(task.output_dir, ".tmp"), ignore_errors=True)
        return rows_written(task.output_dir)


class ProjectionNode(SqlEngineNode):
    """Keep (or compute) some columns: names of input columns, or SQL expressions such as `a + b AS c`."""

    kind = "projection"

    def __init__(self, ctx: Context, inputs: Inputs, columns: Sequence[str], name: Optional[str] = None,
                 version: str = "") -> None:
        deps, _ = _as_inputs(inputs)
        label = name or "projection"
        if len(deps) != 1:
            raise PlanError(f"node {label!r} projects exactly one input, got {len(deps)}")
        cols = [columns] if isinstance(columns, str) else list(columns)
        if not cols:
            raise PlanError(f"node {label!r}: give at least one column")
        schema = output_schema_of(deps[0])
        names = schema.names if schema is not None else []
        exprs = ['"' + c.replace('"', '""') + '"' if c in names or (_IDENT.fullmatch(c) and not names) else c
                 for c in cols]
        self.columns = cols
        super().__init__(ctx, deps, f"SELECT {', '.join(exprs)} FROM {{0}}", name=name or "projection", version=version)

    def default_name(self) -> str:
        return "projection"

    def describe(self) -> str:
        return f"projection {', '.join(self.columns)}"


def _fn_name(fn: Any, fallback: str) -> str:
    from mpipipe.logical.node import _NAME_RE

    name = getattr(fn, "__name__", "")
    return name if name and _NAME_RE.fullmatch(name) else fallback


class _FunctionNode(DataNode):
    """A node whose body is `process(runtime_ctx, inputs)`: a function given, or the method overridden."""

    def __init__(self, ctx: Context, inputs: Inputs, process: Optional[Callable[..., Any]] = None,
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None,
                 output_schema: Any = None, resources: Any = None) -> None:
        overridden = type(self).process is not _FunctionNode.process
        if process is None and not overridden:
            raise PlanError(f"{type(self).__name__} needs a process function (or a subclass that overrides process)")
        if process is not None and not callable(process):
            raise PlanError(f"node {name or self.kind!r}: process must be callable, got {type(process).__name__}")
        self.process_fn = process
        self._declared_schema = output_schema
        super().__init__(ctx, inputs, npartitions, name or (_fn_name(process, self.kind) if process else None),
                         version, cpus, memory, resources)

    def default_name(self) -> str:
        return self.kind

    def process(self, runtime_ctx: Any, inputs: List[Any]) -> Any:
        assert self.process_fn is not None
        return self.process_fn(runtime_ctx, inputs)

    def step_fingerprint(self) -> str:
        if self.process_fn is None:
            return code_fingerprint(type(self))
        wrapped = getattr(self.process_fn, "_mpipipe_wraps", None)  # a DataFrame method's adapter
        if wrapped is not None:
            return f"{code_fingerprint(wrapped[0])}|{wrapped[1]}"
        return code_fingerprint(self.process_fn)

    def output_schema(self) -> Any:
        return self._declared_schema

    def describe(self) -> str:
        target = self.process_fn if self.process_fn is not None else type(self)
        return f"{self.kind} {getattr(target, '__qualname__', target)!s}"


class ArrowComputeNode(_FunctionNode):
    """`process(runtime_ctx, tables) -> table`: whole partitions as Arrow tables in, one table out."""

    kind = "arrow"

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_table

        table = to_table(self.process(task, [d.to_arrow() for d in inputs]), f"node {self.name!r}")
        write_table(table, task.output_dir)
        return {"rows": table.num_rows}


class PandasComputeNode(_FunctionNode):
    """`process(runtime_ctx, dataframes) -> dataframe`: pandas in, pandas out."""

    kind = "pandas"

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_table

        table = to_table(self.process(task, [d.to_pandas() for d in inputs]), f"node {self.name!r}")
        write_table(table, task.output_dir)
        return {"rows": table.num_rows}


class ArrowStreamNode(_FunctionNode):
    """`process(runtime_ctx, readers) -> iterable of batches`: streams partitions that do not fit in memory.

    Output is checkpointed every `checkpoint_batches` input batches (or
    `checkpoint_seconds`), so a retried attempt skips the input batches already
    done. For that, yield the output of each batch before reading the next one
    (the natural way to write a stream); set `checkpoint=False` otherwise.
    """

    kind = "arrow_stream"

    def __init__(self, ctx: Context, inputs: Inputs, process: Optional[Callable[..., Any]] = None,
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None, output_schema: Any = None,
                 batch_size: int = 65536, checkpoint: bool = True, checkpoint_batches: int = 32,
                 checkpoint_seconds: float = 60.0, resources: Any = None) -> None:
        if batch_size < 1 or checkpoint_batches < 1 or checkpoint_seconds <= 0:
            raise PlanError(f"node {name or self.kind!r}: batch_size and checkpoint_batches must be >= 1 and "
                            "checkpoint_seconds > 0")
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.checkpoint_batches = checkpoint_batches
        self.checkpoint_seconds = checkpoint_seconds
        super().__init__(ctx, inputs, process, npartitions, name, version, cpus, memory, output_schema, resources)

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|{self.batch_size}"

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.stream import run_stream

        return run_stream(self, task, inputs)


class PythonScriptNode(_FunctionNode):
    """`process(runtime_ctx, input_datasets, output_path)`: free-form; write any files into output_path.

    input_datasets are PartitionData objects (`.paths`, `.to_arrow()`,
    `.reader()`, `.other_files`, ...). Returning False fails the attempt. A
    DataSinkNode takes the files it writes as they are; nodes that read tables
    need Parquet.
    """

    kind = "python"

    def process(self, runtime_ctx: Any, inputs: List[Any], output_path: str = "") -> Any:  # type: ignore[override]
        assert self.process_fn is not None
        return self.process_fn(runtime_ctx, inputs, output_path)

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        ok = self.process(task, inputs, task.output_dir)
        if ok is False:
            raise RuntimeError(f"node {self.name!r}: process returned False")
        return rows_written(task.output_dir)


def partition_folders(dep: Node, paths: Sequence[str], j: int) -> List[str]:
    """The folders holding partition j of `dep`, given all of its task outputs."""
    from mpipipe.steps.partio import bucket_dir

    if is_bucketed(dep):
        return [bucket_dir(d, j) for d in paths]
    return [paths[j]]


class _ZeroCopyNode(DataNode):
    """Re-groups input partitions by writing manifests that point at the same files."""

    gathers = True

    def sources(self, p: int) -> List[tuple]:
        """(input index, input partition) pairs that make up partition p."""
        raise NotImplementedError

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import PartitionData, write_manifest

        folders = [f for i, j in self.sources(task.partition)
                   for f in partition_folders(self.inputs[i], task.inputs[i], j)]
        data = PartitionData.from_folders(folders)
        # files that are not Parquet (a PythonScriptNode's) travel on too, named apart when folders merge
        files = [(rel if len(folders) == 1 else f"{k:06d}/{rel}", path) for k, rel, path in data.other_files]
        schema = None
        if not data.fragments and not files:  # the schema is written only for an empty partition
            first = PartitionData.from_folders(task.inputs[0][:1])
            schema = first.schema() if first.fragments else None
        write_manifest(task.output_dir, data.fragments, schema, files)
        return {"fragments": len(data.fragments), "files": len(files)}

    def input_data(self, task: Any) -> List[Any]:
        return []  # process_partition picks its own folders


class UnionNode(_ZeroCopyNode):
    """All partitions of all inputs, one after the other (no data is copied); schemas must agree."""

    kind = "union"

    def __init__(self, ctx: Context, inputs: Inputs, name: Optional[str] = None, version: str = "") -> None:
        from mpipipe.steps.partio import check_schema_compatible

        deps, _ = _as_inputs(inputs)
        label = name or "union"
        if len(deps) < 1:
            raise PlanError(f"node {label!r} needs at least one input")
        check_schema_compatible(label, {d.name: output_schema_of(d) for d in deps})
        self._offsets = []
        total = 0
        for d in deps:
            self._offsets.append(total)
            total += num_outputs(d)
        super().__init__(ctx, deps, total, name, version)

    def default_name(self) -> str:
        return "union"

    def sources(self, p: int) -> List[tuple]:
        i = max(k for k, off in enumerate(self._offsets) if off <= p)
        return [(i, p - self._offsets[i])]

    def output_schema(self) -> Any:
        return next((s for s in self.input_schemas() if s is not None), None)


class ConsolidateNode(_ZeroCopyNode):
    """Merge neighbouring partitions into `npartitions` larger ones (no data is copied)."""

    kind = "consolidate"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: int = 1, name: Optional[str] = None,
                 version: str = "") -> None:
        deps, _ = _as_inputs(inputs)
        label = name or "consolidate"
        if len(deps) != 1:
            raise PlanError(f"node {label!r} consolidates exactly one input, got {len(deps)}")
        if isinstance(npartitions, int) and npartitions > num_outputs(deps[0]):
            raise PlanError(f"node {label!r}: cannot consolidate {num_outputs(deps[0])} partitions into "
                            f"{npartitions}; use a DataSetPartitionNode to split")
        super().__init__(ctx, deps, npartitions, name, version)

    def default_name(self) -> str:
        return "consolidate"

    def sources(self, p: int) -> List[tuple]:
        k = num_outputs(self.inputs[0])
        return [(0, j) for j in range(p * k // self.npartitions, (p + 1) * k // self.npartitions)]

    def output_schema(self) -> Any:
        return self.input_schemas()[0]


class LimitNode(DataNode):
    """At most `limit` rows of the input, in partition order, as one partition (reads no more than needed)."""

    kind = "limit"
    gathers = True

    def __init__(self, ctx: Context, inputs: Inputs, limit: int, name: Optional[str] = None, version: str = "") -> None:
        label = name or "limit"
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise PlanError(f"node {label!r}: limit must be a whole number >= 0, got {limit!r}")
        self.limit = limit
        super().__init__(ctx, inputs, 1, name, version)

    def default_name(self) -> str:
        return "limit"

    def step_fingerprint(self) -> str:
        return str(self.limit)

    def describe(self) -> str:
        return f"limit {self.limit}"

    def output_schema(self) -> Any:
        return next((s for s in self.input_schemas() if s is not None), None)

    def input_data(self, task: Any) -> List[Any]:
        """Each input in the partition order its consumers see: for a partitioning input, bucket 0
        of every task, then bucket 1, ... (not each task's buckets in turn)."""
        from mpipipe.steps.partio import PartitionData

        return [PartitionData.from_folders([f for j in range(num_outputs(d))
                                            for f in partition_folders(d, task.inputs[i], j)])
                for i, d in enumerate(self.inputs)]

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        import pyarrow as pa

        from mpipipe.steps.partio import conform_batches, nullable_schema, write_table

        schema = nullable_schema(inputs[0].schema())
        batches, left = [], self.limit
        for data in inputs:
            if left <= 0:
                break
            for batch in conform_batches(data.batches(), schema):
                batches.append(batch.slice(0, left))
                left -= min(left, batch.num_rows)
                if left <= 0:
                    break  # before the next batch is read
        table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
        write_table(table, task.output_dir)
        return {"rows": table.num_rows}

