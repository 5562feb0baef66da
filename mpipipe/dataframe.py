"""The lazy DataFrame API: each method adds a node; actions run the plan built so far.

Methods build the same nodes as the low-level API, in the session's Context,
so a DataFrame program and a hand-built plan share one runtime. Nothing runs
until an action (`count`, `take`, `to_arrow`, `write_parquet`, ...); every
action runs in the session's job directory, so partitions an earlier action
computed are taken from the journal instead of being computed again.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from mpipipe.errors import PlanError
from mpipipe.logical import bucketing as B
from mpipipe.logical import datanode as D
from mpipipe.logical import transform as T
from mpipipe.logical.dataset import CsvDataSet, JsonDataSet, ParquetDataSet, dataset_for
from mpipipe.logical.plan import Context, LogicalPlan, Node
from mpipipe.logical.sink import DataSinkNode

SqlOrFunction = Union[str, Callable[..., Any]]


def _row_apply(fn: Callable[[Dict[str, Any]], Any], mode: str, schema: Any) -> Callable[[Any, List[Any]], Any]:
    """An Arrow body that applies a row function: map (row -> row), filter (row -> bool), flat_map (row -> rows)."""

    def body(_ctx: Any, tables: List[Any]) -> Any:
        import pyarrow as pa

        table = tables[0]
        rows = table.to_pylist()
        if mode == "filter":
            keep = [bool(fn(r)) for r in rows]
            return table.filter(pa.array(keep, pa.bool_())) if rows else table
        if mode == "map":
            out = [fn(r) for r in rows]
        else:
            out = [x for r in rows for x in fn(r)]
        if not out:
            return schema.empty_table() if schema is not None else table.schema.empty_table()
        return pa.Table.from_pylist(out, schema=schema)

    body.__name__ = f"{mode}_{getattr(fn, '__name__', 'fn')}"
    body.__qualname__ = body.__name__
    body._mpipipe_wraps = (fn, f"{mode}|{schema}")  # type: ignore[attr-defined]
    return body


def exact_batches(batches: Any, size: int) -> Any:
    """Tables of exactly `size` rows (the last one may be shorter) from batches of any sizes, so a file or
    row-group boundary never cuts a batch short."""
    import pyarrow as pa

    pending: List[Any] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == size:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def _batches_apply(fn: Callable[[Any], Any], batch_size: int) -> Callable[[Any, List[Any]], Any]:
    def body(_ctx: Any, readers: List[Any]) -> Any:
        for table in exact_batches(readers[0], batch_size):
            yield fn(table)

    body.__name__ = f"map_batches_{getattr(fn, '__name__', 'fn')}"
    body._mpipipe_wraps = (fn, f"map_batches|{batch_size}")  # type: ignore[attr-defined]
    return body


class DataFrame:
    """A lazy, partitioned table. Build with the session's read_*/from_* methods."""

    def __init__(self, session: "Any", node: Node) -> None:
        self.session = session
        self.node = node

    @property
    def ctx(self) -> Context:
        return self.session.ctx

    @property
    def npartitions(self) -> int:
        return D.num_outputs(self.node)

    def _new(self, node: Node) -> "DataFrame":
        return DataFrame(self.session, node)

    def __repr__(self) -> str:
        return f"<DataFrame {self.node.name}: {self.npartitions} partition(s)>"

    def explain(self) -> str:
        return LogicalPlan(self.ctx, self.node).explain()

    # --- transformations (lazy) -----------------------------------------------------

    def repartition(self, npartitions: int, hash_by: Union[str, Sequence[str], None] = None,
                    by: Optional[str] = None, by_rows: bool = False, **options: Any) -> "DataFrame":
        """Into `npartitions`: by hash of columns, by an integer column's value, or evenly (files, or rows)."""
        if hash_by is not None and by is not None:
            raise PlanError("repartition: give hash_by or by, not both")
        if hash_by is not None:
            return self._new(B.HashPartitionNode(self.ctx, self.node, npartitions, hash_columns=hash_by, **options))
        if by is not None:
            return self._new(B.ColumnPartitionNode(self.ctx, self.node, npartitions, by, **options))
        return self._new(D.DataSetPartitionNode(self.ctx, self.node, npartitions,
                                                partition_by="rows" if by_rows else "files", **options))

    def random_shuffle(self, npartitions: Optional[int] = None, **options: Any) -> "DataFrame":
        """Rows spread at random over `npartitions` (default: the current count)."""
        n = npartitions or self.npartitions
        return self._new(B.HashPartitionNode(self.ctx, self.node, n, random_shuffle=True, name="random_shuffle",
                                             **options))

    def map(self, sql_or_func: SqlOrFunction, *, schema: Any = None, **options: Any) -> "DataFrame":
        """A SQL select list ("a + b AS c, d") or a function row -> row (a dict)."""
        if isinstance(sql_or_func, str):
            return self._sql(f"SELECT {sql_or_func} FROM {{0}}", "map", options)
        return self._rows(sql_or_func, "map", schema, options)

    def filter(self, sql_or_func: SqlOrFunction, **options: Any) -> "DataFrame":
        """A SQL condition ("a > 1") or a function row -> bool."""
        if isinstance(sql_or_func, str):
            return self._sql(f"SELECT * FROM {{0}} WHERE {sql_or_func}", "filter", options)
        return self._rows(sql_or_func, "filter", None, options)

    def flat_map(self, sql_or_func: SqlOrFunction, *, schema: Any = None, **options: Any) -> "DataFrame":
        """A SQL select list that unnests ("unnest(tags) AS tag") or a function row -> list of rows."""
        if isinstance(sql_or_func, str):
            return self._sql(f"SELECT {sql_or_func} FROM {{0}}", "flat_map", options)
        return self._rows(sql_or_func, "flat_map", schema, options)

    def map_batches(self, func: Callable[[Any], Any], *, batch_size: int = 122880, schema: Any = None,
                    **options: Any) -> "DataFrame":
        """func(pyarrow.Table) -> table, streamed over batches of exactly `batch_size` rows (the last of each
        partition may be shorter), whatever the files' row groups."""
        if not callable(func):
            raise PlanError(f"map_batches needs a function, got {type(func).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PlanError(f"map_batches: batch_size must be a whole number >= 1, got {batch_size!r}")
        # the stream checkpoints between input batches; a batch of ours may span several, so it checkpoints
        # only at the end (a retry runs the partition again)
        node = T.ArrowStreamNode(self.ctx, self.node, _batches_apply(func, batch_size),
                                 name=options.pop("name", "map_batches"), batch_size=batch_size,
                                 output_schema=schema, checkpoint=False, **options)
        return self._new(node)

    def partial_sort(self, by: Union[str, Sequence[str]], **options: Any) -> "DataFrame":
        """Sort each partition by the given columns (combine with repartition for a global order)."""
        cols = [by] if isinstance(by, str) else list(by)
        if not cols:
            raise PlanError("partial_sort: give at least one column")
        return self._sql(f"SELECT * FROM {{0}} ORDER BY {', '.join(cols)}", "partial_sort", options)

    def limit(self, n: int) -> "DataFrame":
        """At most n rows, as one partition."""
        return self._new(T.LimitNode(self.ctx, self.node, n))

    def _sql(self, query: str, name: str, options: Dict[str, Any]) -> "DataFrame":
        return self._new(T.SqlEngineNode(self.ctx, self.node, query, name=options.pop("name", name), **options))

    def _rows(self, fn: Any, mode: str, schema: Any, options: Dict[str, Any]) -> "DataFrame":
        if not callable(fn):
            raise PlanError(f"{mode} needs a SQL string or a function, got {type(fn).__name__}")
        body = _row_apply(fn, mode, schema)
        return self._new(T.ArrowComputeNode(self.ctx, self.node, body, name=options.pop("name", mode),
                                            output_schema=schema, **options))

    # --- actions (run the plan) -------------------------------------------------------------

    def _run(self, node: Optional[Node] = None) -> Any:
        """Run the plan up to `node`; a failure raises here, at the action (as smallpond's did)."""
        plan = LogicalPlan(self.ctx, node or self.node)
        execute = getattr(self.session, "execute", None)
        return execute(plan) if execute is not None else self.session.run(plan)

    def _data(self) -> Any:
        from mpipipe.steps.partio import PartitionData

        result = self._run()
        folders = result.outputs(self.node.name)
        if D.is_bucketed(self.node):
            # partition order is bucket order: bucket 0 of every task, then bucket 1, ... (as limit reads it),
            # not each task's buckets in turn
            folders = [f for j in range(self.npartitions) for f in D.bucket_folders(self.node, folders, j)]
        return PartitionData.from_folders(folders)

    def to_arrow(self) -> Any:
        """All rows as one pyarrow.Table, in partition order."""
        return self._data().to_arrow()

    def to_pandas(self) -> Any:
        """All rows as a pandas DataFrame; integer and boolean columns have pandas' nullable dtypes (Int64,
        boolean), so a column's dtype does not depend on whether it holds a null."""
        return self._data().to_pandas()

    def take_all(self) -> List[Dict[str, Any]]:
        return self.to_arrow().to_pylist()

    def take(self, n: int) -> List[Dict[str, Any]]:
        """The first n rows as dicts (reads no more partitions than needed)."""
        return self.limit(n).take_all()

    def count(self) -> int:
        return self._data().num_rows()

    def write_parquet(self, path: str, type: str = "copy") -> None:
        """Write every partition as Parquet files into `path` (a folder, or an object-store URI)."""
        self._run(self.write_parquet_lazy(path, type).node)

    def write_parquet_lazy(self, path: str, type: str = "copy") -> "DataFrame":
        """The DataFrame that writes into `path` when an action (compute(), ...) runs it."""
        return self._new(DataSinkNode(self.ctx, self.node, path, type=type, name=f"write_{self.node.name}"))

    def compute(self) -> None:
        """Run the plan up to here (later actions read the results back from the journal)."""
        self._run()
        self._computed = True

    def is_computed(self) -> bool:
        return bool(getattr(self, "_computed", False))


class DataFrameSession:
    """The read_*/from_*/partial_sql methods of a Session."""

    ctx: Context

    def read_parquet(self, paths: Union[str, Sequence[str]], **options: Any) -> DataFrame:
        return self._source(ParquetDataSet(paths, **options), "read_parquet")

    def read_csv(self, paths: Union[str, Sequence[str]], schema: Any = None, **options: Any) -> DataFrame:
        """CSV/TSV files. The first row is a header unless the columns are given (`schema=` as a
        pyarrow.Schema or {name: type}, `columns=`, `names=`); `header=` says otherwise. Other options go to
        DuckDB's read_csv."""
        return self._source(CsvDataSet(paths, schema=schema, **options), "read_csv")

    def read_json(self, paths: Union[str, Sequence[str]], schema: Any = None, **options: Any) -> DataFrame:
        """Newline-delimited JSON; without `schema=`, keys and types come from every record."""
        return self._source(JsonDataSet(paths, schema=schema, **options), "read_json")

    def from_arrow(self, table: Any) -> DataFrame:
        return self._source(dataset_for(table), "from_arrow")

    def from_pandas(self, df: Any) -> DataFrame:
        return self._source(dataset_for(df), "from_pandas")

    def from_items(self, items: Sequence[Any]) -> DataFrame:
        """Rows as dicts, or plain values (they become a column named `item`)."""
        return self._source(dataset_for(list(items)), "from_items")

    def partial_sql(self, query: str, *inputs: DataFrame, **options: Any) -> DataFrame:
        """Run `query` on each partition; inputs are {0}, {1}, ... in the order given."""
        for df in inputs:
            if not isinstance(df, DataFrame):
                raise PlanError(f"partial_sql inputs must be DataFrames, got {type(df).__name__}")
        node = T.SqlEngineNode(self.ctx, [df.node for df in inputs], query,
                               name=options.pop("name", "partial_sql"), **options)
        return DataFrame(self, node)

    def wait(self, *dfs: DataFrame) -> None:
        """Run the plans of the given DataFrames (smallpond's Session.wait)."""
        for df in dfs:
            df.compute()

    def _source(self, dataset: Any, name: str) -> DataFrame:
        return DataFrame(self, D.DataSourceNode(self.ctx, dataset, name=name))



# smallpond's `dataframe.Session`: every mpipipe Session (mpipipe.init()'s) is one of these
Session = DataFrameSession
