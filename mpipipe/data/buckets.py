"""Where a partitioning task's buckets live, and which task of the next node reads each: one answer for the
task bodies that write and read them (mpipipe.steps), the plan (mpipipe.logical) and the ranks that move them
between hosts in an MPI shuffle (mpipipe.execution.mpi_shuffle).
"""
from __future__ import annotations

import os
from typing import List, Sequence

BUCKET_COLUMN = "__mpipipe_bucket"


def bucket_name(bucket: int) -> str:
    """The folder of bucket `bucket` inside a partitioning task's output (DuckDB's hive naming)."""
    return f"{BUCKET_COLUMN}={bucket}"


def bucket_dir(output: str, bucket: int) -> str:
    """Where bucket `bucket` of a partitioning task's output lives."""
    return os.path.join(output, bucket_name(bucket))


def bucket_folders_of(paths: Sequence[str], j: int, nbuckets: int, nested: bool, split: int) -> List[str]:
    """The folders holding partition j of a partitioning node, given all its task outputs: bucket j of every
    task, or (nested) bucket j % nbuckets of the `split` task(s) of input partition j // nbuckets."""
    if nested:
        return [bucket_dir(paths[(j // nbuckets) * split + r], j % nbuckets) for r in range(split)]
    return [bucket_dir(d, j) for d in paths]


def reader_of(task: int, bucket: int, nbuckets: int, nested: bool, split: int) -> int:
    """The partition of the next node that reads bucket `bucket` of map task `task` (bucket_folders_of's
    inverse)."""
    return (task // split) * nbuckets + bucket if nested else bucket
