"""Reading and writing one partition of data, inside a task.

A partition's output is a folder holding either Parquet files, a manifest
(`_dataset.json`) that points at fragments of other files (sources and
zero-copy splits), or one sub-folder per bucket (hash and user partitioning).
Every partition holds at least one file that carries the schema, so empty
partitions read as empty tables, never as errors.

Reading checks before it trusts: every Parquet file's footer is read first (a
corrupt file is an error naming it), the files of one input must agree on their
columns and types (nullability aside), and every column comes out nullable, so a
schema never depends on whether the data happened to hold a null.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from mpipipe.errors import PlanError
from mpipipe.data.buckets import BUCKET_COLUMN, bucket_dir
from mpipipe.data.duckdb_tables import register_arrow, register_empty
from mpipipe.data.fragment import Fragment, is_uri
from mpipipe.steps import ipcfile

MANIFEST = "_dataset.json"


class DataError(Exception):
    """A data file could not be read; the message names the file."""

def _open(path: str) -> Any:
    """(filesystem, path) for pyarrow: None for local paths."""
    if is_uri(path) and not path.startswith("file://"):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(path)
    return None, path[len("file://"):] if path.startswith("file://") else path


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _parquet_file(path: str, metadata: Optional[pq.FileMetaData] = None) -> pq.ParquetFile:
    fs, p = _open(path)
    try:
        return pq.ParquetFile(fs.open_input_file(p) if fs is not None else p, metadata=metadata)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read Parquet file {path}: {_one_line(e)}") from None


def parquet_metadata(path: str) -> pq.FileMetaData:
    """The footer of one Parquet file: one small read, and proof that the file is Parquet at all."""
    fs, p = _open(path)
    try:
        if fs is None:
            return pq.read_metadata(p)
        with fs.open_input_file(p) as f:
            return pq.read_metadata(f)
    except FileNotFoundError:
        raise DataError(f"Parquet file {path} does not exist (any more); "
                        "run the job again to plan without it") from None
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read Parquet file {path}: {_one_line(e).rstrip('.')}; "
                        "remove it from the input or replace it with a good copy") from None


def _metadata_schema(md: pq.FileMetaData, path: str) -> pa.Schema:
    try:
        return md.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as e:
        raise DataError(f"cannot read Parquet file {path}: "
                        f"its schema cannot be read as Arrow: {_one_line(e)}") from None


# --- schemas that agree ------------------------------------------------------------------

def loose_type(t: pa.DataType) -> pa.DataType:
    """`t` with every nested field nullable and list items named alike: what two writers of the same data agree on."""
    if pa.types.is_struct(t):
        return pa.struct([pa.field(t.field(i).name, loose_type(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_large_list(t):
        return pa.large_list(loose_type(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(loose_type(t.value_type), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(loose_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(loose_type(t.key_type), loose_type(t.item_type))
    return t


def schema_difference(ref: pa.Schema, other: pa.Schema) -> str:
    """How `other` differs from `ref`, by column name ('' when they agree). Nullability and column order do not
    count, and a column of Arrow's null type (all values missing) agrees with any type."""
    mine = {f.name: loose_type(f.type) for f in ref}
    theirs = {f.name: loose_type(f.type) for f in other}
    problems = []
    missing = [n for n in mine if n not in theirs]
    extra = [n for n in theirs if n not in mine]
    if missing:
        problems.append(f"no column {', '.join(repr(n) for n in missing)}")
    if extra:
        problems.append(f"extra column {', '.join(repr(n) for n in extra)}")
    for name, t in theirs.items():
        want = mine.get(name)
        if want is not None and t != want and not pa.types.is_null(t) and not pa.types.is_null(want):
            problems.append(f"column {name!r} is {t} instead of {want}")
    return "; ".join(problems)


def _merged(ref: pa.Schema, other: pa.Schema) -> pa.Schema:
    """`ref` with its null-typed columns given the type `other` has for them."""
    types = {f.name: f.type for f in other}
    fields = [f.with_type(types[f.name]) if pa.types.is_null(f.type) and f.name in types else f for f in ref]
    return pa.schema(fields, metadata=ref.metadata)


