"""What a task body returned, as an Arrow table: the one conversion Arrow and stream nodes share."""
from __future__ import annotations

from typing import Any


def to_table(value: Any, where: str) -> Any:
    """What a body returned, as an Arrow table (tables, batches, pandas frames and lists of rows are accepted)."""
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if type(value).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(value, preserve_index=False)
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        return pa.Table.from_pylist(value)
    raise TypeError(f"{where} returned {type(value).__name__}; return a pyarrow.Table "
                    "(an empty one for no rows), a RecordBatch or a pandas DataFrame")
