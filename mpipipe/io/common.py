"""Sizes, defaults and list-splitting helpers under the names smallpond scripts import.

They live here so that code ported from smallpond finds them; mpipipe's own
modules do not depend on them.
"""
from __future__ import annotations

from typing import List, Sequence, TypeVar

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB

DEFAULT_MAX_RETRY_COUNT = 5
DEFAULT_MAX_FAIL_COUNT = 3
DEFAULT_ROW_GROUP_SIZE = 122880
DEFAULT_ROW_GROUP_BYTES = DEFAULT_ROW_GROUP_SIZE * 4 * KB
DEFAULT_BATCH_SIZE = 122880
MAX_ROW_GROUP_SIZE = 10 * 1024 * 1024
MAX_PARQUET_FILE_BYTES = 8 * GB
DATA_PARTITION_COLUMN_NAME = "__data_partition__"
PARQUET_METADATA_KEY_PREFIX = "SMALLPOND:"
GENERATED_COLUMNS = ("filename", "file_row_number")

V = TypeVar("V")


def split_into_rows(items: Sequence[V], npartitions: int) -> List[List[V]]:
    """`items` in `npartitions` contiguous runs whose sizes differ by at most one, the longer ones first."""
    if npartitions < 1:
        raise ValueError(f"npartitions must be >= 1, got {npartitions}")
    base, extra = divmod(len(items), npartitions)
    out, start = [], 0
    for i in range(npartitions):
        size = base + (1 if i < extra else 0)
        out.append(list(items[start:start + size]))
        start += size
    return out


def split_into_cols(items: Sequence[V], npartitions: int) -> List[List[V]]:
    """`items` dealt round-robin into `npartitions` lists (item i goes to list i % npartitions)."""
    if npartitions < 1:
        raise ValueError(f"npartitions must be >= 1, got {npartitions}")
    return [list(items[i::npartitions]) for i in range(npartitions)]


def get_nth_partition(items: Sequence[V], n: int, npartitions: int) -> List[V]:
    """Run n of split_into_rows(items, npartitions), without building the others."""
    base, extra = divmod(len(items), npartitions)
    start = n * base + min(n, extra)
    return list(items[start:start + base + (1 if n < extra else 0)])
