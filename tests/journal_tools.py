"""Reading a job's journal from tests: how often each task finished."""
from __future__ import annotations

import collections
import glob
import os
from typing import Counter

from mpipipe.execution.journal import OK, kind, read_records


def job_dir(data_root: str) -> str:
    dirs = [d for d in glob.glob(os.path.join(data_root, "*")) if os.path.isdir(d)]
    assert len(dirs) == 1, f"expected one job directory under {data_root}, found {dirs}"
    return dirs[0]


def ok_counts(data_root: str) -> Counter:
    """Task key -> number of successful outcomes journaled for it (across all runs)."""
    path = os.path.join(job_dir(data_root), "journal.log")
    return collections.Counter(r["k"] for r in read_records(path) if kind(r) == OK)


def records(data_root: str):
    return list(read_records(os.path.join(job_dir(data_root), "journal.log")))
