"""Datasets: where a plan's data comes from, described without reading it.

A dataset resolves to a list of `Fragment`s (a file, or part of one) when its
source node is built, so a path that matches nothing is an error before
anything runs. Local and shared POSIX paths are used as they are; object-store
URIs (`s3://bucket/key`, anything pyarrow.fs knows) are listed and read through
pyarrow.fs. In-memory tables travel with the plan and are written to Parquet by
their source task.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mpipipe.errors import PlanError

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WILDCARDS = re.compile(r"[*?\[]")

FORMATS = ("parquet", "csv", "json")
_SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
             "json": (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")}


def is_uri(path: str) -> bool:
    """An object-store or other pyarrow.fs URI (local `file://` URIs count too)."""
    return bool(_URI_RE.match(path))


@dataclass(frozen=True)
class Fragment:
    """One file, or a slice of one (Parquet row groups or a row range), in one format."""

    path: str
    format: str = "parquet"
    row_groups: Optional[Tuple[int, ...]] = None
    rows: Optional[Tuple[int, int]] = None  # [start, stop) within the file
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def whole(self) -> bool:
        return self.row_groups is None and self.rows is None

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"path": self.path, "format": self.format}
        if self.row_groups is not None:
            d["row_groups"] = list(self.row_groups)
        if self.rows is not None:
            d["rows"] = list(self.rows)
        if self.options:
            d["options"] = [list(kv) for kv in self.options]
        return d

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Fragment":
        return Fragment(d["path"], d.get("format", "parquet"),
                        tuple(d["row_groups"]) if d.get("row_groups") is not None else None,
                        tuple(d["rows"]) if d.get("rows") is not None else None,  # type: ignore[arg-type]
                        tuple((k, v) for k, v in d.get("options", [])))


def _filesystem(uri: str) -> Tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise PlanError(f"cannot open {uri}: {e}") from None


def _expand_uri(pattern: str, suffixes: Tuple[str, ...]) -> List[str]:
    import pyarrow.fs as pafs

    scheme = pattern.split("://", 1)[0]
    m = _WILDCARDS.search(pattern)
    base = pattern[: pattern.rfind("/", 0, m.start())] if m else pattern
    fs, root = _filesystem(base)
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File and not m:
            return [pattern]
        if info.type == pafs.FileType.NotFound:
            return []
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as e:
        raise PlanError(f"cannot list {pattern}: {e}") from None
    rel_pattern = pattern.split("://", 1)[1]
    out = []
    for i in infos:
        if i.type != pafs.FileType.File or os.path.basename(i.path).startswith(("_", ".")):
            continue
        if m:
            if fnmatch.fnmatchcase(i.path, rel_pattern):
                out.append(f"{scheme}://{i.path}")
        elif i.path.endswith(suffixes):
            out.append(f"{scheme}://{i.path}")
    return sorted(out)


def _expand_local(pattern: str, suffixes: Tuple[str, ...]) -> List[str]:
    if pattern.startswith("file://"):
        pattern = pattern[len("file://"):]
    pattern = os.path.expanduser(pattern)
    if _WILDCARDS.search(pattern):
        hits = sorted(glob.glob(pattern, recursive=True))
        # like a directory and an object-store glob: `_SUCCESS`, `_metadata` (a summary that points at the
        # data files, which DuckDB would count a second time) and hidden files are not data
        asked = os.path.basename(pattern).startswith(("_", "."))  # unless the pattern names such files
        return [os.path.abspath(h) for h in hits if not os.path.isdir(h)  # a FIFO or device is refused below
                and (asked or not os.path.basename(h).startswith(("_", ".")))]
    if os.path.isdir(pattern):
        found = []
        for root, dirs, files in os.walk(pattern):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            found.extend(os.path.join(root, f) for f in files
                         if f.endswith(suffixes) and not f.startswith((".", "_")))
        return sorted(os.path.abspath(f) for f in found)
    if os.path.exists(pattern):
        return [os.path.abspath(pattern)]
    return []


_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(path: str) -> None:
    """Inputs are regular files: reading a FIFO would wait forever for a writer, and a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise PlanError(f"input file {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise PlanError(f"input file {path} is {what}; inputs must be regular files")


def expand_paths(paths: Union[str, Sequence[str]], fmt: str) -> List[str]:
    """Files named by paths, globs (`**` too) and directories, in a stable order; errors name what matched nothing."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    if not paths:
        raise PlanError("no input paths given")
    files: List[str] = []
    for p in paths:
        p = os.fspath(p)
        found = _expand_uri(p, _SUFFIXES[fmt]) if is_uri(p) and not p.startswith("file://") else _expand_local(p, _SUFFIXES[fmt])
        if not found:
            hint = f" (a directory is searched for {', '.join(_SUFFIXES[fmt])} files)" if not _WILDCARDS.search(p) else ""
            raise PlanError(f"input path {p!r} matches no file{hint}")
        for f in found:
            if is_uri(f):
                continue
            _check_regular(f)
            if not os.access(f, os.R_OK):
                raise PlanError(f"input file {f} is not readable (permission denied)")
        files.extend(found)
    return files


class DataSet:
    """A description of input data; `fragments()` lists what to read."""

    format = "parquet"

    def fragments(self) -> List[Fragment]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes when the data it names changes (paths, sizes, mtimes), so dependent tasks re-run."""
        raise NotImplementedError

    def schema(self) -> Any:
        """The Arrow schema, read from the first file (text files: DuckDB's look at its first rows, so the
        plan can be checked without reading all the data; tasks then read every row)."""
        from mpipipe.steps.partio import fragment_schema

        frags = self.fragments()
        if not frags:
            return None
        quick = () if frags[0].format == "parquet" or any(k == "sample_size" and v != -1 for k, v in frags[0].options) \
            else (("sample_size", 20480),)
        return fragment_schema(frags[0], quick)

    def in_memory_table(self) -> Any:
        """For in-memory datasets, the Arrow table the source task writes; None for files."""
        return None


class FileDataSet(DataSet):
    def __init__(self, paths: Union[str, Sequence[str]], **options: Any) -> None:
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.options = tuple(sorted(options.items()))
        self._files: Optional[List[str]] = None

    @property
    def files(self) -> List[str]:
        if self._files is None:
            self._files = expand_paths(self.paths, self.format)
        return self._files

    def fragments(self) -> List[Fragment]:
        return [Fragment(f, self.format, options=self.options) for f in self.files]

    def fingerprint(self) -> str:
        h = hashlib.sha1(repr((self.format, self.options)).encode())
        for f in self.files:
            if is_uri(f):
                h.update(f.encode())
                continue
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.paths!r})"


