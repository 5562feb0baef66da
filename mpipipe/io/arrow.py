"""Parquet files to and from Arrow, with smallpond's helper names.

`RowRange` names a run of rows of one file; the loaders take paths or row
ranges, read the files in threads and make string columns of different widths
(`string` in one file, `large_string` in another) agree, so files written by
different tools load as one table.
"""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from mpipipe.errors import PlanError
from mpipipe.io.common import (DEFAULT_BATCH_SIZE, DEFAULT_ROW_GROUP_BYTES, DEFAULT_ROW_GROUP_SIZE,
                               MAX_PARQUET_FILE_BYTES)


class ColumnNotFound(PlanError, AssertionError):
    """A column asked for is in none of the files (an AssertionError too, as smallpond raised one)."""


@dataclass
class RowRange:
    """Rows [begin, end) of one Parquet file; `data_size` is the file's uncompressed size, for estimates."""

    path: str
    data_size: int
    file_num_rows: int
    begin: int
    end: int

    @property
    def num_rows(self) -> int:
        return self.end - self.begin

    @property
    def estimated_data_size(self) -> int:
        """This range's share of the file's uncompressed size."""
        if self.file_num_rows <= 0:
            return 0
        return self.data_size * self.num_rows // self.file_num_rows

    @property
    def whole_file(self) -> bool:
        return self.begin == 0 and self.end == self.file_num_rows

    def take(self, num_rows: int) -> "RowRange":
        """Split off the first `num_rows` rows as a new range; this range keeps the rest."""
        n = max(0, min(num_rows, self.num_rows))
        head = copy.copy(self)
        head.end = self.begin + n
        self.begin += n
        return head

    @staticmethod
    def of_file(path: str) -> "RowRange":
        md = pq.read_metadata(path)
        size = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        return RowRange(path, size, md.num_rows, 0, md.num_rows)

    @staticmethod
    def partition_by_rows(row_ranges: Sequence["RowRange"], npartition: int) -> List[List["RowRange"]]:
        """`npartition` lists of ranges holding as even a share of the rows as can be (sizes differ by at most
        one row, larger shares first); the given ranges are left as they are."""
        if npartition < 1:
            raise PlanError(f"npartition must be >= 1, got {npartition}")
        pending = [copy.copy(r) for r in row_ranges if r.num_rows > 0]
        total = sum(r.num_rows for r in pending)
        base, extra = divmod(total, npartition)
        out: List[List[RowRange]] = []
        i = 0
        for p in range(npartition):
            want = base + (1 if p < extra else 0)
            part: List[RowRange] = []
            while want > 0:
                head = pending[i].take(want)
                part.append(head)
                want -= head.num_rows
                if pending[i].num_rows == 0:
                    i += 1
            out.append(part)
        return out


PathOrRange = Union[str, RowRange]


def _large(t: pa.DataType) -> pa.DataType:
    """The same type with every string/binary (also nested) in its 64-bit-offset form."""
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.large_list(pa.field(t.value_field.name, _large(t.value_type), t.value_field.nullable))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _large(f.type), f.nullable, f.metadata) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_large(t.key_type), _large(t.item_type))
    return t


def convert_types_to_large_string(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _large(f.type), f.nullable, f.metadata) for f in schema], schema.metadata)


def cast_columns_to_large_string(table: pa.Table) -> pa.Table:
    """Every string/binary column (nested ones too) as large_string/large_binary: tables from different files
    then concatenate and compare."""
    target = convert_types_to_large_string(table.schema)
    return table if target.equals(table.schema) else table.cast(target)


def _path(x: PathOrRange) -> str:
    return x.path if isinstance(x, RowRange) else os.fspath(x)


def _check_columns(schema: pa.Schema, columns: Optional[Sequence[str]], path: str) -> None:
    missing = [c for c in columns or () if c not in schema.names]
    if missing:
        raise ColumnNotFound(f"column(s) {missing} not found in {path} (its columns: {schema.names}); "
                             "ask for columns the files have")


def _read_one(x: PathOrRange, columns: Optional[Sequence[str]], filesystem: Any = None) -> pa.Table:
    path = _path(x)
    pf = pq.ParquetFile(path, filesystem=filesystem) if filesystem is not None else pq.ParquetFile(path)
    _check_columns(pf.schema_arrow, columns, path)
    cols = list(columns) if columns else None
    if not isinstance(x, RowRange) or (x.begin == 0 and x.end >= pf.metadata.num_rows):
        return pf.read(columns=cols, use_threads=False)
    # only the row groups that overlap the range, then the exact slice
    md = pf.metadata
    groups, offset, first = [], 0, None
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if offset + n > x.begin and offset < x.end:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table().select(cols) if cols else pf.schema_arrow.empty_table()
    table = pf.read_row_groups(groups, columns=cols, use_threads=False)
    return table.slice(x.begin - (first or 0), x.num_rows)


def _unify(tables: List[pa.Table]) -> List[pa.Table]:
    """Tables whose string widths differ are all made large, so they concatenate."""
    if len({t.schema.remove_metadata() for t in tables}) <= 1:
        return tables
    return [cast_columns_to_large_string(t) for t in tables]


