"""Datasets: where a plan's data comes from, described without reading it.

A dataset resolves to a list of `Fragment`s (a file, or part of one) when its
source node is built, so a path that matches nothing is an error before
anything runs. Local and shared POSIX paths are used as they are; object-store
URIs (`s3://bucket/key`, anything pyarrow.fs knows) are listed and read through
pyarrow.fs. In-memory tables travel with the plan and are written to Parquet by
their source task.

The classes also have smallpond's dataset surface (`resolved_paths`,
`num_rows`, `to_arrow_table()`, `partition_by_files()`, ...), so a dataset can
be inspected and split on the driver the way smallpond scripts do.
"""
from __future__ import annotations

import copy
import hashlib
import os
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from mpipipe.errors import PlanError

from mpipipe.data.duckdb_tables import register_arrow, register_empty
from mpipipe.data.fragment import Fragment, expand_paths, is_uri  # noqa: F401 - Fragment is part of this face

_BATCH = 122880  # rows per batch of to_batch_reader(), as in smallpond
PathList = Union[str, "os.PathLike[str]", Sequence[str]]


def _as_list(paths: Any) -> List[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


class DataSet:
    """A description of input data; `fragments()` lists what to read.

    `paths` are files, globs (`**` too) or directories, taken relative to
    `root_dir` when given; `columns` limits what is read; `union_by_name`
    lines up columns of files by name rather than by position.
    """

    format = "parquet"

    def __init__(self, paths: Any = None, root_dir: Optional[str] = "", recursive: bool = False,
                 columns: Optional[Sequence[str]] = None, union_by_name: bool = False) -> None:
        self.paths: List[str] = _as_list(paths)
        self.root_dir = os.path.abspath(root_dir) if root_dir else None
        self.recursive = recursive
        self.columns = list(columns) if columns is not None else None
        self._union_by_name = union_by_name
        self._resolved_paths: Optional[List[str]] = None
        self._resolved_num_rows: Optional[int] = None

    # --- smallpond's surface ------------------------------------------------------------------

    @property
    def union_by_name(self) -> bool:
        return bool(self._union_by_name) or self.columns is not None

    @property
    def udfs(self) -> List[Any]:
        return []

    @property
    def absolute_paths(self) -> List[str]:
        """The given paths and patterns, joined to `root_dir` when one was given, in the given order."""
        if self.root_dir is None:
            return list(self.paths)
        return [p if is_uri(p) else os.path.join(self.root_dir, p) for p in self.paths]

    @property
    def resolved_paths(self) -> List[str]:
        """The files: globs and directories expanded (sorted within each), plain paths as absolute paths.

        A plain path is only asked whether it is a folder (once per distinct path, so a long list of paths
        resolves quickly); reading or building a source node checks that every file is there.
        """
        if self._resolved_paths is None:
            self._resolved_paths = _resolve(self.absolute_paths, self.format)
        return self._resolved_paths

    @property
    def num_files(self) -> int:
        return len(self.resolved_paths)

    @property
    def num_rows(self) -> int:
        if self._resolved_num_rows is None:
            self._resolved_num_rows = self._count_rows()
        return self._resolved_num_rows

    def _count_rows(self) -> int:
        from mpipipe.steps.partio import PartitionData

        table = self.in_memory_table()
        if table is not None:
            return int(table.num_rows)
        return PartitionData(self.fragments()).num_rows() if self.resolved_paths else 0

    @property
    def empty(self) -> bool:
        table = self.in_memory_table()
        if table is not None:
            return table.num_rows == 0
        return not self.resolved_paths

    def reset(self, paths: Any = None, root_dir: Optional[str] = "", recursive: Optional[bool] = None) -> None:
        """Point the dataset at other paths (every resolved or cached fact is dropped)."""
        self.paths = _as_list(paths)
        self.root_dir = os.path.abspath(root_dir) if root_dir else None
        if recursive is not None:
            self.recursive = recursive
        self._resolved_paths = None
        self._resolved_num_rows = None
        self._forget()

    def _forget(self) -> None:
        """Hook: drop what a subclass cached about the files."""

    def _with_files(self, files: List[str]) -> "DataSet":
        """A copy of this dataset that reads exactly `files`."""
        other = copy.copy(self)
        other.paths = list(files)
        other.root_dir = None
        other._resolved_paths = list(files)
        other._resolved_num_rows = None
        other._forget()
        return other

    def partition_by_files(self, npartition: int, random_shuffle: bool = False) -> List["DataSet"]:
        """`npartition` datasets of contiguous runs of the files (sizes differ by at most one file);
        `random_shuffle` shuffles the files, and the partitions, first."""
        from mpipipe.io.common import split_into_rows

        _check_count(npartition)
        files = list(self.resolved_paths)
        if random_shuffle:
            files = random.sample(files, len(files))
        parts = [self._with_files(group) for group in split_into_rows(files, npartition)]
        return random.sample(parts, len(parts)) if random_shuffle else parts

    @staticmethod
    def merge(datasets: Sequence["DataSet"]) -> "DataSet":
        """One dataset of the files of all (they must be of one class)."""
        if not datasets:
            raise PlanError("merge needs at least one dataset")
        kinds = {type(d) for d in datasets}
        if len(kinds) > 1:
            raise PlanError(f"cannot merge datasets of different kinds: {sorted(k.__name__ for k in kinds)}")
        merged = datasets[0]._with_files([p for d in datasets for p in d.resolved_paths])
        merged._union_by_name = any(d.union_by_name for d in datasets)
        return merged

    def sql_query_fragment(self, filesystem: Any = None, conn: Any = None) -> str:
        """A parenthesised DuckDB query reading the dataset, to put in a FROM clause."""
        from mpipipe.steps.partio import _duck_reader

        files = self.files
        if not files:
            raise PlanError(f"{self!r} has no files to read")
        opts = self._reader_options(self._fragment_options(files[0]))
        return f"( SELECT {self._column_str} FROM {_duck_reader(self.format, files, opts)} )"

    def _reader_options(self, options: Tuple[Tuple[str, Any], ...]) -> Tuple[Tuple[str, Any], ...]:
        if self.union_by_name and not any(k == "union_by_name" for k, _ in options):
            options = options + (("union_by_name", True),)
        return options

    def _fragment_options(self, path: str) -> Tuple[Tuple[str, Any], ...]:
        return tuple(getattr(self, "options", ()))

    @property
    def _column_str(self) -> str:
        from mpipipe.steps.partio import _quote

        return ", ".join(c if c == "*" else _quote(c) for c in self.columns) if self.columns else "*"

    def to_arrow_table(self, max_workers: int = 16, filesystem: Any = None, conn: Any = None) -> Any:
        """All rows as one pyarrow.Table (`conn`: read through that DuckDB connection instead)."""
        if conn is not None:
            return conn.sql(f"SELECT * FROM {self.sql_query_fragment(filesystem, conn)}").to_arrow_table()
        from mpipipe.steps.partio import PartitionData

        table = self.in_memory_table()
        if table is None:
            table = PartitionData(self.fragments()).to_arrow()
        return table.select(self.columns) if self.columns else table

    def to_batch_reader(self, batch_size: int = _BATCH, filesystem: Any = None, conn: Any = None) -> Any:
        """The rows as a pyarrow.RecordBatchReader of batches of at most `batch_size` rows."""
        if conn is not None:
            return conn.sql(f"SELECT * FROM {self.sql_query_fragment(filesystem, conn)}").to_arrow_reader(batch_size)
        table = self.in_memory_table()
        if table is not None:
            return table.to_reader(batch_size)
        from mpipipe.steps.partio import PartitionData

        reader = PartitionData(self.fragments()).reader(batch_size)
        if not self.columns:
            return reader
        import pyarrow as pa

        schema = pa.schema([reader.schema.field(c) for c in self.columns])
        return pa.RecordBatchReader.from_batches(schema, (b.select(self.columns) for b in reader))

    def to_pandas(self) -> Any:
        return self.to_arrow_table().to_pandas()

    def log(self, num_rows: int = 200) -> None:
        import logging

        logging.getLogger("mpipipe").info("%r ->\n%s", self, self.to_pandas().head(num_rows))

    # --- what mpipipe's plan reads --------------------------------------------------------------

    @property
    def files(self) -> List[str]:
        """The files, each checked to be there and readable (what a source node reads)."""
        return self.resolved_paths

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

    def __repr__(self) -> str:
        shown = self.paths[:3] + (["..."] if len(self.paths) > 3 else [])
        return f"{type(self).__name__}({shown!r})"


def _check_count(npartition: Any) -> None:
    if isinstance(npartition, bool) or not isinstance(npartition, int) or npartition < 1:
        raise PlanError(f"the number of partitions must be a whole number >= 1, got {npartition!r}")


def _suffixes(fmt: str) -> Tuple[str, ...]:
    from mpipipe.data.fragment import _SUFFIXES

    return _SUFFIXES.get(fmt, ())


def _resolve(patterns: Sequence[str], fmt: str) -> List[str]:
    """smallpond's resolution (plain paths as they are, not checked) with mpipipe's expansion of globs,
    directories and URIs; each distinct pattern is expanded once."""
    from mpipipe.data.fragment import _WILDCARDS, _expand_local, _expand_uri

    suffixes = _suffixes(fmt)
    cache: Dict[str, List[str]] = {}
    out: List[str] = []
    for p in patterns:
        hit = cache.get(p)
        if hit is None:
            if is_uri(p) and not p.startswith("file://"):
                hit = _expand_uri(p, suffixes)
            elif _WILDCARDS.search(p) or os.path.isdir(os.path.expanduser(p)):
                hit = _expand_local(p, suffixes)
            else:
                local = p[len("file://"):] if p.startswith("file://") else p
                hit = [os.path.abspath(os.path.expanduser(local))]
            cache[p] = hit
        out.extend(hit)
    return out


def _checked_files(ds: DataSet) -> List[str]:
    """`ds.resolved_paths`, after making sure each pattern matched something and each file can be read."""
    from mpipipe.data.fragment import _SUFFIXES, _WILDCARDS, _check_regular

    if ds._resolved_paths is None:
        if not ds.paths:
            raise PlanError("no input paths given")
        for p in dict.fromkeys(ds.absolute_paths):
            if not _resolve([p], ds.format):
                hint = "" if _WILDCARDS.search(p) else \
                    f" (a directory is searched for {', '.join(_SUFFIXES[ds.format])} files)"
                raise PlanError(f"input path {p!r} matches no file{hint}")
    files = ds.resolved_paths
    seen: set = set()
    for f in files:
        if f in seen or is_uri(f):
            continue
        seen.add(f)
        if not os.path.lexists(f):
            raise PlanError(f"input path {f!r} matches no file")
        _check_regular(f)
        if not os.access(f, os.R_OK):
            raise PlanError(f"input file {f} is not readable (permission denied)")
    return files


class FileDataSet(DataSet):
    """Files of one format; `options` go to DuckDB's reader of that format."""

    def __init__(self, paths: Any, root_dir: Optional[str] = "", recursive: bool = False,
                 columns: Optional[Sequence[str]] = None, union_by_name: bool = False,
                 options: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(paths, root_dir, recursive, columns, union_by_name)
        self.options = tuple(sorted((options or {}).items()))
        self._files: Optional[List[str]] = None

    def _forget(self) -> None:
        self._files = None

    @property
    def files(self) -> List[str]:
        if self._files is None:
            self._files = _checked_files(self)
        return self._files

    def fragments(self) -> List[Fragment]:
        return [Fragment(f, self.format, options=self._reader_options(self._fragment_options(f))) for f in self.files]

    def fingerprint(self) -> str:
        h = hashlib.sha1(repr((self.format, self.options, self.columns, self.union_by_name)).encode())
        stats: Dict[str, str] = {}
        for f in self.files:
            if f not in stats:
                if is_uri(f):
                    stats[f] = f
                else:
                    st = os.stat(f)
                    stats[f] = f"{f}|{st.st_size}|{st.st_mtime_ns}"
            h.update(stats[f].encode())
        return h.hexdigest()[:16]


class ParquetDataSet(FileDataSet):
    """Parquet files, globs or directories (searched recursively for *.parquet).

    `generated_columns` ("filename", "file_row_number") are DuckDB's extra columns, added when the dataset
    is read through SQL (`sql_query_fragment`, a ProjectionNode).
    """

    format = "parquet"
    # file -> {dimension: partition}, set on the output of a partitioned plan loaded back (load_partitioned_datasets)
    _partition_keys: Optional[Dict[str, Dict[str, int]]] = None

    def __init__(self, paths: Any, root_dir: Optional[str] = "", recursive: bool = False,
                 columns: Optional[Sequence[str]] = None, generated_columns: Optional[Sequence[str]] = None,
                 union_by_name: bool = False, **options: Any) -> None:
        super().__init__(paths, root_dir, recursive, columns, union_by_name, options)
        self.generated_columns = list(generated_columns or [])
        self._resolved_row_ranges: Optional[List[Any]] = None

    def _forget(self) -> None:
        super()._forget()
        self._resolved_row_ranges = None

    @staticmethod
    def _from_fragments(fragments: Sequence[Fragment]) -> "ParquetDataSet":
        """The dataset of a partition's fragments (whole files, row ranges or row groups), as a task sees it."""
        from mpipipe.io.arrow import RowRange

        ds = ParquetDataSet([f.path for f in fragments])
        ds._resolved_paths = [f.path for f in fragments]
        if all(f.whole for f in fragments):
            return ds
        ranges = []
        for f in fragments:
            whole = RowRange.of_file(f.path)
            if f.rows is not None:
                whole.begin, whole.end = f.rows
            elif f.row_groups is not None:
                import pyarrow.parquet as pq

                md = pq.read_metadata(f.path)
                starts = [0]
                for g in range(md.num_row_groups):
                    starts.append(starts[-1] + md.row_group(g).num_rows)
                for g in f.row_groups:
                    ranges.append(RowRange(f.path, whole.data_size, whole.file_num_rows, starts[g], starts[g + 1]))
                continue
            ranges.append(whole)
        ds._resolved_row_ranges = ranges
        return ds

    @staticmethod
    def create_from(table: Any, output_dir: str, filename: str = "data") -> "ParquetDataSet":
        """Write `table` into `output_dir` and return the dataset of those files."""
        from mpipipe.io.arrow import dump_to_parquet_files

        dump_to_parquet_files(table, output_dir, filename)
        return ParquetDataSet([os.path.join(output_dir, f"{filename}*.parquet")])

    @property
    def resolved_row_ranges(self) -> List[Any]:
        """One RowRange per file (all its rows), or the ranges a row split gave this dataset."""
        if self._resolved_row_ranges is None:
            from concurrent.futures import ThreadPoolExecutor

            from mpipipe.io.arrow import RowRange

            files = self.files
            unique = list(dict.fromkeys(files))
            if len(unique) > 1:
                with ThreadPoolExecutor(min(16, len(unique))) as pool:
                    found = dict(zip(unique, pool.map(RowRange.of_file, unique)))
            else:
                found = {f: RowRange.of_file(f) for f in unique}
            self._resolved_row_ranges = [copy.copy(found[f]) for f in files]
        return self._resolved_row_ranges

    def _count_rows(self) -> int:
        return sum(r.num_rows for r in self.resolved_row_ranges)

    @property
    def estimated_data_size(self) -> int:
        return sum(r.estimated_data_size for r in self.resolved_row_ranges)

    def fragments(self) -> List[Fragment]:
        if self._resolved_row_ranges is None:
            return super().fragments()
        opts = self._reader_options(tuple(self.options))
        return [Fragment(r.path, "parquet", options=opts) if r.whole_file
                else Fragment(r.path, "parquet", rows=(r.begin, r.end), options=opts)
                for r in self._resolved_row_ranges if r.num_rows > 0 or r.whole_file]

    def _with_ranges(self, ranges: List[Any]) -> "ParquetDataSet":
        other = self._with_files([r.path for r in ranges])
        assert isinstance(other, ParquetDataSet)
        other._resolved_row_ranges = list(ranges)
        return other

    def partition_by_files(self, npartition: int, random_shuffle: bool = False) -> List["DataSet"]:
        if self._resolved_row_ranges is not None:
            return list(self.partition_by_rows(npartition, random_shuffle))
        return super().partition_by_files(npartition, random_shuffle)

    def partition_by_rows(self, npartition: int, random_shuffle: bool = False) -> List["ParquetDataSet"]:
        """`npartition` datasets of row ranges holding as even a share of the rows as can be (sizes differ by
        at most one row); `random_shuffle` shuffles the files first."""
        from mpipipe.io.arrow import RowRange

        _check_count(npartition)
        ranges = list(self.resolved_row_ranges)
        if random_shuffle:
            ranges = random.sample(ranges, len(ranges))
        return [self._with_ranges(sorted(part, key=lambda r: (r.path, r.begin)))
                for part in RowRange.partition_by_rows(ranges, npartition)]

    def partition_by_size(self, max_partition_size: int) -> List["ParquetDataSet"]:
        """Row partitions of at most about `max_partition_size` uncompressed bytes each."""
        if max_partition_size < 1:
            raise PlanError(f"max_partition_size must be >= 1 byte, got {max_partition_size!r}")
        if self.empty:
            return []
        return self.partition_by_rows(self.estimated_data_size // max_partition_size + 1)

    def remove_empty_files(self) -> None:
        """Drop files without rows (keeping one, so the dataset still has a schema)."""
        kept = [r for r in self.resolved_row_ranges if r.num_rows > 0] or self.resolved_row_ranges[:1]
        if len(kept) != len(self.resolved_row_ranges):
            ranges = kept
            self.paths = [r.path for r in ranges]
            self.root_dir = None
            self._resolved_paths = list(self.paths)
            self._files = None
            self._resolved_row_ranges = ranges
            self._resolved_num_rows = None

    def load_partitioned_datasets(self, npartition: int, data_partition_column: str,
                                  hive_partitioning: bool = False) -> List["ParquetDataSet"]:
        """The files grouped by the partition number each holds, read from a `column=N` folder name
        (`hive_partitioning`), the file's key-value metadata, or the column's (single) value in the file."""
        _check_count(npartition)
        groups: List[List[Any]] = [[] for _ in range(npartition)]
        known = getattr(self, "_partition_keys", None) or {}
        for r in self.resolved_row_ranges:
            key = known.get(r.path, {}).get(data_partition_column)
            if key is None:
                key = _partition_key(r.path, data_partition_column, hive_partitioning)
            if key is None:
                continue
            if not 0 <= key < npartition:
                raise PlanError(f"{r.path} holds partition {key} of column {data_partition_column!r}, outside "
                                f"0..{npartition - 1}; give the number of partitions it was written with")
            groups[key].append(r)
        return [self._with_ranges(g) for g in groups]

    def sql_query_fragment(self, filesystem: Any = None, conn: Any = None) -> str:
        from mpipipe.steps.partio import _duck_reader

        extra = tuple((c, True) for c in self.generated_columns)
        ranges = self.resolved_row_ranges
        if not ranges:
            raise PlanError(f"{self!r} has no files to read")
        whole = [r.path for r in ranges if r.whole_file]
        parts = []
        opts = self._reader_options(tuple(self.options)) + extra
        cols = self._column_str if not self.columns or "*" in self.columns else \
            ", ".join([self._column_str] + [c for c in self.generated_columns])
        if whole:
            parts.append(f"SELECT {cols} FROM {_duck_reader('parquet', whole, opts)}")
        for r in ranges:
            if r.whole_file or r.num_rows == 0:
                continue
            keep = "" if "file_row_number" in self.generated_columns else " EXCLUDE (file_row_number)"
            with_rows = opts if "file_row_number" in self.generated_columns else opts + (("file_row_number", True),)
            inner = (f"SELECT *{keep} FROM (SELECT * FROM {_duck_reader('parquet', [r.path], with_rows)} "
                     f"WHERE file_row_number BETWEEN {r.begin} AND {r.end - 1})")
            parts.append(f"SELECT {cols} FROM ({inner})")
        if not parts:
            parts.append(f"SELECT {cols} FROM {_duck_reader('parquet', [ranges[0].path], opts)} LIMIT 0")
        glue = " UNION ALL BY NAME " if self.union_by_name else " UNION ALL "
        return "( " + glue.join(parts) + " )"

    def to_arrow_table(self, max_workers: int = 16, filesystem: Any = None, conn: Any = None) -> Any:
        if conn is not None:
            return super().to_arrow_table(max_workers, filesystem, conn)
        from mpipipe.io.arrow import load_from_parquet_files

        ranges = [r for r in self.resolved_row_ranges]
        if not ranges:
            import pyarrow as pa

            return pa.table({})
        return load_from_parquet_files(ranges, self.columns, max_workers, filesystem)

    def to_batch_reader(self, batch_size: int = _BATCH, filesystem: Any = None, conn: Any = None) -> Any:
        if conn is not None:
            return super().to_batch_reader(batch_size, filesystem, conn)
        from mpipipe.io.arrow import build_batch_reader_from_files

        return build_batch_reader_from_files(self.resolved_row_ranges, columns=self.columns, batch_size=batch_size,
                                             filesystem=filesystem)


class _Count(int):
    """A row count that is also callable: `ds.num_rows` (smallpond) and `data.num_rows()` (PartitionData)."""

    def __call__(self) -> int:
        return int(self)


class PartitionDataSet(ParquetDataSet):
    """What a task reads from one input, with smallpond's dataset surface (`resolved_paths`, `num_files`,
    `num_rows`, `to_arrow_table()`, ...) and PartitionData's (`fragments`, `other_files`, `to_arrow()`,
    `reader()`, `batches()`, `schema()`)."""

    def __init__(self, data: Any) -> None:
        frags = list(data.fragments)
        base = ParquetDataSet._from_fragments(frags) if all(f.format == "parquet" for f in frags) else None
        super().__init__([f.path for f in frags])
        self._resolved_paths = [f.path for f in frags]
        self._resolved_row_ranges = base._resolved_row_ranges if base is not None else None
        self._data = data

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("_data")
        if data is None:
            raise AttributeError(name)
        return getattr(data, name)

    def fragments(self) -> List[Fragment]:  # type: ignore[override]
        return list(self._data.fragments)

    @property
    def num_rows(self) -> int:  # type: ignore[override]
        return _Count(self._data.num_rows())

    def schema(self) -> Any:
        return self._data.schema()

    def to_arrow_table(self, max_workers: int = 16, filesystem: Any = None, conn: Any = None) -> Any:
        if conn is not None:
            return super().to_arrow_table(max_workers, filesystem, conn)
        table = self._data.to_arrow()
        return table.select(self.columns) if self.columns else table

    def to_batch_reader(self, batch_size: int = _BATCH, filesystem: Any = None, conn: Any = None) -> Any:
        if conn is not None:
            return super().to_batch_reader(batch_size, filesystem, conn)
        return self._data.reader(batch_size)

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)


def partition_dataset(data: Any) -> PartitionDataSet:
    return PartitionDataSet(data)


def _partition_key(path: str, column: str, hive: bool) -> Optional[int]:
    """The partition number a file holds: from its `column=N` folder, its metadata, or its rows."""
    import pyarrow.parquet as pq

    from mpipipe.io.common import PARQUET_METADATA_KEY_PREFIX

    if hive:
        for part in path.split(os.sep):
            if part.startswith(column + "="):
                return int(part[len(column) + 1:])
        raise PlanError(f"no folder named {column}=N in the path {path}; read it without hive_partitioning")
    pf = pq.ParquetFile(path)
    meta = pf.schema_arrow.metadata or {}
    for key in (f"{PARQUET_METADATA_KEY_PREFIX}{column}".encode(), f"mpipipe:{column}".encode()):
        if key in meta:
            return int(meta[key])
    if pf.metadata.num_rows == 0:
        return None
    if column not in pf.schema_arrow.names:
        raise PlanError(f"{path} has no column {column!r} and no partition number in its metadata")
    values = set(pf.read(columns=[column]).column(0).to_pylist())
    if len(values) != 1:
        raise PlanError(f"{path} holds rows of several partitions ({sorted(values)[:5]}) in column {column!r}")
    value = values.pop()
    return int(value) if value is not None else None


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
            register_empty(con, "t", pa.schema(arrow))
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
            raise PlanError(f"schema: the type of column {name!r} must be a DuckDB type name or a pyarrow type, "
                            f"got {t!r}")
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


def _text_args(columns: Any, options: Dict[str, Any], **given: Any) -> Tuple[Optional[List[str]], Dict[str, Any]]:
    """smallpond's `columns` (a list: columns to load) apart from DuckDB's `columns` (a dict: names and
    types), and the keywords given explicitly added to the reader options when set."""
    keep = None
    if isinstance(columns, (list, tuple)):
        keep = list(columns)
    elif columns is not None:
        options["columns"] = columns
    options.update({k: v for k, v in given.items() if v is not None})
    return keep, options


class CsvDataSet(FileDataSet):
    """CSV and TSV files, read by DuckDB's read_csv (other options go there too, e.g. delim='|').

    Nothing that decides rows is guessed: `header` is True unless the columns are given (`schema=`,
    `columns=` as a dict, `names=`), then False; pass header= to say otherwise. `schema` is
    `{column: type}` (DuckDB type names or pyarrow types, in file order) or a pyarrow.Schema: the file's
    columns, with no header row unless header=True, as in smallpond. A .tsv file is tab-separated unless
    `delim` is given. Without a schema, DuckDB infers each column's type from every row, dates only in ISO
    form (give `dateformat=` for others), and a day/month order it would have to guess for timestamps is
    an error that asks for `timestampformat=`. `columns` as a list keeps only those columns.
    """

    format = "csv"

    def __init__(self, paths: Any, schema: Any = None, delim: Optional[str] = None,
                 max_line_size: Optional[int] = None, parallel: Optional[bool] = None, header: Optional[bool] = None,
                 root_dir: Optional[str] = "", recursive: bool = False, columns: Any = None,
                 union_by_name: bool = False, **options: Any) -> None:
        keep, options = _text_args(columns, options, delim=delim, max_line_size=max_line_size,
                                   parallel=None if parallel is None or parallel else False, header=header)
        super().__init__(paths, root_dir, recursive, keep, union_by_name, _text_options("csv", schema, options))

    def _fragment_options(self, path: str) -> Tuple[Tuple[str, Any], ...]:
        given = any(k in _DELIMITERS for k, _ in self.options)
        if not given and path.lower().endswith(_TAB_SUFFIXES):
            return tuple(sorted(self.options + (("delim", "\t"),)))
        return self.options


class JsonDataSet(FileDataSet):
    """Newline-delimited JSON files, read by DuckDB's read_json (other options go there too).

    Without `schema=` (or `columns=` as a dict), DuckDB finds the keys and types from every record of every
    file, not from a sample, so a key that first appears late is not dropped. `format` and
    `max_object_size` are DuckDB's `format` and `maximum_object_size`; `columns` as a list keeps only
    those columns.
    """

    format = "json"

    def __init__(self, paths: Any, schema: Any = None, format: Optional[str] = None,
                 max_object_size: Optional[int] = None, root_dir: Optional[str] = "", recursive: bool = False,
                 columns: Any = None, union_by_name: bool = False, **options: Any) -> None:
        keep, options = _text_args(columns, options, format=format, maximum_object_size=max_object_size)
        super().__init__(paths, root_dir, recursive, keep, union_by_name, _text_options("json", schema, options))


class FileSet(FileDataSet):
    """Files of any kind; as a table, one row per file (column `resolved_paths`)."""

    format = "files"

    def fragments(self) -> List[Fragment]:
        raise PlanError("a FileSet lists files of any kind and cannot be read as a table by a node; "
                        "read it in a PythonScriptNode, or use ParquetDataSet, CsvDataSet or JsonDataSet")

    def to_arrow_table(self, max_workers: int = 16, filesystem: Any = None, conn: Any = None) -> Any:
        import pyarrow as pa

        return pa.table({"resolved_paths": pa.array(self.resolved_paths, pa.string())})

    def to_batch_reader(self, batch_size: int = _BATCH, filesystem: Any = None, conn: Any = None) -> Any:
        return self.to_arrow_table().to_reader(batch_size)


class ArrowTableDataSet(DataSet):
    """An in-memory Arrow table; it is shipped with the plan, so keep it modest in size."""

    def __init__(self, table: Any) -> None:
        import pyarrow as pa

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise PlanError(f"ArrowTableDataSet needs a pyarrow.Table, got {type(table).__name__}")
        super().__init__()
        self.table = table

    def fragments(self) -> List[Fragment]:
        return []

    def schema(self) -> Any:
        return self.table.schema

    def in_memory_table(self) -> Any:
        return self.table

    def sql_query_fragment(self, filesystem: Any = None, conn: Any = None) -> str:
        """The table registered in `conn` (needed: an in-memory table has no file DuckDB could read)."""
        if conn is None:
            raise PlanError(f"{self!r} is in memory: give sql_query_fragment(conn=...) a DuckDB connection to "
                            "register it in")
        name = f"__mpipipe_table_{id(self.table):x}"
        register_arrow(conn, name, self.table)
        return f"( SELECT {self._column_str} FROM {name} )"

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
        self.df = df

    def to_pandas(self) -> Any:
        return self.df

    def __repr__(self) -> str:
        return f"PandasDataSet({self.table.num_rows} rows)"


class SqlQueryDataSet(ArrowTableDataSet):
    """The rows of a DuckDB query that reads no files of the plan (`select * from range(10)`).

    The query runs once, on the driver, when the dataset is first read or a source node is built, and
    its rows travel with the plan like an in-memory table (keep it modest). `query_builder(conn,
    filesystem) -> str`, when given, makes the query text instead.
    """

    def __init__(self, sql_query: str, query_builder: Optional[Callable[[Any, Any], str]] = None) -> None:
        DataSet.__init__(self)
        if not isinstance(sql_query, str) or not sql_query.strip():
            raise PlanError(f"SqlQueryDataSet needs a SQL query, got {sql_query!r}")
        self.sql_query = sql_query
        self.query_builder = query_builder
        self._table: Any = None

    @property
    def table(self) -> Any:  # type: ignore[override]
        if self._table is None:
            import duckdb

            con = duckdb.connect()
            try:
                query = self.query_builder(con, None) if self.query_builder is not None else self.sql_query
                self._table = con.sql(query).to_arrow_table()
            except duckdb.Error as e:
                raise PlanError(f"SqlQueryDataSet: the query {self.sql_query!r} failed: {' '.join(str(e).split())}") \
                    from None
            finally:
                con.close()
        return self._table

    @table.setter
    def table(self, value: Any) -> None:
        self._table = value

    def sql_query_fragment(self, filesystem: Any = None, conn: Any = None) -> str:
        query = self.query_builder(conn, filesystem) if self.query_builder is not None else self.sql_query
        return f"( {query} )"

    def fingerprint(self) -> str:
        return hashlib.sha1(self.sql_query.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SqlQueryDataSet({self.sql_query!r})"


class PartitionedDataSet(DataSet):
    """Datasets that are the partitions of one: `ds[i]` is partition i; read whole, it is all of them."""

    def __init__(self, datasets: Sequence[DataSet]) -> None:
        if not datasets:
            raise PlanError("PartitionedDataSet needs at least one dataset")
        self.datasets = list(datasets)
        first = self.datasets[0]
        super().__init__([p for d in self.datasets for p in d.resolved_paths], None, first.recursive,
                         first.columns, first.union_by_name)
        self.format = first.format  # type: ignore[misc]

    def __getitem__(self, i: int) -> DataSet:
        return self.datasets[i]

    def __len__(self) -> int:
        return len(self.datasets)

    def fragments(self) -> List[Fragment]:
        return [f for d in self.datasets for f in d.fragments()]

    def fingerprint(self) -> str:
        return hashlib.sha1("|".join(d.fingerprint() for d in self.datasets).encode()).hexdigest()[:16]


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
