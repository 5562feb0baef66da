"""Checking input files before a plan runs: each a small read, so a bad file anywhere in a dataset stops
the plan with its name instead of reaching a task, or a sink that looks complete.

Parquet: every footer is read and its columns compared with the first file's. CSV: every header row is
compared with the first file's, and the first file's dates are looked at for a day/month order DuckDB
would have to guess.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from mpipipe.data.fragment import Fragment, is_uri
from mpipipe.steps.partio import (DataError, _local_copy, _merged, _metadata_schema, _one_line, _open, _schema_text,
                                  _sql_literal, nullable_schema, parquet_metadata, schema_difference)


def check_parquet_files(paths: Sequence[str], threads: int = 16) -> Tuple[pa.Schema, List[pq.FileMetaData]]:
    """Read every file's footer (in parallel on an object store, where each is a round trip) and check that all
    files agree with the first on columns and types. Returns the schema (nullable) and the footers; the
    first bad file in order raises DataError naming it and what is wrong."""
    if not paths:
        raise DataError("no Parquet files to check")

    def footer(path: str) -> Any:
        try:
            return parquet_metadata(path)
        except DataError as e:
            return e

    remote = any(is_uri(p) and not p.startswith("file://") for p in paths)
    if remote and len(paths) > 1 and threads > 1:  # local footers are faster one after the other
        with ThreadPoolExecutor(min(threads, len(paths))) as pool:
            footers = list(pool.map(footer, paths))
    else:
        footers = [footer(p) for p in paths]
    schema: Optional[pa.Schema] = None
    for path, md in zip(paths, footers):
        if isinstance(md, DataError):
            raise md
        if md.num_row_groups and md.num_columns and md.row_group(0).column(0).file_path:
            raise DataError(f"Parquet file {path} is a summary (like _metadata) whose row groups are in other "
                            "files; reading it as data would count those rows twice: leave it out of the input")
        s = _metadata_schema(md, path)
        if schema is None:
            schema = s
            continue
        diff = schema_difference(schema, s)
        if diff:
            raise DataError(f"Parquet file {path} does not match the dataset's schema {_schema_text(schema)} taken "
                            f"from {paths[0]}: it has {diff}; every file of one dataset needs the same columns and "
                            "types: rewrite that file, or read it as a separate dataset and cast it to these columns")
        schema = _merged(schema, s)
    assert schema is not None
    return nullable_schema(schema), [md for md in footers]


def _sniff(path: str, columns: str, options: str) -> Any:
    """One row of DuckDB's sniff_csv of a file (its first 20,480 rows), `columns` of it, with `options`."""
    import duckdb

    with _local_copy(path) as local:
        con = duckdb.connect()
        try:
            lit = "'" + local.replace("'", "''") + "'"
            extra = f"{options}, " if options else ""
            return con.execute(f"SELECT {columns} FROM sniff_csv({lit}, {extra}sample_size = 20480)").fetchone()
        except duckdb.Error as e:
            raise DataError(f"cannot read csv file {path}: {_one_line(e)}") from None
        finally:
            con.close()


def _csv_dialect(frag: Fragment) -> Tuple[str, str, str, int]:
    """(delimiter, quote, escape, rows skipped) of a CSV fragment: its options, else DuckDB's sniff of the file."""
    opts = dict(frag.options)
    delim = next((opts[k] for k in ("delim", "sep", "delimiter") if k in opts), None)
    quote, escape, skip = opts.get("quote", '"'), opts.get("escape", opts.get("quote", '"')), int(opts.get("skip", 0))
    if delim is None:
        row = _sniff(frag.path, "Delimiter, Quote, Escape, SkipRows", "header = true")
        delim = row[0]
        if "quote" not in opts and row[1] != "(empty)":
            quote = row[1]
        if "escape" not in opts and row[2] != "(empty)":
            escape = row[2]
        if "skip" not in opts:
            skip = int(row[3])
    return str(delim), str(quote or '"'), str(escape or quote or '"'), skip


