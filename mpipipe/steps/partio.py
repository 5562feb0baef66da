"""Reading and writing one partition of data, inside a task.

A partition's output is a folder holding either Parquet files, a manifest
(`_dataset.json`) that points at fragments of other files (sources and
zero-copy splits), or one sub-folder per bucket (hash and user partitioning).
Every partition holds at least one file that carries the schema, so empty
partitions read as empty tables, never as errors.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from mpipipe.errors import PlanError
from mpipipe.logical.dataset import Fragment, is_uri

MANIFEST = "_dataset.json"
BUCKET_COLUMN = "__mpipipe_bucket"


def bucket_dir(output: str, bucket: int) -> str:
    """Where bucket `bucket` of a partitioning task's output lives (DuckDB's hive naming)."""
    return os.path.join(output, f"{BUCKET_COLUMN}={bucket}")


class DataError(Exception):
    """A data file could not be read; the message names the file."""


def _open(path: str) -> Any:
    """(filesystem, path) for pyarrow: None for local paths."""
    if is_uri(path) and not path.startswith("file://"):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(path)
    return None, path[len("file://"):] if path.startswith("file://") else path


def _parquet_file(path: str) -> pq.ParquetFile:
    fs, p = _open(path)
    try:
        return pq.ParquetFile(fs.open_input_file(p) if fs is not None else p)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read Parquet file {path}: {e}") from None


def _duck_reader(fmt: str, paths: Sequence[str], options: Sequence[Any]) -> str:
    """A DuckDB table function call reading local files in one format."""
    lst = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    opts = "".join(f", {k} = {_sql_literal(v)}" for k, v in options)
    if not any(k == "hive_partitioning" for k, _ in options):
        # DuckDB would otherwise turn folder names like `__mpipipe_bucket=3/` (our bucket folders,
        # or a user's `year=2024/`) into extra columns that the Arrow readers and the plan's schemas lack
        opts += ", hive_partitioning = false"
    if fmt == "csv":
        return f"read_csv({lst}{opts})"
    if fmt == "json":
        if not any(k == "format" for k, _ in options):
            opts += ", format = 'newline_delimited'"
        return f"read_json({lst}{opts})"
    return f"read_parquet({lst}{opts})"


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"'{k}': {_sql_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_sql_literal(x) for x in v) + "]"
    return "'" + str(v).replace("'", "''") + "'"


def read_fragment(frag: Fragment, columns: Optional[List[str]] = None) -> pa.Table:
    """One fragment as an Arrow table (errors name the file)."""
    try:
        if frag.format == "parquet":
            pf = _parquet_file(frag.path)
            if frag.rows is not None:
                return _read_rows(pf, frag.rows, columns)
            if frag.row_groups is not None:
                return pf.read_row_groups(list(frag.row_groups), columns=columns)
            return pf.read(columns=columns)
        return _read_text(frag, columns)
    except DataError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read {frag.format} file {frag.path}: {e}") from None


def _read_rows(pf: pq.ParquetFile, rows: Sequence[int], columns: Optional[List[str]]) -> pa.Table:
    start, stop = rows
    groups, offset, first = [], 0, None
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if offset + n > start and offset < stop:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table().select(columns) if columns else pf.schema_arrow.empty_table()
    t = pf.read_row_groups(groups, columns=columns)
    return t.slice(start - (first or 0), stop - start)


def _read_text(frag: Fragment, columns: Optional[List[str]]) -> pa.Table:
    fs, p = _open(frag.path)
    if fs is None:
        import duckdb

        con = duckdb.connect()
        try:
            sel = ", ".join(_quote(c) for c in columns) if columns else "*"
            return con.sql(f"SELECT {sel} FROM {_duck_reader(frag.format, [p], frag.options)}").to_arrow_table()
        except duckdb.Error as e:
            raise DataError(f"cannot read {frag.format} file {frag.path}: {e}") from None
        finally:
            con.close()
    with fs.open_input_stream(p) as f:
        if frag.format == "csv":
            import pyarrow.csv as pcsv

            t = pcsv.read_csv(f)
        else:
            import pyarrow.json as pjson

            t = pjson.read_json(f)
    return t.select(columns) if columns else t


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fragment_schema(frag: Fragment) -> pa.Schema:
    if frag.format == "parquet":
        return _parquet_file(frag.path).schema_arrow
    fs, _ = _open(frag.path)
    if fs is None:
        import duckdb

        con = duckdb.connect()
        try:
            rel = con.sql(f"SELECT * FROM {_duck_reader(frag.format, [_open(frag.path)[1]], frag.options)} LIMIT 0")
            return rel.to_arrow_table().schema
        except duckdb.Error as e:
            raise DataError(f"cannot read {frag.format} file {frag.path}: {e}") from None
        finally:
            con.close()
    return read_fragment(frag).schema


def fragment_rows(frag: Fragment) -> int:
    if frag.rows is not None:
        return frag.rows[1] - frag.rows[0]
    if frag.format != "parquet":
        return read_fragment(frag).num_rows
    md = _parquet_file(frag.path).metadata
    if frag.row_groups is not None:
        return sum(md.row_group(i).num_rows for i in frag.row_groups)
    return md.num_rows


# --- partition folders -------------------------------------------------------------------

def _data_files(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith(".parquet") and not f.startswith((".", "_")))


def folder_fragments(folder: str) -> List[Fragment]:
    """The fragments a partition folder holds: manifest entries, Parquet files, or every bucket's files."""
    manifest = os.path.join(folder, MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            return [Fragment.from_json(d) for d in json.load(f)["fragments"]]
    if not os.path.isdir(folder):
        raise DataError(f"partition folder {folder} is missing; run the job with --fresh to recompute it")
    frags = [Fragment(p) for p in _data_files(folder)]
    buckets = sorted((d for d in os.listdir(folder) if d.startswith(BUCKET_COLUMN + "=")),
                     key=lambda d: int(d.split("=", 1)[1]))
    for b in buckets:
        frags.extend(Fragment(p) for p in _data_files(os.path.join(folder, b)))
    return frags


class PartitionData:
    """The data one task reads from one input: a list of fragments, read the way the step wants."""

    def __init__(self, fragments: List[Fragment], schema: Optional[pa.Schema] = None) -> None:
        self.fragments = fragments
        self._schema = schema

    @classmethod
    def from_folders(cls, folders: Sequence[str]) -> "PartitionData":
        frags: List[Fragment] = []
        for f in folders:
            frags.extend(folder_fragments(f))
        return cls(frags)

    @property
    def paths(self) -> List[str]:
        return [f.path for f in self.fragments]

    def schema(self) -> pa.Schema:
        if self._schema is None:
            if not self.fragments:
                raise DataError("an input has no files at all; it was produced by an older version of the plan")
            self._schema = fragment_schema(self.fragments[0])
        return self._schema

    def num_rows(self) -> int:
        return sum(fragment_rows(f) for f in self.fragments)

    def to_arrow(self, columns: Optional[List[str]] = None) -> pa.Table:
        tables = [read_fragment(f, columns) for f in self.fragments]
        if not tables:
            return self.schema().empty_table()
        try:
            return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        except pa.ArrowInvalid as e:
            raise DataError(f"the files of one input have different schemas ({e}); first file: {self.fragments[0].path}") from None

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def batches(self, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        """Record batches in order, one fragment at a time (memory stays at one row group or so)."""
        for frag in self.fragments:
            if frag.format == "parquet" and frag.whole:
                pf = _parquet_file(frag.path)
                try:
                    yield from pf.iter_batches(batch_size=batch_size)
                except (OSError, pa.ArrowException) as e:
                    raise DataError(f"cannot read Parquet file {frag.path}: {e}") from None
            else:
                yield from read_fragment(frag).to_batches(max_chunksize=batch_size)

    def reader(self, batch_size: int = 65536) -> pa.RecordBatchReader:
        schema = nullable_schema(self.schema())
        return pa.RecordBatchReader.from_batches(schema, conform_batches(self.batches(batch_size), schema))

    def duckdb_source(self, con: Any, name: str) -> None:
        """Make `name` a view (local files DuckDB reads itself) or a registered Arrow table."""
        formats = {f.format for f in self.fragments}
        options = {f.options for f in self.fragments}
        local = all(not is_uri(f.path) or f.path.startswith("file://") for f in self.fragments)
        if self.fragments and local and all(f.whole for f in self.fragments) and len(formats) == 1 and len(options) == 1:
            paths = [_open(f.path)[1] for f in self.fragments]
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS SELECT * FROM "
                        f"{_duck_reader(formats.pop(), paths, options.pop())}")
        else:
            con.register(name, self.to_arrow())


def nullable_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with every field nullable: what all files of one input agree on. DuckDB writes a
    column NOT NULL when it saw no nulls, and nullable in an empty partition, so files differ."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def conform_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches relabelled with `schema` where they differ from it only in nullability (or metadata)."""
    for b in batches:
        if b.schema != schema and b.schema.names == schema.names and b.schema.types == schema.types:
            b = pa.RecordBatch.from_arrays(b.columns, schema=schema)
        yield b


# --- writing ---------------------------------------------------------------------------

def write_table(table: pa.Table, folder: str, name: str = "part-0.parquet") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    pq.write_table(table, path)
    return path


def write_manifest(folder: str, fragments: Sequence[Fragment], schema: pa.Schema) -> None:
    """A zero-copy partition: a manifest of fragments, or an empty file with the schema when there are none."""
    os.makedirs(folder, exist_ok=True)
    if not fragments:
        write_table(schema.empty_table(), folder)
        return
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump({"fragments": [fr.to_json() for fr in fragments]}, f)


def fill_empty_buckets(folder: str, nbuckets: int, schema: pa.Schema) -> None:
    """Buckets no row fell into still get a file with the schema."""
    for b in range(nbuckets):
        d = bucket_dir(folder, b)
        if not os.path.isdir(d) or not _data_files(d):
            write_table(schema.empty_table(), d)


def check_schema_compatible(node: str, schemas: Dict[str, Optional[pa.Schema]]) -> None:
    """Union and similar need the same column names and types from each input."""
    known = {k: s for k, s in schemas.items() if s is not None}
    if len(known) < 2:
        return
    (first_name, first), *rest = known.items()
    for other_name, other in rest:
        a = [(f.name, str(f.type)) for f in first]
        b = [(f.name, str(f.type)) for f in other]
        if a != b:
            raise PlanError(f"node {node!r}: inputs {first_name!r} and {other_name!r} have different schemas "
                            f"({_schema_text(first)} vs {_schema_text(other)}); project or cast them to the same columns")


def _schema_text(s: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name} {f.type}" for f in s) + ")"