class ParquetDataSet(FileDataSet):
    """Parquet files, globs or directories (searched recursively for *.parquet)."""

    format = "parquet"


_GIVEN_NAMES = ("columns", "names", "column_names")
_DELIMITERS = ("delim", "sep", "delimiter")
_TAB_SUFFIXES = (".tsv", ".tsv.gz")


def duckdb_columns(schema: Any) -> Dict[str, str]:
    """{column: DuckDB type} for DuckDB's `columns=` option, from a pyarrow.Schema or a {name: type} mapping
    (types as DuckDB type names or pyarrow types)."""
    import pyarrow as pa

    if isinstance(schema, pa.Schema):
        fields = list(zip(schema.names, schema.types))
    elif isinstance(schema, dict) and schema:
        fields = list(schema.items())
    else:
        raise PlanError(f"schema must be a pyarrow.Schema or a non-empty {{column: type}} dict, got {schema!r}")
    out: Dict[str, str] = {}
    arrow = [(n, t) for n, t in fields if isinstance(t, pa.DataType)]
    if arrow:
        import duckdb

        con = duckdb.connect()
        try:
            con.register("t", pa.schema(arrow).empty_table())
            duck = {row[0]: row[1] for row in con.execute("DESCRIBE t").fetchall()}
        except duckdb.Error as e:
            raise PlanError(f"schema: DuckDB has no type for one of {arrow}: {' '.join(str(e).split())}") from None
        finally:
            con.close()
    for name, t in fields:
        if isinstance(t, str) and t.strip():
            out[str(name)] = t
        elif isinstance(t, pa.DataType):
            out[str(name)] = duck[name]
        else:
            raise PlanError(f"schema: the type of column {name!r} must be a DuckDB type name or a pyarrow type, got {t!r}")
    return out