def _same_layout(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and [loose_type(t) for t in a.types] == [loose_type(t) for t in b.types]


def _schema_text(s: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name} {f.type}" for f in s) + ")"


# --- reading -------------------------------------------------------------------------------

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


def read_fragment(frag: Fragment, columns: Optional[List[str]] = None,
                  metadata: Optional[pq.FileMetaData] = None) -> pa.Table:
    """One fragment as an Arrow table (errors name the file)."""
    try:
        if frag.format == ipcfile.FORMAT:
            return _slice(ipc_table(frag.path), frag, columns)
        if frag.format == "parquet":
            pf = _parquet_file(frag.path, metadata)
            if frag.rows is not None:
                return _read_rows(pf, frag, columns)
            if frag.row_groups is not None:
                _check_row_groups(pf, frag)
                return pf.read_row_groups(list(frag.row_groups), columns=columns)
            return pf.read(columns=columns)
        return _read_text(frag, columns)
    except DataError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read {frag.format} file {frag.path}: {_one_line(e)}") from None


TYPED = ("parquet", ipcfile.FORMAT)  # formats whose files say their columns, types and row count


def ipc_table(path: str) -> pa.Table:
    """A shuffle's Arrow IPC file, memory-mapped; one that is cut short or damaged is an error naming it."""
    try:
        return ipcfile.open_table(path)
    except FileNotFoundError:
        raise DataError(f"Arrow file {path} does not exist (any more); run the job again with --fresh") from None
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read Arrow file {path}: {_one_line(e).rstrip('.')}; it is an intermediate of "
                        "this job: run the job again with --fresh to write it anew") from None


def _slice(t: pa.Table, frag: Fragment, columns: Optional[List[str]]) -> pa.Table:
    """A fragment's rows of a whole-file table (IPC files are cut only by row ranges)."""
    if frag.rows is not None:
        start, stop = frag.rows
        if stop > t.num_rows:
            raise DataError(f"Arrow file {frag.path} has {t.num_rows} rows but the plan reads rows "
                            f"{start}..{stop - 1}; run the job again with --fresh")
        t = t.slice(start, stop - start)
    return t.select(columns) if columns else t


def _changed(path: str, what: str) -> DataError:
    return DataError(f"Parquet file {path} {what}: it changed after the plan was made; run the job again "
                     "(with --fresh if the same command reuses the old split)")


def _check_row_groups(pf: pq.ParquetFile, frag: Fragment) -> None:
    n = pf.metadata.num_row_groups
    if frag.row_groups and max(frag.row_groups) >= n:
        raise _changed(frag.path, f"has {n} row group(s) but the plan reads group {max(frag.row_groups)}")


def _read_rows(pf: pq.ParquetFile, frag: Fragment, columns: Optional[List[str]]) -> pa.Table:
    start, stop = frag.rows  # type: ignore[misc]
    total = pf.metadata.num_rows
    if stop > total:
        # slicing past the end would quietly return fewer rows than the plan counted on
        raise _changed(frag.path, f"has {total} rows but the plan reads rows {start}..{stop - 1}")
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
    return read_text([frag], columns)


def _text_sql(frags: Sequence[Fragment], local: Sequence[str], columns: Optional[List[str]]) -> str:
    sel = ", ".join(_quote(c) for c in columns) if columns else "*"
    return f"SELECT {sel} FROM {_duck_reader(frags[0].format, local, frags[0].options)}"


def _text_error(frags: Sequence[Fragment], e: BaseException) -> DataError:
    where = frags[0].path if len(frags) == 1 else f"{frags[0].path} (and {len(frags) - 1} more)"
    return DataError(f"cannot read {frags[0].format} file {where}: {_one_line(e)}")


def read_text(frags: Sequence[Fragment], columns: Optional[List[str]] = None, limit: Optional[int] = None) -> pa.Table:
    """CSV or JSON files of one format and options in one DuckDB call (so the files agree on types, as in a
    task's view); object-store files are fetched first, so the same options (header, delimiter, types)
    apply wherever a file lives."""
    import contextlib

    import duckdb

    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(_local_copy(f.path)) for f in frags]
        con = duckdb.connect()
        try:
            tail = f" LIMIT {int(limit)}" if limit is not None else ""
            return con.sql(_text_sql(frags, local, columns) + tail).to_arrow_table()
        except duckdb.Error as e:
            raise _text_error(frags, e) from None
        finally:
            con.close()