def _csv_header(frag: Fragment, dialect: Tuple[str, str, str, int]) -> List[str]:
    """The names in a CSV file's header row: one small read of its start."""
    import csv
    import gzip
    import io

    delim, quote, escape, skip = dialect
    fs, p = _open(frag.path)
    try:
        if fs is not None:
            raw: Any = fs.open_input_stream(p)  # decompresses .gz by its name
        else:
            raw = gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as text:
            for _ in range(skip):
                text.readline()
            if len(delim) != 1:
                return text.readline().rstrip("\r\n").split(delim)
            reader = csv.reader(text, delimiter=delim, quotechar=quote[:1] or '"', doublequote=escape == quote,
                                escapechar=None if escape == quote else escape[:1] or None)
            return next(reader, [])
    except FileNotFoundError:
        raise DataError(f"csv file {frag.path} does not exist (any more)") from None
    except (OSError, csv.Error, pa.ArrowException) as e:
        raise DataError(f"cannot read the header row of csv file {frag.path}: {_one_line(e)}") from None


def _ambiguous_date_format(fmt: Optional[str]) -> bool:
    """A strptime format whose day and month could be read either way round (not year first)."""
    if not fmt:
        return False
    return "%d" in fmt and "%m" in fmt and not fmt.lstrip().startswith("%Y")


def check_csv_formats(frags: Sequence[Fragment]) -> None:
    """DuckDB picks a timestamp format from the text; one with day and month in either order is a guess
    (01/02/2024 10:00), so the first file of each kind is sniffed and a guessed order is an error."""
    seen = set()
    for f in frags:
        opts = dict(f.options)
        if f.format != "csv" or "columns" in opts or "timestampformat" in opts or repr(f.options) in seen:
            continue
        seen.add(repr(f.options))
        sniff_opts = ", ".join(f"{k} = {_sql_literal(v)}" for k, v in f.options
                               if k in ("delim", "sep", "quote", "escape", "header", "dateformat", "skip", "names",
                                        "new_line", "comment"))
        row = _sniff(f.path, "DateFormat, TimestampFormat", sniff_opts)
        for key, fmt in (("dateformat", row[0]), ("timestampformat", row[1])):
            if key not in opts and _ambiguous_date_format(fmt):
                raise DataError(f"csv file {f.path} has {'timestamps' if key == 'timestampformat' else 'dates'} "
                                f"that DuckDB would read as {fmt}, a guess at the order of day and month; pass "
                                f"{key}='{fmt}' if that is right (or the other order), or the types with schema=")


def check_csv_headers(frags: Sequence[Fragment], threads: int = 16) -> None:
    """Files with a header row must all name the same columns: DuckDB reads several files by the first one's
    columns and quietly drops a column that only a later file has."""
    frags = [f for f in frags if f.format == "csv" and dict(f.options).get("header") is True
             and "columns" not in dict(f.options)]
    if len(frags) < 2:
        return
    dialects: Dict[Any, Tuple[str, str, str, int]] = {}
    for f in frags:
        key = repr(f.options)
        if key not in dialects:
            dialects[key] = _csv_dialect(f)
    if threads > 1 and len(frags) > 1 and any(is_uri(f.path) and not f.path.startswith("file://") for f in frags):
        with ThreadPoolExecutor(min(threads, len(frags))) as pool:
            headers = list(pool.map(lambda f: _csv_header(f, dialects[repr(f.options)]), frags))
    else:
        headers = [_csv_header(f, dialects[repr(f.options)]) for f in frags]
    first = headers[0]
    for f, names in zip(frags, headers):
        if not names:
            raise DataError(f"csv file {f.path} has no header row (it is empty), but the dataset's files have one "
                            "(header=True); remove the empty file, or pass header=False and the column names")
    for f, names in zip(frags[1:], headers[1:]):
        if sorted(names) != sorted(first):  # DuckDB matches columns by name, so their order may differ
            missing = [n for n in first if n not in names]
            extra = [n for n in names if n not in first]
            what = "; ".join(x for x in (f"no column {missing}" if missing else "",
                                         f"extra column {extra}" if extra else "") if x) or "a column named twice"
            raise DataError(f"csv file {f.path} has header {names} but {frags[0].path} has {first} ({what}); every "
                            "file of one dataset needs the same columns: fix the file, or read it as a separate "
                            "dataset")