def _text_options(fmt: str, schema: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """The reader options with every rule that decides rows or types spelled out, so DuckDB guesses none of them."""
    options = dict(options)
    if schema is not None:
        if "columns" in options:
            raise PlanError("give schema= or columns=, not both")
        options["columns"] = duckdb_columns(schema)
    typed = "columns" in options
    if fmt == "csv":
        if "header" not in options:
            # a header row is assumed unless the columns are given; DuckDB's own guess drops the first row of a
            # headerless file whose values are all text
            options["header"] = not any(k in options for k in _GIVEN_NAMES)
        elif not isinstance(options["header"], bool):
            raise PlanError(f"header must be True or False, got {options['header']!r}")
        if not typed:
            # types from every row, not from a sample: a sampled BIGINT column rounds a later 1.5 to 2
            options.setdefault("sample_size", -1)
            options.setdefault("files_to_sniff", -1)
            # dates only in ISO form: DuckDB would read 01/02/2024 as 1 February on a guess
            options.setdefault("dateformat", "%Y-%m-%d")
    elif fmt == "json" and not typed:
        # keys and types from every record of every file: a sample misses keys that appear late
        options.setdefault("sample_size", -1)
        options.setdefault("maximum_sample_files", -1)
    return options


class CsvDataSet(FileDataSet):
    """CSV and TSV files, read by DuckDB's read_csv (other options go there too, e.g. delim='|').

    Nothing that decides rows is guessed: `header` is True unless the columns are given (`schema=`,
    `columns=`, `names=`), then False; pass header= to say otherwise. A .tsv file is tab-separated unless
    `delim` is given. Without a schema, DuckDB infers each column's type from every row, dates only in ISO
    form (give `dateformat=` for others), and a day/month order it would have to guess for timestamps is
    an error that asks for `timestampformat=`.
    """

    format = "csv"

    def __init__(self, paths: Union[str, Sequence[str]], schema: Any = None, **options: Any) -> None:
        super().__init__(paths, **_text_options("csv", schema, options))

    def fragments(self) -> List[Fragment]:
        tab = (("delim", "\t"),)
        given = any(k in _DELIMITERS for k, _ in self.options)
        return [Fragment(f, self.format, options=tuple(sorted(self.options + tab))
                         if not given and f.lower().endswith(_TAB_SUFFIXES) else self.options)
                for f in self.files]


class JsonDataSet(FileDataSet):
    """Newline-delimited JSON files, read by DuckDB's read_json (other options go there too).

    Without `schema=` (or `columns=`), DuckDB finds the keys and types from every record of every file, not
    from a sample, so a key that first appears late is not dropped.
    """

    format = "json"

    def __init__(self, paths: Union[str, Sequence[str]], schema: Any = None, **options: Any) -> None:
        super().__init__(paths, **_text_options("json", schema, options))


class ArrowTableDataSet(DataSet):
    """An in-memory Arrow table; it is shipped with the plan, so keep it modest in size."""

    def __init__(self, table: Any) -> None:
        import pyarrow as pa

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise PlanError(f"ArrowTableDataSet needs a pyarrow.Table, got {type(table).__name__}")
        self.table = table

    def fragments(self) -> List[Fragment]:
        return []

    def schema(self) -> Any:
        return self.table.schema

    def in_memory_table(self) -> Any:
        return self.table

    def fingerprint(self) -> str:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.table.schema) as w:
            w.write_table(self.table)
        return hashlib.sha1(sink.getvalue().to_pybytes()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ArrowTableDataSet({self.table.num_rows} rows)"


class PandasDataSet(ArrowTableDataSet):
    """An in-memory pandas DataFrame (converted to Arrow once, when the plan is built)."""

    def __init__(self, df: Any) -> None:
        import pyarrow as pa

        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (TypeError, ValueError, pa.ArrowException) as e:
            raise PlanError(f"cannot convert the pandas DataFrame to Arrow: {e}") from None
        super().__init__(table)

    def __repr__(self) -> str:
        return f"PandasDataSet({self.table.num_rows} rows)"


def dataset_for(data: Any) -> DataSet:
    """Turn what a user passed (a DataSet, a table, a frame, a list of rows) into a DataSet."""
    if isinstance(data, DataSet):
        return data
    mod = type(data).__module__.split(".")[0]
    if mod == "pyarrow":
        return ArrowTableDataSet(data)
    if mod == "pandas":
        return PandasDataSet(data)
    if isinstance(data, list):
        import pyarrow as pa

        if data and not isinstance(data[0], dict):
            data = [{"item": x} for x in data]
        try:
            return ArrowTableDataSet(pa.Table.from_pylist(data))
        except (TypeError, pa.ArrowException) as e:
            raise PlanError(f"cannot make a table of these items: {e}") from None
    raise PlanError(f"cannot read data from a {type(data).__name__}; give a DataSet, a pyarrow.Table, "
                    "a pandas.DataFrame or a list of rows")
