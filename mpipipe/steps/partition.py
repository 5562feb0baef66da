"""Partitioning bodies: even zero-copy splits, and bucketing by SQL expression or by a function."""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from mpipipe.data.fragment import Fragment
from mpipipe.steps import ipcfile
from mpipipe.steps.partio import (BUCKET_COLUMN, DataError, PartitionData, _parquet_file, _quote, bucket_dir,
                                  fill_empty_buckets, nullable_schema, write_table)


def _bounds(total: int, n: int, p: int) -> Tuple[int, int]:
    """Partition p of n over `total` items: contiguous, sizes differ by at most one."""
    return p * total // n, (p + 1) * total // n


def even_split(frags: Sequence[Fragment], n: int, p: int, mode: str) -> List[Fragment]:
    if mode == "files":
        lo, hi = _bounds(len(frags), n, p)
        return list(frags[lo:hi])
    if mode == "row_groups":
        return _split_row_groups(frags, n, p)
    return _split_rows(frags, n, p)


def _require_parquet(frag: Fragment, mode: str) -> None:
    if frag.format != "parquet":
        raise DataError(f"splitting by {mode} needs Parquet files, but {frag.path} is {frag.format}; split by files")


def _split_row_groups(frags: Sequence[Fragment], n: int, p: int) -> List[Fragment]:
    units: List[Tuple[Fragment, Optional[int]]] = []  # (fragment, row group) or (fragment, None) for a row slice
    for f in frags:
        _require_parquet(f, "row groups")
        if f.rows is not None:
            units.append((f, None))
            continue
        groups = f.row_groups if f.row_groups is not None else range(_parquet_file(f.path).metadata.num_row_groups)
        units.extend((f, g) for g in groups)
    lo, hi = _bounds(len(units), n, p)
    out: List[Fragment] = []
    for f, g in units[lo:hi]:
        if g is None:
            out.append(f)
        elif out and out[-1].path == f.path and out[-1].row_groups is not None and out[-1].rows is None:
            out[-1] = Fragment(f.path, f.format, out[-1].row_groups + (g,), None, f.options)
        else:
            out.append(Fragment(f.path, f.format, (g,), None, f.options))
    return out


def _file_rows(f: Fragment) -> Tuple[int, int]:
    """The row range a fragment covers within its file (row-group fragments are made into ranges when contiguous)."""
    if f.rows is not None:
        return f.rows
    md = _parquet_file(f.path).metadata
    if f.row_groups is None:
        return 0, md.num_rows
    starts, off = [], 0
    for i in range(md.num_row_groups):
        starts.append(off)
        off += md.row_group(i).num_rows
    groups = sorted(f.row_groups)
    if groups != list(range(groups[0], groups[-1] + 1)):
        raise DataError(f"cannot split {f.path} by rows: its fragment has non-contiguous row groups")
    first = starts[groups[0]]
    return first, first + sum(md.row_group(i).num_rows for i in groups)


def _split_rows(frags: Sequence[Fragment], n: int, p: int) -> List[Fragment]:
    ranges = []
    for f in frags:
        _require_parquet(f, "rows")
        ranges.append((f, _file_rows(f)))
    total = sum(b - a for _, (a, b) in ranges)
    lo, hi = _bounds(total, n, p)
    out, offset = [], 0
    for f, (a, b) in ranges:
        size = b - a
        s, e = max(lo, offset), min(hi, offset + size)
        if s < e:
            out.append(Fragment(f.path, f.format, None, (a + s - offset, a + e - offset), f.options))
        offset += size
    return out


SLICE_VIEW = "__mpipipe_in"  # the view of a bucketing task's input that its select reads