def load_from_parquet_files(paths_or_ranges: Sequence[PathOrRange], columns: Optional[Sequence[str]] = None,
                            max_workers: int = 16, filesystem: Any = None) -> pa.Table:
    """One table of the files (or row ranges), in order, with the first file's schema metadata."""
    items = list(paths_or_ranges)
    if not items:
        return pa.table({})
    workers = max(1, min(max_workers, len(items)))
    if workers == 1:
        tables = [_read_one(x, columns, filesystem) for x in items]
    else:
        with ThreadPoolExecutor(workers) as pool:
            tables = list(pool.map(lambda x: _read_one(x, columns, filesystem), items))
    metadata = tables[0].schema.metadata
    tables = _unify(tables)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if columns:
        table = table.select(list(columns))
    return table.replace_schema_metadata(metadata)


def _schema_of(x: PathOrRange, columns: Optional[Sequence[str]], filesystem: Any) -> pa.Schema:
    path = _path(x)
    schema = pq.read_schema(path, filesystem=filesystem) if filesystem is not None else pq.read_schema(path)
    _check_columns(schema, columns, path)
    return pa.schema([schema.field(c) for c in columns], schema.metadata) if columns else schema


def _iter_batches(items: Sequence[PathOrRange], schema: pa.Schema, columns: Optional[Sequence[str]],
                  batch_size: int, max_batch_byte_size: Optional[int], filesystem: Any) -> Iterator[pa.RecordBatch]:
    for x in items:
        path = _path(x)
        pf = pq.ParquetFile(path, filesystem=filesystem) if filesystem is not None else pq.ParquetFile(path)
        begin, end = (x.begin, x.end) if isinstance(x, RowRange) else (0, pf.metadata.num_rows)
        offset = 0
        size = batch_size
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None,
                                     use_threads=False):
            lo, hi = max(begin - offset, 0), min(end - offset, batch.num_rows)
            offset += batch.num_rows
            if hi <= lo:
                if offset >= end:
                    break
                continue
            part = batch.slice(lo, hi - lo)
            if max_batch_byte_size and part.nbytes > max_batch_byte_size and part.num_rows > 1:
                size = max(1, part.num_rows * max_batch_byte_size // part.nbytes)
            for start in range(0, part.num_rows, size):
                piece = part.slice(start, size)
                yield pa.RecordBatch.from_arrays(
                    [piece.column(i).cast(schema.field(i).type) if piece.schema.field(i).type != schema.field(i).type
                     else piece.column(i) for i in range(piece.num_columns)], schema=schema)
            if offset >= end:
                break


def build_batch_reader_from_files(paths_or_ranges: Sequence[PathOrRange], *, columns: Optional[Sequence[str]] = None,
                                  batch_size: int = DEFAULT_BATCH_SIZE, max_batch_byte_size: Optional[int] = None,
                                  filesystem: Any = None) -> pa.RecordBatchReader:
    """A reader of the files' (or ranges') rows in batches of at most `batch_size` rows (and, when given, about
    `max_batch_byte_size` bytes); string widths are made to agree across files."""
    items = list(paths_or_ranges)
    if not items:
        return pa.RecordBatchReader.from_batches(pa.schema([]), iter(()))
    schemas = [_schema_of(x, columns, filesystem) for x in items]
    first = schemas[0]
    if any(not s.remove_metadata().equals(first.remove_metadata()) for s in schemas[1:]):
        first = convert_types_to_large_string(first)
    return pa.RecordBatchReader.from_batches(
        first, _iter_batches(items, first, columns, batch_size, max_batch_byte_size, filesystem))


def parquet_write_table(table: pa.Table, where: Any, filesystem: Any = None, **options: Any) -> None:
    pq.write_table(table, where, filesystem=filesystem, **options)


def dump_to_parquet_files(table: pa.Table, output_dir: str, filename: str = "data", compression: str = "ZSTD",
                          compression_level: int = 3, row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
                          row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES, use_dictionary: bool = False,
                          max_workers: int = 16, filesystem: Any = None) -> bool:
    """Write `table` as `{filename}-{i}.parquet` files in `output_dir` (files of at most about 8 GiB; an empty
    table still gives one file with its schema). Returns True, as smallpond's did."""
    if filesystem is None:
        os.makedirs(output_dir, exist_ok=True)
    rows_per_group = max(1, min(row_group_size, row_group_bytes * max(1, table.num_rows)
                                // max(1, table.nbytes))) if table.num_rows else row_group_size
    rows_per_file = max(rows_per_group, table.num_rows * MAX_PARQUET_FILE_BYTES // max(1, table.nbytes)) \
        if table.num_rows else 1
    starts = list(range(0, table.num_rows, rows_per_file)) or [0]

    def write(i_start: Any) -> None:
        i, start = i_start
        part = table.slice(start, rows_per_file)
        path = os.path.join(output_dir, f"{filename}-{i}.parquet")
        level = compression_level if compression and compression.upper() in ("ZSTD", "GZIP", "BROTLI") else None
        parquet_write_table(part, path, filesystem, row_group_size=rows_per_group, compression=compression,
                            compression_level=level, use_dictionary=use_dictionary)

    workers = max(1, min(max_workers, len(starts)))
    if workers == 1:
        for item in enumerate(starts):
            write(item)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(write, enumerate(starts)))
    return True


__all__ = ["RowRange", "build_batch_reader_from_files", "cast_columns_to_large_string", "convert_types_to_large_string",
           "dump_to_parquet_files", "load_from_parquet_files", "parquet_write_table", "ColumnNotFound"]
