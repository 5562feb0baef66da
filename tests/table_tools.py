"""Comparing Arrow tables with what DuckDB computes, in the data tests: rows as multisets or in order."""
from __future__ import annotations

import math
from typing import Any, List, Sequence

import pyarrow as pa


def norm(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


def _key(row: Sequence[Any]) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in row)


def rows(t: pa.Table, ordered: bool = False) -> List[tuple]:
    """The table's rows as tuples (floats rounded, NaN as None), sorted unless `ordered`."""
    cols = [t.column(i).to_pylist() for i in range(t.num_columns)]
    out = [tuple(norm(c[i]) for c in cols) for i in range(t.num_rows)]
    return out if ordered else sorted(out, key=_key)


def assert_rows(actual: pa.Table, expected: pa.Table, ordered: bool = False, what: str = "") -> None:
    """Same columns and the same rows (as multisets, or in order), with the first difference on failure."""
    assert actual.column_names == expected.column_names, \
        f"{what}: columns {actual.column_names} != {expected.column_names}"
    a, e = rows(actual, ordered), rows(expected, ordered)
    if a != e:
        first = next((i for i, (x, y) in enumerate(zip(a, e)) if x != y), min(len(a), len(e)))
        how = "ordered" if ordered else "as multisets"
        raise AssertionError(f"{what}: {len(a)} rows vs {len(e)} expected ({how}); "
                             f"first difference at row {first}: {a[first:first + 2]} vs {e[first:first + 2]}")