def bucket_with_sql(task: Any, data: PartitionData, bucket_sql: str, nbuckets: int,
                    partition_column: Optional[str], threads: int, memory: Optional[int], check: bool = True,
                    select: Union[str, Callable[[Any], str]] = f"SELECT * FROM {SLICE_VIEW}",
                    fmt: str = "parquet") -> None:
    """DuckDB computes each row of `select` its bucket and writes one folder per bucket (`check`: first make
    sure every bucket is in 0..nbuckets-1, an extra pass over the rows that a hash bucket does not need).
    `select` reads the task's input as SLICE_VIEW (a partial aggregate's rows, say), or is a function of
    the connection that holds that view and returns the query. `fmt`: the files' form, "parquet" (DuckDB
    writes them) or "arrow" (Arrow IPC files, see mpipipe.steps.ipcfile)."""
    from mpipipe.steps.sql import connect, copy_partitioned

    out = task.output_dir
    con = connect(threads, memory, os.path.join(out, ".tmp"))
    try:
        data.duckdb_source(con, SLICE_VIEW)
        if callable(select):
            select = select(con)
        extra: Tuple[str, ...] = (f"{bucket_sql} AS {_quote(partition_column)}",) if partition_column else ()
        bad, key = (con.sql(f"SELECT count(*), max(b) FROM (SELECT {bucket_sql} AS b FROM ({select})) "
                            f"WHERE b IS NULL OR b < 0 OR b >= {nbuckets}").fetchall()[0] if check else (0, None))
        if bad:
            shown = "NULL (or not a whole number)" if key is None else key
            raise DataError(f"partition key {shown} is out of range 0-{nbuckets - 1}: {bad} row(s) have a partition "
                            f"number outside 0..{nbuckets - 1}, not a whole number, or NULL; fix the partition "
                            "column or the number of partitions")
        if fmt == ipcfile.FORMAT:
            _split_to_ipc(con, select, bucket_sql, out, extra, nbuckets)
            return
        copy_partitioned(con, select, bucket_sql, out, extra)
        schema = con.sql(f"SELECT *{''.join(', ' + x for x in extra)} FROM ({select}) LIMIT 0").to_arrow_table().schema
    finally:
        con.close()
        _remove_tmp(out)
    fill_empty_buckets(out, nbuckets, schema)


def _split_to_ipc(con: Any, select: str, bucket_sql: str, out: str, extra: Tuple[str, ...], nbuckets: int) -> None:
    """DuckDB streams the rows with their bucket; each batch is split by bucket into that bucket's IPC file."""
    cols = ", ".join(("*",) + extra + (f"{bucket_sql} AS {BUCKET_COLUMN}",))
    # types Arrow has no plain form of travel as extension types (a UUID stays a UUID, not text), so the
    # reduce side's DuckDB sees the types a Parquet bucket would have given it
    con.execute("SET arrow_lossless_conversion = true")
    reader = con.sql(f"SELECT {cols} FROM ({select})").to_arrow_reader(ipcfile.BATCH_ROWS)
    last = len(reader.schema) - 1
    files = ipcfile.BucketFiles(lambda b: bucket_dir(out, b), nullable_schema(reader.schema.remove(last)))
    try:
        for batch in reader:
            files.write_split(batch.drop_columns([BUCKET_COLUMN]), batch.column(last), nbuckets)
        files.close(nbuckets)
    except BaseException:
        files.abort()
        raise


def _remove_tmp(out: str) -> None:
    import shutil

    shutil.rmtree(os.path.join(out, ".tmp"), ignore_errors=True)


def bucket_with_function(task: Any, data: PartitionData, fn: Callable[[pa.Table], Any], nbuckets: int,
                         fmt: str = "parquet") -> None:
    """The user's function gives each row its bucket; rows are grouped by a stable sort (`fmt` as in
    bucket_with_sql)."""
    import numpy as np

    table = data.to_arrow()
    raw = fn(table)
    idx = np.asarray(raw.to_numpy(zero_copy_only=False) if hasattr(raw, "to_numpy") else raw)
    if idx.shape != (table.num_rows,):
        raise ValueError(f"partition_fn returned {idx.shape[0] if idx.ndim else 'a scalar'} value(s) "
                         f"for {table.num_rows} rows; return one partition number per row")
    if table.num_rows and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= nbuckets):
        raise ValueError(f"partition_fn must return whole numbers in 0..{nbuckets - 1}")
    if fmt == ipcfile.FORMAT:
        files = ipcfile.BucketFiles(lambda b: bucket_dir(task.output_dir, b), nullable_schema(table.schema))
        files.write_split(table, pa.array(idx), nbuckets)
        files.close(nbuckets)
        return
    order = np.argsort(idx, kind="stable")
    counts = np.bincount(idx, minlength=nbuckets) if table.num_rows else np.zeros(nbuckets, dtype=np.int64)
    ordered = table.take(pa.array(order)) if table.num_rows else table
    start = 0
    for b in range(nbuckets):
        k = int(counts[b])
        if k:
            write_table(ordered.slice(start, k), bucket_dir(task.output_dir, b), "data_0.parquet")
        start += k
    fill_empty_buckets(task.output_dir, nbuckets, table.schema)

