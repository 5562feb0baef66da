"""DuckDB SQL steps: placeholders for inputs, validation at build time, one connection per task.

Inputs are written `{0}`, `{1}`, ... or `{name}` (an input's name) in the query;
each becomes a view over that input's files for this partition. DuckDB's
threads and memory limit come from the task's resources, so several executors
on one host do not each claim the whole machine.
"""
from __future__ import annotations

import os
import re
from typing import Any, List, Optional, Sequence, Tuple

import duckdb
import pyarrow as pa

from mpipipe.data.duckdb_tables import register_empty
from mpipipe.errors import PlanError
from mpipipe.steps.partio import PartitionData, _quote, nullable_query

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}")
# a placeholder, or a string literal ('...', quotes doubled inside) that is left as written,
# so `regexp_matches(s, '[0-9]{3}')` or `'{name}'` in a literal is not taken for an input
_PLACEHOLDER_OR_STRING = re.compile(r"'(?:[^']|'')*'|" + PLACEHOLDER.pattern)


def input_view(i: int) -> str:
    return f"__mpipipe_input_{i}"


def substitute(node: str, sql: str, names: Sequence[str]) -> str:
    """Replace `{0}`/`{name}` with input view names; unknown references are plan errors."""

    def repl(m: "re.Match[str]") -> str:
        ref = m.group(1)
        if ref is None:
            return m.group(0)  # a string literal
        if ref.isdigit():
            i = int(ref)
            if i >= len(names):
                raise PlanError(f"node {node!r}: the SQL refers to {{{ref}}} but the node has {len(names)} input(s) "
                                f"({_listing(names)}); add the input or fix the placeholder")
            return input_view(i)
        if ref in names:
            return input_view(names.index(ref))
        raise PlanError(f"node {node!r}: the SQL refers to {{{ref}}}, which is not an input; "
                        f"inputs are {_listing(names)}")

    return _PLACEHOLDER_OR_STRING.sub(repl, sql)


def _listing(names: Sequence[str]) -> str:
    return ", ".join(f"{{{i}}}={{{n}}}" for i, n in enumerate(names)) or "none"


def split_statements(node: str, sql: str) -> List[str]:
    """Parse with DuckDB's own parser, so a syntax error is found before anything runs."""
    try:
        stmts = [s.query for s in duckdb.extract_statements(sql)]
    except duckdb.Error as e:
        raise PlanError(f"node {node!r}: SQL does not parse: {_one_line(e)}") from None
    if not stmts:
        raise PlanError(f"node {node!r}: the SQL query is empty")
    return stmts


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def output_schema(node: str, statements: Sequence[str], schemas: Sequence[Optional[pa.Schema]]) -> Optional[pa.Schema]:
    """Bind the query against empty tables of the inputs' schemas: catches unknown columns early."""
    if any(s is None for s in schemas):
        return None
    con = duckdb.connect()
    try:
        for i, s in enumerate(schemas):
            register_empty(con, input_view(i), s)
        for stmt in statements[:-1]:
            con.execute(stmt)
        return con.sql(f"SELECT * FROM ({statements[-1]}) LIMIT 0").to_arrow_table().schema
    except (duckdb.BinderException, duckdb.CatalogException, duckdb.ParserException) as e:
        raise PlanError(f"node {node!r}: SQL error: {_one_line(e)}") from None
    except duckdb.Error:
        return None  # something only the real data can tell (a file it reads, a macro, ...)
    finally:
        con.close()


def connect(threads: int, memory: Optional[int], temp_dir: Optional[str]) -> Any:
    con = duckdb.connect(config={"threads": max(1, int(threads))})
    if memory:
        con.execute(f"SET memory_limit = '{max(64, int(memory) // (1 << 20))}MB'")
    if temp_dir:
        con.execute("SET temp_directory = '" + temp_dir.replace("'", "''") + "'")
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET enable_progress_bar = false")  # task logs are files, not terminals
    return con


def run_query(con: Any, statements: Sequence[str], inputs: Sequence[PartitionData], out_path: str) -> int:
    """Run the statements over the inputs and write the last one's result to `out_path` (Parquet)."""
    for i, data in enumerate(inputs):
        data.duckdb_source(con, input_view(i))
    for stmt in statements[:-1]:
        con.execute(stmt)
    target = out_path.replace("'", "''")
    con.execute(f"COPY ({nullable_query(con, statements[-1])}) TO '{target}' (FORMAT parquet)")
    return os.path.getsize(out_path)


def hash_expression(columns: Sequence[str], nbuckets: int) -> str:
    return f"(hash({', '.join(_quote(c) for c in columns)}) % {int(nbuckets)})::BIGINT"


def copy_partitioned(con: Any, select_sql: str, bucket_expr: str, folder: str, extra: Tuple[str, ...] = ()) -> None:
    """Write `select_sql` into one hive folder per bucket value (DuckDB does the split)."""
    from mpipipe.steps.partio import BUCKET_COLUMN

    cols = ", ".join(("*", f"{bucket_expr} AS {BUCKET_COLUMN}") + extra)
    target = folder.replace("'", "''")
    # written as DuckDB likes (NOT NULL where a bucket saw no null): wrapping this COPY for nullable columns
    # costs ~15% of its time, and readers and sinks make every column nullable anyway
    con.execute(f"COPY (SELECT {cols} FROM ({select_sql})) TO '{target}' "
                f"(FORMAT parquet, PARTITION_BY ({BUCKET_COLUMN}), OVERWRITE_OR_IGNORE true)")


def describe_error(e: BaseException) -> str:
    return _one_line(e)