def text_batches(frags: Sequence[Fragment], batch_size: int) -> Iterator[pa.RecordBatch]:
    """The rows of `read_text(frags)` streamed from DuckDB, never all in memory at once."""
    import contextlib

    import duckdb

    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(_local_copy(f.path)) for f in frags]
        con = duckdb.connect()
        stack.callback(con.close)
        try:
            reader = con.sql(_text_sql(frags, local, None)).to_arrow_reader(batch_size)
            for b in reader:
                yield b
        except duckdb.Error as e:
            raise _text_error(frags, e) from None


def copy_text_to_parquet(frags: Sequence[Fragment], dest: str) -> None:
    """Text files of one format and options as one Parquet file, written by DuckDB as it reads them."""
    import contextlib

    import duckdb

    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(_local_copy(f.path)) for f in frags]
        con = duckdb.connect()
        try:
            query = nullable_query(con, _text_sql(frags, local, None))
            con.execute(f"COPY ({query}) TO '{dest.replace(chr(39), chr(39) * 2)}' (FORMAT parquet)")
        except duckdb.Error as e:
            raise _text_error(frags, e) from None
        finally:
            con.close()


class _local_copy:
    """A local path for a file: the path itself, or a temporary copy of an object-store file (same name)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp: Optional[str] = None

    def __enter__(self) -> str:
        fs, p = _open(self.path)
        if fs is None:
            return p
        import shutil
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="mpipipe-")
        local = os.path.join(self.tmp, os.path.basename(p))
        try:
            with fs.open_input_stream(p) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, pa.ArrowException) as e:
            self.__exit__()
            raise DataError(f"cannot read {self.path}: {_one_line(e)}") from None
        return local

    def __exit__(self, *exc: Any) -> None:
        if self.tmp:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fragment_schema(frag: Fragment, options: Sequence[Any] = ()) -> pa.Schema:
    """The schema of one fragment's file; `options` (text formats) replace some of the fragment's own,
    e.g. a bounded sample for a cheap look before anything runs."""
    if frag.format == "parquet":
        return _parquet_file(frag.path).schema_arrow
    if frag.format == ipcfile.FORMAT:
        return ipc_table(frag.path).schema
    import duckdb

    given = dict(options)
    opts = tuple((k, v) for k, v in frag.options if k not in given) + tuple(given.items())
    with _local_copy(frag.path) as local:
        con = duckdb.connect()
        try:
            return con.sql(f"SELECT * FROM {_duck_reader(frag.format, [local], opts)} LIMIT 0").to_arrow_table().schema
        except duckdb.Error as e:
            raise DataError(f"cannot read {frag.format} file {frag.path}: {_one_line(e)}") from None
        finally:
            con.close()


def fragment_rows(frag: Fragment, metadata: Optional[pq.FileMetaData] = None) -> int:
    if frag.rows is not None:
        return frag.rows[1] - frag.rows[0]
    if frag.format == ipcfile.FORMAT:
        return ipc_table(frag.path).num_rows
    if frag.format != "parquet":
        return read_fragment(frag).num_rows
    md = metadata if metadata is not None else _parquet_file(frag.path).metadata
    if frag.row_groups is not None:
        if frag.row_groups and max(frag.row_groups) >= md.num_row_groups:
            raise _changed(frag.path, f"has {md.num_row_groups} row group(s) "
                                      f"but the plan reads group {max(frag.row_groups)}")
        return sum(md.row_group(i).num_rows for i in frag.row_groups)
    return md.num_rows


_NO_ROWS = "__mpipipe_no_rows"


def nullable_query(con: Any, query: str) -> str:
    """`query` with an empty UNION ALL branch of typed NULLs, so every column it writes is nullable.

    DuckDB writes a Parquet column as required (NOT NULL) when its statistics prove the rows hold no null,
    so without this one partition's file says NOT NULL and the next one's does not. The branch reads an
    empty Arrow table, which the optimizer cannot drop; it adds no rows and keeps the query's order and
    types. A query this cannot wrap (DESCRIBE fails) is written as it is.
    """
    import duckdb

    try:
        cols = con.execute(f"DESCRIBE {query}").fetchall()
        register_empty(con, _NO_ROWS, pa.schema([("x", pa.int8())]))
        nulls = ", ".join(f"CAST(NULL AS {row[1]})" for row in cols)
        wrapped = f"SELECT * FROM ({query}) UNION ALL SELECT {nulls} FROM {_NO_ROWS}"
        con.execute(f"DESCRIBE {wrapped}")
        return wrapped
    except duckdb.Error:
        return query


# --- partition folders -------------------------------------------------------------------

def _data_files(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith((".parquet", ipcfile.SUFFIX)) and not f.startswith((".", "_")))


def _file_fragment(path: str) -> Fragment:
    """A data file of a partition folder: Parquet, or a shuffle's Arrow IPC file."""
    return Fragment(path, ipcfile.FORMAT) if path.endswith(ipcfile.SUFFIX) else Fragment(path)


