"""Transform nodes: SQL, Arrow, pandas and Python bodies, projection, limit, union and consolidate.

A body is given either as a function or by subclassing and overriding
`process`, as in smallpond: `process(runtime_ctx, inputs)` where inputs are
Arrow tables, record-batch readers or pandas frames, one per input node.
"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Sequence, Union, cast  # noqa: F401

from mpipipe.data.duckdb_tables import register_empty
from mpipipe.errors import PlanError
from mpipipe.logical import partial
from mpipipe.logical.datanode import (DataNode, Inputs, _as_inputs, num_outputs, output_schema_of,
                                      partition_folders, rows_written)
from mpipipe.logical.plan import Context, code_fingerprint
from mpipipe.steps.tables import to_table

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


PARTITION_PLACEHOLDERS = ("__data_partition__", "__partition__")
_PARTITION_MARK = "__mpipipe_partition_index__"


class SqlEngineNode(DataNode):
    """Run a DuckDB query on each partition; inputs are `{0}`, `{1}`, ... or `{name}` in the query.

    Several statements may be given (separated by `;`, or as a list): all but the last run first (e.g.
    CREATE MACRO), the last one's result is the partition's output. `{__data_partition__}` is the
    partition's number. `udfs` names functions made with `ctx.create_function(...)`. The query is parsed
    and bound against the inputs' columns when the plan is made (LogicalPlan, or a DataFrame action), so a
    bad query fails before anything runs, with the query in the message.

    A GROUP BY over the columns of a hash partition it alone reads is aggregated in two steps: each map
    task of the partition aggregates its slice first, and this node combines the partial rows, with the
    same result (mpipipe.logical.partial says when; explain() shows it). `partial_aggregate=False` turns
    that off.
    """

    kind = "sql"
    reads_any_format = True

    def __init__(self, ctx: Context, inputs: Inputs, sql_query: Union[str, Sequence[str]],
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None, resources: Any = None, *,
                 udfs: Optional[Sequence[Any]] = None, partial_aggregate: bool = True, **options: Any) -> None:
        label = name or options.get("output_name") or "sql"
        deps, names = _as_inputs(inputs)
        self._input_labels = tuple(names or tuple(d.name for d in deps))
        text = sql_query if isinstance(sql_query, str) else ";\n".join(sql_query)
        if not isinstance(text, str) or not text.strip():
            raise PlanError(f"node {label!r}: the SQL query is empty")
        self.sql_query = text
        self.udfs = [ctx.udf(u) if isinstance(u, str) else u for u in (udfs or ())]
        self._statements: Optional[List[str]] = None
        self._schema: Any = None
        self._bound = False
        self._partial_used = self._partial_settled = False
        self._partial_twin: Any = None  # mpipipe.logical.partial's twin of the input, and the Split
        self._partial_split: Any = None
        self._partial_reason = ""
        if type(self) is SqlEngineNode:  # made before this node, so that it comes first in the plan's order
            self._partial_twin, self._partial_split, self._partial_reason = partial.prepare(
                ctx, deps, text, self._input_labels, self.udfs, partial_aggregate)
        super().__init__(ctx, inputs, npartitions, name, version, cpus, memory, resources, **options)
        try:  # what it can tell now, for the nodes built on it; a bad query is reported by check_plan()
            self.check_plan()
        except PlanError:
            pass

    @property
    def statements(self) -> List[str]:
        if self._statements is None:
            from mpipipe.steps import sql as S

            text = self._partial_split.reduce_query if self._partial_used else self.sql_query
            for ph in PARTITION_PLACEHOLDERS:
                text = text.replace("{" + ph + "}", _PARTITION_MARK)
            try:
                self._statements = S.split_statements(self.name, S.substitute(self.name, text, self._input_labels))
            except PlanError as e:
                raise PlanError(f"{e} (query: {_short(self.sql_query)})") from None
        return self._statements

    def check_plan(self) -> None:
        """Parse and bind the query (raises PlanError naming the node and quoting the query)."""
        from mpipipe.steps import sql as S

        super().check_plan()
        statements = self.statements
        if self._bound:
            return
        if self._bindable() and not self.udfs:
            bind = [s.replace(_PARTITION_MARK, "0") for s in statements]
            try:
                self._schema = S.output_schema(self.name, bind, self.input_schemas())
            except PlanError as e:
                raise PlanError(f"{e} (query: {_short(self.sql_query)})") from None
        self._bound = True

    def _bindable(self) -> bool:
        """Binding runs the leading statements on an empty database: only when they have no side effects."""
        return all(re.match(r"\s*(CREATE\s+(OR\s+REPLACE\s+)?(TEMP\s+|TEMPORARY\s+)?(MACRO|FUNCTION|VIEW|TABLE)|SET)\b",
                            s, re.I) for s in self.statements[:-1])

    def default_name(self) -> str:
        return "sql"

    def step_fingerprint(self) -> str:
        combine = f"|partial|{self._partial_split.reduce_query}" if self._partial_used else ""
        return self.sql_query + "".join(f"|{u.fingerprint()}" for u in self.udfs) + combine

    def describe(self) -> str:
        text = f"sql {_short(self.sql_query, 60)!r}"
        if self._partial_used:
            return f"{text}, combining the partial aggregates of {self.inputs[0].name}"
        return f"{text} (no partial aggregate: {self._partial_reason})" if self._partial_reason else text

    def settle_inputs(self, plan: Any) -> bool:
        """Called by the first plan that holds this node: read the partial aggregates of the hash partition's
        twin when nothing else in the plan reads the hash partition (True when the inputs changed)."""
        return partial.settle(self, plan)

    def output_schema(self) -> Any:
        return self._schema

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        import os
        import shutil

        from mpipipe.steps import sql as S

        threads, memory = self.task_resources(task)
        out = os.path.join(task.output_dir, "part-0.parquet")
        con = S.connect(threads, memory, os.path.join(task.output_dir, ".tmp"))
        try:
            for u in self.udfs:
                u.register(con)
            statements = [s.replace(_PARTITION_MARK, str(task.partition)) for s in self.statements]
            S.run_query(con, statements, inputs, out)
        finally:
            con.close()
        shutil.rmtree(os.path.join(task.output_dir, ".tmp"), ignore_errors=True)
        return rows_written(task.output_dir)


def _short(sql: str, width: int = 200) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= width else text[:width - 3] + "..."


class ProjectionNode(SqlEngineNode):
    """Keep (or compute) some columns: names of input columns, or SQL expressions such as `a + b AS c`.

    `generated_columns` adds DuckDB's "filename" and "file_row_number" of each row (Parquet input);
    `union_by_name=True` lines up the columns of input files by name (files with different columns).
    """

    kind = "projection"

    def __init__(self, ctx: Context, inputs: Inputs, columns: Optional[Sequence[str]] = None,
                 generated_columns: Optional[Sequence[str]] = None, union_by_name: Optional[bool] = None,
                 name: Optional[str] = None, version: str = "", **options: Any) -> None:
        from mpipipe.io.common import GENERATED_COLUMNS

        deps, _ = _as_inputs(inputs)
        label = name or options.get("output_name") or "projection"
        if len(deps) != 1:
            raise PlanError(f"node {label!r} projects exactly one input, got {len(deps)}")
        cols = ["*"] if columns is None else [columns] if isinstance(columns, str) else list(columns)
        if not cols:
            raise PlanError(f"node {label!r}: give at least one column")
        gen = list(generated_columns or [])
        bad = [g for g in gen if g not in GENERATED_COLUMNS]
        if bad:
            raise PlanError(f"node {label!r}: generated_columns may be {list(GENERATED_COLUMNS)}, got {bad}")
        schema = output_schema_of(deps[0])
        names = schema.names if schema is not None else []
        exprs = ['"' + c.replace('"', '""') + '"' if c in names or (_IDENT.fullmatch(c) and not names) else c
                 for c in cols]
        self.columns = cols
        self.generated_columns = gen
        self.union_by_name = bool(union_by_name)
        select = ", ".join(exprs + ['"' + g + '"' for g in gen if g not in cols])
        super().__init__(ctx, deps, f"SELECT {select} FROM {{0}}", name=name or options.pop("output_name", None)
                         or "projection", version=version, **options)

    def default_name(self) -> str:
        return "projection"

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|{self.generated_columns}|{self.union_by_name}"

    def check_plan(self) -> None:
        if self.generated_columns or self.union_by_name:
            DataNode.check_plan(self)
            self.statements  # noqa: B018 - parse only: the input gains columns when it is read
            self._bound = True
            return
        super().check_plan()

    @property
    def reads_any_format(self) -> bool:  # type: ignore[override]
        return not (self.generated_columns or self.union_by_name)  # DuckDB's Parquet reader gives them

    def describe(self) -> str:
        return f"projection {', '.join(self.columns + self.generated_columns)}"

    def input_data(self, task: Any) -> List[Any]:
        data = super().input_data(task)
        if not (self.generated_columns or self.union_by_name):
            return data
        return [_WithColumns(d, self.generated_columns, self.union_by_name) for d in data]


class _WithColumns:
    """An input read with DuckDB's generated columns and/or its files' columns lined up by name."""

    def __init__(self, data: Any, generated: Sequence[str], by_name: bool) -> None:
        self.data = data
        self.generated = list(generated)
        self.by_name = by_name
        self.fragments = data.fragments

    def duckdb_source(self, con: Any, name: str) -> None:
        from mpipipe.steps.partio import _duck_reader, _open, _quote

        frags = self.data.fragments if self.by_name else self.data.checked().fragments
        if not frags:
            register_empty(con, name, self.data.schema())
            return
        if any(f.format != "parquet" for f in frags):
            if self.generated:
                raise PlanError(f"generated_columns need Parquet input; {frags[0].path} is {frags[0].format}")
            opts = frags[0].options + (("union_by_name", True),)
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS SELECT * FROM "
                        f"{_duck_reader(frags[0].format, [_open(f.path)[1] for f in frags], opts)}")
            return
        base = tuple((g, True) for g in self.generated if g != "file_row_number") + \
            ((("union_by_name", True),) if self.by_name else ())
        parts = []
        for f in frags:
            # a row range is cut by file_row_number; a whole file needs it only when it was asked for
            numbered = "file_row_number" in self.generated or f.rows is not None or f.row_groups is not None
            opts = base + ((("file_row_number", True),) if numbered else ())
            drop = "" if "file_row_number" in self.generated or not numbered else " EXCLUDE (file_row_number)"
            where = ""
            if f.rows is not None:
                where = f" WHERE file_row_number BETWEEN {f.rows[0]} AND {f.rows[1] - 1}"
            elif f.row_groups is not None:
                import pyarrow.parquet as pq

                md = pq.read_metadata(_open(f.path)[1])
                starts = [0]
                for g in range(md.num_row_groups):
                    starts.append(starts[-1] + md.row_group(g).num_rows)
                ranges = " OR ".join(f"file_row_number BETWEEN {starts[g]} AND {starts[g + 1] - 1}"
                                     for g in f.row_groups)
                where = f" WHERE {ranges}"
            parts.append(f"SELECT *{drop} FROM {_duck_reader('parquet', [_open(f.path)[1]], opts)}{where}")
        glue = " UNION ALL BY NAME " if self.by_name else " UNION ALL "
        con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS {glue.join(parts)}")


def _fn_name(fn: Any, fallback: str) -> str:
    from mpipipe.logical.plan import _NAME_RE

    name = getattr(fn, "__name__", "")
    return name if name and _NAME_RE.fullmatch(name) else fallback


class _FunctionNode(DataNode):
    """A node whose body is `process(runtime_ctx, inputs)`: a function given (`process`, or smallpond's
    `process_func`), or the method overridden. `runtime_ctx` is the TaskContext with smallpond's
    RuntimeContext names (`task.cpu_limit`, `task.python_random_gen`, ...)."""

    def __init__(self, ctx: Context, inputs: Inputs, process: Optional[Callable[..., Any]] = None,
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None,
                 output_schema: Any = None, resources: Any = None, *,
                 process_func: Optional[Callable[..., Any]] = None, **options: Any) -> None:
        if process is not None and process_func is not None:
            raise PlanError(f"node {name or self.kind!r}: give process or process_func, not both")
        process = process if process is not None else process_func
        overridden = type(self).process is not _FunctionNode.process and not getattr(type(self).process,
                                                                                      "_mpipipe_default", False)
        if process is None and not overridden:
            raise PlanError(f"{type(self).__name__} needs a process function (or a subclass that overrides process)")
        if process is not None and not callable(process):
            raise PlanError(f"node {name or self.kind!r}: process must be callable, got {type(process).__name__}")
        self.process_fn = process
        self._declared_schema = output_schema
        name = name or options.pop("output_name", None)
        super().__init__(ctx, inputs, npartitions, name or (_fn_name(process, self.kind) if process else None),
                         version, cpus, memory, resources, **options)

    @property
    def process_func(self) -> Optional[Callable[..., Any]]:
        return self.process_fn

    def default_name(self) -> str:
        return self.kind

    def process(self, runtime_ctx: Any, inputs: List[Any]) -> Any:
        assert self.process_fn is not None
        return self.process_fn(runtime_ctx, inputs)

    process._mpipipe_default = True  # type: ignore[attr-defined]

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
    reads_any_format = True

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.partio import write_table

        table = to_table(self.process(self.runtime_context(task), [self._read(d) for d in inputs]),
                         f"node {self.name!r}")
        write_table(table, task.output_dir)
        return {"rows": table.num_rows}

    def _read(self, data: Any) -> Any:
        return data.to_arrow()


class PandasComputeNode(ArrowComputeNode):
    """`process(runtime_ctx, dataframes) -> dataframe`: pandas in, pandas out."""

    kind = "pandas"

    def _read(self, data: Any) -> Any:
        return data.to_pandas()


class ArrowStreamNode(_FunctionNode):
    """`process(runtime_ctx, readers) -> iterable of batches`: streams partitions that do not fit in memory.

    Output is checkpointed every `checkpoint_batches` input batches (or `checkpoint_seconds`, smallpond's
    `secs_checkpoint_interval`), so a retried attempt skips the input batches already done. For that, yield
    the output of each batch before reading the next one (the natural way to write a stream); set
    `checkpoint=False` otherwise. `batch_size` is smallpond's `streaming_batch_size`. A yielded
    StreamOutput(table, ..., force_checkpoint=True) checkpoints at once.
    """

    kind = "arrow_stream"
    reads_any_format = True

    def __init__(self, ctx: Context, inputs: Inputs, process: Optional[Callable[..., Any]] = None,
                 npartitions: Optional[int] = None, name: Optional[str] = None, version: str = "",
                 cpus: Optional[int] = None, memory: Union[int, str, None] = None, output_schema: Any = None,
                 batch_size: int = 65536, checkpoint: bool = True, checkpoint_batches: int = 32,
                 checkpoint_seconds: float = 60.0, resources: Any = None, *,
                 streaming_batch_size: Optional[int] = None, secs_checkpoint_interval: Optional[float] = None,
                 **options: Any) -> None:
        batch_size = streaming_batch_size or batch_size
        checkpoint_seconds = secs_checkpoint_interval or checkpoint_seconds
        if batch_size < 1 or checkpoint_batches < 1 or checkpoint_seconds <= 0:
            raise PlanError(f"node {name or self.kind!r}: batch_size and checkpoint_batches must be >= 1 and "
                            "checkpoint_seconds > 0")
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.checkpoint_batches = checkpoint_batches
        self.checkpoint_seconds = checkpoint_seconds
        super().__init__(ctx, inputs, process, npartitions, name, version, cpus, memory, output_schema, resources,
                         **options)

    @property
    def streaming_batch_size(self) -> int:
        return self.batch_size

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|{self.batch_size}"

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.stream import run_stream

        return run_stream(self, task, inputs)


class ArrowBatchNode(ArrowStreamNode):
    """`process(runtime_ctx, tables) -> table`, called per batch of `streaming_batch_size` rows: the
    inputs are read in step, one batch of each (an input that has run out gives an empty table)."""

    kind = "arrow_batch"

    def _convert(self, table: Any) -> Any:
        return table

    def process_batch(self, runtime_ctx: Any, tables: List[Any]) -> Any:
        if self.process_fn is not None:
            return self.process_fn(runtime_ctx, tables)
        return type(self).process(self, runtime_ctx, tables)  # a subclass's own process(ctx, tables)

    def process(self, runtime_ctx: Any, inputs: List[Any]) -> Any:  # type: ignore[override]
        """Hook (override with process(runtime_ctx, tables) -> table); by default the function given."""
        assert self.process_fn is not None
        return self.process_fn(runtime_ctx, inputs)

    process._mpipipe_default = True  # type: ignore[attr-defined]

    def _stream(self, runtime_ctx: Any, readers: List[Any]) -> Any:
        import pyarrow as pa

        iters = [iter(r) for r in readers]
        while True:
            batches = [next(it, None) for it in iters]
            if all(b is None for b in batches):
                return
            tables = [pa.Table.from_batches([b]) if b is not None else r.schema.empty_table()
                      for b, r in zip(batches, readers)]
            yield self.process(runtime_ctx, [self._convert(t) for t in tables])

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.stream import run_stream

        return run_stream(_BatchRunner(self), task, inputs)


class _BatchRunner:
    """Presents a batch node to the stream runner: its process() turns readers into per-batch calls."""

    def __init__(self, node: ArrowBatchNode) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def runtime_context(self, task: Any) -> Any:
        return self._node.runtime_context(task)

    def process(self, runtime_ctx: Any, readers: List[Any]) -> Any:
        return self._node._stream(runtime_ctx, readers)


class PandasBatchNode(ArrowBatchNode):
    """`process(runtime_ctx, dataframes) -> dataframe`, per batch of `streaming_batch_size` rows."""

    kind = "pandas_batch"

    def _convert(self, table: Any) -> Any:
        from mpipipe.steps.partio import pandas_frame

        return pandas_frame(table)


class PythonScriptNode(_FunctionNode):
    """`process(runtime_ctx, input_datasets, output_path)`: free-form; write any files into output_path.

    input_datasets are datasets with both faces: smallpond's (`resolved_paths`, `num_files`, `num_rows`,
    `to_arrow_table()`, ...) and PartitionData's (`.paths`, `.to_arrow()`, `.reader()`, `.other_files`,
    ...). Returning False fails the attempt. A DataSinkNode takes the files it writes as they are; nodes
    that read tables need Parquet. As in smallpond, a subclass may instead override `spawn(*args,
    **kwargs)` to return a PythonScriptTask whose `process(runtime_ctx, input_datasets, output_path)` runs.
    """

    kind = "python"

    def process(self, runtime_ctx: Any, inputs: List[Any], output_path: str = "") -> Any:  # type: ignore[override]
        assert self.process_fn is not None
        return self.process_fn(runtime_ctx, inputs, output_path)

    process._mpipipe_default = True  # type: ignore[attr-defined]

    def __init__(self, ctx: Context, inputs: Inputs, process: Optional[Callable[..., Any]] = None,
                 *args: Any, **kwargs: Any) -> None:
        if process is None and kwargs.get("process_func") is None and type(self).spawn is not PythonScriptNode.spawn:
            process = _spawned
        super().__init__(ctx, inputs, process, *args, **kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> Any:
        """Hook (smallpond): return the PythonScriptTask whose process() does the work."""
        from mpipipe.execution.task import PythonScriptTask

        return PythonScriptTask(*args, **kwargs)

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.logical.dataset import partition_dataset

        rc = self.runtime_context(task)
        datasets = [partition_dataset(d) for d in inputs]
        if self.process_fn is _spawned:
            runner = self.spawn(rc, [], [], None, self.name, self.publish_path, self.cpus or 1, self.gpu_limit,
                                self.memory)
            runner.bind(rc)
            runner.initialize()
            try:
                ok = runner.process(rc, datasets, task.output_dir)
            finally:
                runner.finalize()
        else:
            ok = self.process(rc, datasets, task.output_dir)
        if ok is False:
            raise RuntimeError(f"node {self.name!r}: process returned False")
        return rows_written(task.output_dir)


def _spawned(*_args: Any) -> Any:
    """Marks a PythonScriptNode whose work is done by the task its spawn() returns."""
    raise AssertionError("never called")


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

    def __init__(self, ctx: Context, inputs: Inputs, name: Optional[str] = None, version: str = "",
                 **options: Any) -> None:
        from mpipipe.steps.partio import check_schema_compatible

        deps, _ = _as_inputs(inputs)
        label = name or options.get("output_name") or "union"
        if len(deps) < 1:
            raise PlanError(f"node {label!r} needs at least one input")
        check_schema_compatible(label, {d.name: output_schema_of(d) for d in deps})
        self._offsets = []
        total = 0
        for d in deps:
            self._offsets.append(total)
            total += num_outputs(d)
        super().__init__(ctx, deps, total, name, version, **options)

    def default_name(self) -> str:
        return "union"

    def sources(self, p: int) -> List[tuple]:
        i = max(k for k, off in enumerate(self._offsets) if off <= p)
        return [(i, p - self._offsets[i])]

    def output_schema(self) -> Any:
        return next((s for s in self.input_schemas() if s is not None), None)


class ConsolidateNode(_ZeroCopyNode):
    """Merge neighbouring partitions into `npartitions` larger ones (no data is copied); or, as in smallpond,
    give the dimensions to keep (`["host_partition"]`): partitions that agree on those dimensions' indexes
    are merged (a nested partitioning folded back into its outer one)."""

    kind = "consolidate"

    def __init__(self, ctx: Context, inputs: Inputs, npartitions: Union[int, Sequence[str]] = 1,
                 name: Optional[str] = None, version: str = "", **options: Any) -> None:
        from mpipipe.logical.datanode import partition_dims

        deps, _ = _as_inputs(inputs)
        label = name or options.get("output_name") or "consolidate"
        if len(deps) != 1:
            raise PlanError(f"node {label!r} consolidates exactly one input, got {len(deps)}")
        self.dimensions: Optional[List[str]] = None
        if not isinstance(npartitions, int) and isinstance(npartitions, (list, tuple, set)):
            self.dimensions = [str(d) for d in npartitions]
            dims = partition_dims(deps[0])
            known = [d for d, _ in dims]
            missing = [d for d in self.dimensions if d not in known]
            if missing:
                raise PlanError(f"node {label!r}: dimension(s) {missing} are not partition dimensions of "
                                f"{deps[0].name!r} (it has {known or 'none'})")
            self._kept = [(i, n) for i, (d, n) in enumerate(dims) if d in self.dimensions]
            self._sizes = [n for _, n in dims]
            npartitions = 1
            for _, n in self._kept:
                npartitions *= n
        elif isinstance(npartitions, int) and npartitions > num_outputs(deps[0]):
            raise PlanError(f"node {label!r}: cannot consolidate {num_outputs(deps[0])} partitions into "
                            f"{npartitions}; use a DataSetPartitionNode to split")
        # a count by now; any other value is refused by Node.__init__ with its one-line error
        super().__init__(ctx, deps, cast(int, npartitions), name, version, **options)

    def default_name(self) -> str:
        return "consolidate"

    def partition_dims_own(self) -> List[Any]:
        from mpipipe.logical.datanode import DATA_PARTITION_DIM, partition_dims

        if self.dimensions is None:
            return [(DATA_PARTITION_DIM, self.npartitions)] if self.npartitions > 1 else []
        dims = partition_dims(self.inputs[0])
        return [dims[i] for i, _ in self._kept]

    def step_fingerprint(self) -> str:
        return f"{self.dimensions}"

    def sources(self, p: int) -> List[tuple]:
        k = num_outputs(self.inputs[0])
        if self.dimensions is None:
            return [(0, j) for j in range(p * k // self.npartitions, (p + 1) * k // self.npartitions)]
        want = []
        rest = p
        for _, n in reversed(self._kept):
            want.append(rest % n)
            rest //= n
        want.reverse()
        kept = dict(zip((i for i, _ in self._kept), want))
        out = []
        for j in range(k):
            idx, rest = [], j
            for n in reversed(self._sizes):
                idx.append(rest % n)
                rest //= n
            idx.reverse()
            if all(idx[i] == v for i, v in kept.items()):
                out.append((0, j))
        return out

    def output_schema(self) -> Any:
        return self.input_schemas()[0]


class LimitNode(DataNode):
    """At most `limit` rows of the input, in partition order, as one partition (reads no more than needed)."""

    kind = "limit"
    gathers = True
    reads_any_format = True

    def __init__(self, ctx: Context, inputs: Inputs, limit: int, name: Optional[str] = None, version: str = "",
                 **options: Any) -> None:
        label = name or options.get("output_name") or "limit"
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise PlanError(f"node {label!r}: limit must be a whole number >= 0, got {limit!r}")
        self.limit = limit
        super().__init__(ctx, inputs, 1, name, version, **options)

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

