"""Handing an Arrow table to DuckDB without loading pandas.

DuckDB checks any Python object it is given against pandas' types, and
imports pandas to do so (about 0.3 s of CPU) even for an Arrow table. mpipipe
gives DuckDB Arrow tables where it binds a plan's SQL on rank 0 and where a
task reads Arrow IPC intermediates, so every script and every worker paid for
pandas without using it. Unless pandas is loaded already, it is kept from
loading for the registration; DuckDB then takes the object for what it is, and
a pandas DataFrame given later is still recognised. Only while this is the
process's one thread: no other code can be importing pandas meanwhile.
"""
from __future__ import annotations

import sys
import threading
from typing import Any


def register_arrow(con: Any, name: str, table: Any) -> None:
    """con.register(name, table) for a pyarrow Table, Dataset or RecordBatchReader."""
    if "pandas" in sys.modules or threading.active_count() > 1:
        con.register(name, table)
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` fails: DuckDB skips its check
    try:
        con.register(name, table)
    finally:
        if "pandas" in sys.modules and sys.modules["pandas"] is None:
            del sys.modules["pandas"]


def register_empty(con: Any, name: str, schema: Any) -> None:
    """A table of `schema` with no rows, for DuckDB to bind a query against (Schema.empty_table() would load
    pandas too: pyarrow's pandas shim looks at its metadata)."""
    import pyarrow as pa

    register_arrow(con, name, pa.Table.from_batches([], schema=schema))