def folder_fragments(folder: str) -> List[Fragment]:
    """The fragments a partition folder holds: manifest entries, Parquet files, or every bucket's files."""
    manifest = os.path.join(folder, MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            return [Fragment.from_json(d) for d in json.load(f)["fragments"]]
    if not os.path.isdir(folder):
        raise DataError(f"partition folder {folder} is missing; run the job with --fresh to recompute it")
    frags = [_file_fragment(p) for p in _data_files(folder)]
    buckets = sorted((d for d in os.listdir(folder) if d.startswith(BUCKET_COLUMN + "=")),
                     key=lambda d: int(d.split("=", 1)[1]))
    for b in buckets:
        frags.extend(_file_fragment(p) for p in _data_files(os.path.join(folder, b)))
    return frags


def folder_other_files(folder: str) -> List[Tuple[str, str]]:
    """Files in a partition folder that are not its Parquet data (what a PythonScriptNode or ComputeNode may
    write: text, images, nested folders), as (path relative to the folder, path); hidden and `_` names are
    skipped. A zero-copy partition lists the files it passes on in its manifest."""
    manifest = os.path.join(folder, MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            return [(rel, path) for rel, path in json.load(f).get("files", [])]
    if not os.path.isdir(folder):
        return []
    data = set(_data_files(folder))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and
                         not (root == folder and d.startswith(BUCKET_COLUMN + "=")))
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.startswith((".", "_")) and path not in data:
                found.append((os.path.relpath(path, folder), path))
    return found


class _Checked:
    """What reading an input may rely on: the fragments to read, their common schema (nullable), whether every
    file has that exact layout, and the footers already read."""

    def __init__(self, fragments: List[Fragment], schema: Optional[pa.Schema], uniform: bool,
                 footers: Dict[str, pq.FileMetaData], tables: Optional[Dict[str, pa.Table]] = None,
                 typed: bool = False) -> None:
        self.fragments = fragments
        self.schema = schema
        self.uniform = uniform
        self.footers = footers
        self.tables = tables or {}  # the Arrow IPC files, memory-mapped
        self.typed = typed  # every file says its columns (Parquet, Arrow IPC): no text to parse

    def read(self, f: Fragment, columns: Optional[List[str]] = None) -> pa.Table:
        if f.format == ipcfile.FORMAT:
            return _slice(self.tables[f.path], f, columns)
        return read_fragment(f, columns, self.footers.get(f.path))


class PartitionData:
    """The data one task reads from one input: a list of fragments, read the way the step wants.

    `other_files` are the non-Parquet files of the input's folders, as (folder index, path relative to the
    folder, absolute path): the output of a PythonScriptNode that writes text or images, for instance.
    """

    def __init__(self, fragments: List[Fragment], schema: Optional[pa.Schema] = None,
                 other_files: Sequence[Tuple[int, str, str]] = (), folders: Sequence[str] = ()) -> None:
        self.fragments = fragments
        self._schema = nullable_schema(schema) if schema is not None else None
        self.other_files = list(other_files)
        self.folders = list(folders)
        self._checked: Optional[_Checked] = None

    @classmethod
    def from_folders(cls, folders: Sequence[str]) -> "PartitionData":
        frags: List[Fragment] = []
        others: List[Tuple[int, str, str]] = []
        for i, f in enumerate(folders):
            frags.extend(folder_fragments(f))
            others.extend((i, rel, path) for rel, path in folder_other_files(f))
        return cls(frags, other_files=others, folders=folders)

    @property
    def paths(self) -> List[str]:
        return [f.path for f in self.fragments]

    def checked(self) -> _Checked:
        """Read every Parquet footer once: a corrupt or vanished file fails here, naming it; files whose columns
        disagree fail too, except empty ones (they add no rows; an empty partition of a row function without
        `schema=` has the columns of its input)."""
        if self._checked is not None:
            return self._checked
        frags = self.fragments
        if not frags or any(f.format not in TYPED for f in frags):
            self._checked = _Checked(list(frags), self._schema, True, {})
            return self._checked
        footers: Dict[str, pq.FileMetaData] = {}
        tables: Dict[str, pa.Table] = {}
        for f in frags:
            if f.format == ipcfile.FORMAT:
                if f.path not in tables:
                    tables[f.path] = ipc_table(f.path)
            elif f.path not in footers:
                footers[f.path] = parquet_metadata(f.path)
        info = [(f, tables[f.path].schema, _slice(tables[f.path], f, None).num_rows) if f.path in tables else
                (f, _metadata_schema(footers[f.path], f.path), fragment_rows(f, footers[f.path])) for f in frags]
        ref_frag, ref, _ = next((x for x in info if x[2] > 0), info[0])
        schema, keep, uniform = ref, [], True
        for f, s, rows in info:
            diff = schema_difference(schema, s)
            if diff:
                if rows == 0:
                    uniform = False
                    continue
                raise DataError(f"the files of one input have different columns: {f.path} has {diff} compared "
                                f"with {ref_frag.path} {_schema_text(ref)}; make the node that wrote them return the "
                                "same columns in every partition (row functions: pass schema=)")
            uniform = uniform and _same_layout(s, ref)
            schema = _merged(schema, s)
            keep.append(f)
        if self._schema is None:
            self._schema = nullable_schema(pa.schema([f.with_type(loose_type(f.type)) for f in schema],
                                                     metadata=schema.metadata))
        self._checked = _Checked(keep, self._schema, uniform, footers, tables, True)
        return self._checked

    def schema(self) -> pa.Schema:
        if self._schema is None:
            if not self.fragments:
                raise DataError(self._no_table())
            if self.checked().schema is None:  # text: the columns DuckDB finds in the first files read together
                group = _groups(self.fragments)[0]
                self._schema = nullable_schema(read_text(group, limit=0).schema if group[0].format != "parquet"
                                               else fragment_schema(group[0]))
        assert self._schema is not None
        return self._schema

    def _no_table(self) -> str:
        where = f"input folder {self.folders[0]}" if self.folders else "an input"
        if self.other_files:
            names = ", ".join(rel for _, rel, _ in self.other_files[:3])
            more = ", ..." if len(self.other_files) > 3 else ""
            return (f"{where} holds no Parquet data, only other files ({names}{more});"
                    " a node that reads tables needs Parquet: read these files through PartitionData.other_files"
                    " in a PythonScriptNode, or make the node that wrote them write Parquet")
        return (f"{where} holds no Parquet data at all; the node that wrote it (a PythonScriptNode or ComputeNode?) "
                "wrote nothing a table can be read from: make it write Parquet into its output folder")

    def num_rows(self) -> int:
        chk = self.checked()
        return sum(chk.read(f).num_rows if f.path in chk.tables else fragment_rows(f, chk.footers.get(f.path))
                   for f in chk.fragments)

    def to_arrow(self, columns: Optional[List[str]] = None) -> pa.Table:
        chk = self.checked()
        if not chk.typed:  # text formats: DuckDB reads the files of one format and options together
            tables = [read_text(group, columns) if group[0].format != "parquet" else
                      pa.concat_tables([read_fragment(f, columns) for f in group], promote_options="permissive")
                      for group in _groups(chk.fragments)]
            if not tables:
                return _select(self.schema(), columns).empty_table()
            try:
                t = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
            except pa.ArrowException as e:
                raise DataError(f"the files of one input have different schemas ({_one_line(e)}); "
                                f"first file: {self.fragments[0].path}") from None
            return t.cast(nullable_schema(t.schema))
        target = _select(self.schema(), columns)
        tables = [conform_table(chk.read(f, columns), target) for f in chk.fragments]
        return pa.concat_tables(tables) if tables else target.empty_table()

    def to_pandas(self) -> Any:
        return pandas_frame(self.to_arrow())

    def batches(self, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        """Record batches in order, one Parquet fragment or one DuckDB stream over text files at a time
        (memory stays at one row group or so), each with the input's schema."""
        chk = self.checked()
        schema = self.schema() if chk.typed else None
        for group in _groups(chk.fragments):
            if group[0].format not in TYPED:
                yield from text_batches(group, batch_size)
                continue
            for frag in group:
                if frag.whole and frag.format == "parquet":
                    pf = _parquet_file(frag.path, chk.footers.get(frag.path))
                    try:
                        for b in pf.iter_batches(batch_size=batch_size):
                            yield conform_batch(b, schema) if schema is not None else b
                    except (OSError, pa.ArrowException) as e:
                        raise DataError(f"cannot read Parquet file {frag.path}: {_one_line(e)}") from None
                else:
                    t = chk.read(frag)
                    for b in t.to_batches(max_chunksize=batch_size):
                        yield conform_batch(b, schema) if schema is not None else b

    def reader(self, batch_size: int = 65536) -> pa.RecordBatchReader:
        schema = nullable_schema(self.schema())
        return pa.RecordBatchReader.from_batches(schema, conform_batches(self.batches(batch_size), schema))

    def duckdb_source(self, con: Any, name: str) -> None:
        """Make `name` a view (local files DuckDB reads itself) or a registered Arrow table."""
        chk = self.checked()
        frags = chk.fragments
        local = all(not is_uri(f.path) or f.path.startswith("file://") for f in frags)
        alike = all(f.format == frags[0].format and f.options == frags[0].options for f in frags)  # options hold dicts
        if frags and local and all(f.whole for f in frags) and alike and frags[0].format != ipcfile.FORMAT:
            opts = frags[0].options
            if not chk.uniform and not any(k == "union_by_name" for k, _ in opts):
                # columns in another order, or all-null in some file: DuckDB otherwise takes the first file's
                # layout for all, and a column typed NULL there would not hold another file's values
                opts = opts + (("union_by_name", True),)
            paths = [_open(f.path)[1] for f in frags]
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS SELECT * FROM "
                        f"{_duck_reader(frags[0].format, paths, opts)}")
        elif frags and local and alike and frags[0].format == "parquet" and chk.uniform and \
                ROW_NUMBER not in self.schema().names:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote(name)} AS {_slices_sql(chk)}")
        else:
            register_arrow(con, name, self.to_arrow())


