"""Datasets: where a plan's data comes from, described without reading it.

A dataset resolves to a list of `Fragment`s (a file, or part of one) when its
source node is built, so a path that matches nothing is an error before
anything runs. Local and shared POSIX paths are used as they are; object-store
URIs (`s3://bucket/key`, anything pyarrow.fs knows) are listed and read through
pyarrow.fs. In-memory tables travel with the plan and are written to Parquet by
their source task.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Union

from mpipipe.errors import PlanError

from mpipipe.data.fragment import Fragment, expand_paths, is_uri  # noqa: F401 - Fragment is part of this face

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