ROW_NUMBER = "file_row_number"  # DuckDB's generated column: a row's number in its file


def _slices_sql(chk: _Checked) -> str:
    """Local Parquet fragments, some of them row groups or row ranges, read by DuckDB itself: each slice is a
    range of `file_row_number`, which DuckDB turns into the row groups it reads (no copy through Arrow);
    runs of whole files are read together, and the parts follow one another in fragment order."""
    frags = chk.fragments
    opts = frags[0].options
    parts: List[str] = []
    whole: List[str] = []

    def flush() -> None:
        if whole:
            parts.append(f"SELECT * FROM {_duck_reader('parquet', whole, opts)}")
            whole.clear()

    for f in frags:
        path = _open(f.path)[1]
        if f.whole:
            whole.append(path)
            continue
        flush()
        reader = _duck_reader("parquet", [path], opts + ((ROW_NUMBER, True),))
        for a, b in _row_ranges(f, chk.footers[f.path]):
            parts.append(f"SELECT * EXCLUDE ({ROW_NUMBER}) FROM {reader} "
                         f"WHERE {ROW_NUMBER} >= {a} AND {ROW_NUMBER} < {b}")
    flush()
    return " UNION ALL ".join(parts)


def _row_ranges(f: Fragment, md: pq.FileMetaData) -> List[Tuple[int, int]]:
    """The [start, stop) row ranges of a fragment within its file (row groups next to each other make one)."""
    if f.rows is not None:
        return [f.rows]
    starts, at = [], 0
    for i in range(md.num_row_groups):
        starts.append(at)
        at += md.row_group(i).num_rows
    out: List[Tuple[int, int]] = []
    for g in f.row_groups or ():
        if g >= md.num_row_groups:
            raise _changed(f.path, f"has {md.num_row_groups} row group(s) but the plan reads group {g}")
        a, b = starts[g], starts[g] + md.row_group(g).num_rows
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out or [(0, 0)]


def _groups(frags: Sequence[Fragment]) -> List[List[Fragment]]:
    """Neighbouring fragments of the same format and options."""
    out: List[List[Fragment]] = []
    for f in frags:
        if out and out[-1][0].format == f.format and out[-1][0].options == f.options:
            out[-1].append(f)
        else:
            out.append([f])
    return out


def pandas_frame(table: pa.Table) -> Any:
    """`table` as pandas, integer and boolean columns as pandas' nullable dtypes (Int64, boolean): otherwise a
    column is int64 or float64 depending on whether it holds a null, and a large integer next to a null is
    rounded through float64."""
    import pandas as pd

    nullable = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=nullable.get)


def _select(schema: pa.Schema, columns: Optional[List[str]]) -> pa.Schema:
    if not columns:
        return schema
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(f"no column {', '.join(repr(c) for c in missing)} in the input; its columns are {schema.names}")
    return pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)


def nullable_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with every field nullable: what all files of one input agree on. DuckDB writes a
    column NOT NULL when it saw no nulls, and nullable in an empty partition, so files differ."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def conform_table(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """`t` with `schema`'s column order and types, where it differs only in what schema_difference allows
    (order, nullability, all-null columns)."""
    if t.schema == schema:
        return t
    if t.schema.names == schema.names and t.schema.types == schema.types:
        return pa.Table.from_arrays(t.columns, schema=schema)
    cols = [t.column(f.name) for f in schema]
    cols = [c if c.type == f.type else c.cast(f.type) for c, f in zip(cols, schema)]
    return pa.Table.from_arrays(cols, schema=schema)


def conform_batch(b: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if b.schema == schema:
        return b
    if b.schema.names == schema.names and b.schema.types == schema.types:
        return pa.RecordBatch.from_arrays(b.columns, schema=schema)
    cols = [b.column(f.name) for f in schema]
    return pa.RecordBatch.from_arrays([c if c.type == f.type else c.cast(f.type) for c, f in zip(cols, schema)],
                                      schema=schema)


def conform_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches relabelled with `schema` where they differ from it only in nullability (or metadata)."""
    for b in batches:
        if b.schema != schema and b.schema.names == schema.names and b.schema.types == schema.types:
            b = pa.RecordBatch.from_arrays(b.columns, schema=schema)
        yield b


# --- writing ---------------------------------------------------------------------------

def write_table(table: pa.Table, folder: str, name: str = "part-0.parquet") -> str:
    """Write one Parquet file; every column is written nullable, whatever the table says, so an output's
    schema does not depend on whether its rows happened to hold a null."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    loose = nullable_schema(table.schema)
    pq.write_table(table if table.schema == loose else pa.Table.from_arrays(table.columns, schema=loose), path)
    return path


def write_manifest(folder: str, fragments: Sequence[Fragment], schema: Optional[pa.Schema],
                   files: Sequence[Tuple[str, str]] = ()) -> None:
    """A zero-copy partition: a manifest of fragments (and of other files, as (name, path)), or an empty file
    with the schema when there is nothing to list (a manifest with nothing in it when there is no schema
    either: the input held no table)."""
    os.makedirs(folder, exist_ok=True)
    if not fragments and not files and schema is not None:
        write_table(schema.empty_table(), folder)
        return
    content: Dict[str, Any] = {"fragments": [fr.to_json() for fr in fragments]}
    if files:
        content["files"] = [list(x) for x in files]
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(content, f)


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
                            f"({_schema_text(first)} vs {_schema_text(other)}); "
                            "project or cast them to the same columns")
