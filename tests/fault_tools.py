"""Shared by the fault-tolerance tests: inputs for tests/pipelines/data_job.py, its command line, what its
output and journal say, and a look at what a run left in its job directory."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import duckdb

from helpers import BIN, REPO, Done, run
from mpipipe.execution.journal import read_records

DATA_JOB = os.path.join(REPO, "tests", "pipelines", "data_job.py")
MPIEXEC = os.path.join(BIN, "mpiexec")
HAS_MPIEXEC = os.path.exists(MPIEXEC)
QUIET = ("--progress-interval", "60")  # the closing summary, without progress lines


def write_inputs(folder: str, files: int = 4, rows: int = 2000, keys: int = 500, seed: int = 1,
                 big_values: bool = False) -> Tuple[str, str]:
    """Parquet files of (key BIGINT, val BIGINT) in folder/in/, and folder/dims.parquet (key, label) for
    every other key below 1000; returns (input folder, dims file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.join(folder, "in"), exist_ok=True)
    rng = np.random.default_rng(seed)
    hi = 10 ** 12 if big_values else 1000
    for f in range(files):
        table = pa.table({"key": rng.integers(0, keys, rows), "val": rng.integers(-hi, hi, rows)})
        pq.write_table(table, os.path.join(folder, "in", f"f{f}.parquet"), row_group_size=max(1, rows // 4))
    dims = os.path.join(folder, "dims.parquet")
    write_dims(dims, min(keys, 1000))
    return os.path.join(folder, "in"), dims


def write_dims(path: str, keys: int, prefix: str = "L") -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ks = np.arange(0, keys, 2)
    pq.write_table(pa.table({"key": ks, "label": [f"{prefix}{k}" for k in ks]}), path)


def job_argv(inputs: str, dims: str, out: str, data_root: str, *extra: str, mpi: Optional[int] = None) -> List[str]:
    """The pipeline's command line: local by default, `mpi=N` for a world of N ranks under mpiexec."""
    args = [DATA_JOB, "--input", inputs, "--dims", dims, "--out", out, "--data-root", data_root, *QUIET, *extra]
    if mpi:
        return [MPIEXEC, "-n", str(mpi), sys.executable, *args]
    return [sys.executable, *args]


def run_job(argv: List[str], timeout: float = 150, check: bool = True) -> Done:
    return run(argv, timeout=timeout, check=check)


def print_keys(inputs: str, dims: str, out: str, *extra: str) -> Dict[str, List[str]]:
    """Node name -> its task keys, from the script itself (it builds the plan and runs nothing)."""
    done = run([sys.executable, DATA_JOB, "--input", inputs, "--dims", dims, "--out", out, "--print-keys", *extra],
               timeout=60, check=True)
    nodes = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: [f"{fp}:{p}" for p in range(n)] for name, (fp, n) in nodes.items()}


# --- the output ------------------------------------------------------------------------------------

def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # a sum is HUGEINT in DuckDB and DOUBLE once written to Parquet
    return value


def rows_checksum(rows: List[tuple]) -> Tuple[int, str]:
    h = hashlib.sha256()
    for row in sorted(tuple(_canonical(v) for v in r) for r in rows):
        h.update(repr(row).encode())
    return len(rows), h.hexdigest()


def output_checksum(folder: str) -> Tuple[int, str]:
    """(rows, sha256) of a sink folder's rows, read with DuckDB and put in a canonical order."""
    files = sorted(glob.glob(os.path.join(glob.escape(folder), "*.parquet")))
    assert files, f"no Parquet files in {folder}"
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT key, n, total, label, score FROM read_parquet(?) ORDER BY ALL", [files]).fetchall()
    finally:
        con.close()
    return rows_checksum(rows)


def expected_checksum(inputs: str, dims: str, variant: str = "a") -> Tuple[int, str]:
    """What the pipeline computes, computed here by DuckDB in one query."""
    factor = 3 if variant == "b" else 2
    files = sorted(glob.glob(os.path.join(glob.escape(inputs), "*.parquet")))
    con = duckdb.connect()
    try:
        rows = con.execute(f"""
            SELECT g.key, g.n, g.total, d.label, g.total * {factor} + g.n AS score
            FROM (SELECT key, count(*) AS n, sum(val) AS total FROM read_parquet(?) GROUP BY key) g
            LEFT JOIN read_parquet(?) d USING (key)""", [files, dims]).fetchall()
    finally:
        con.close()
    return rows_checksum(rows)


# --- the job directory -----------------------------------------------------------------------------

def job_dirs(data_root: str) -> List[str]:
    return sorted(d for d in glob.glob(os.path.join(glob.escape(data_root), "*"))
                  if os.path.isdir(d) and os.path.exists(os.path.join(d, "job.json")))


def the_job_dir(data_root: str) -> str:
    dirs = job_dirs(data_root)
    assert len(dirs) == 1, f"expected one job directory under {data_root}, found {dirs}"
    return dirs[0]


def journal(job_dir: str) -> List[Dict[str, Any]]:
    return list(read_records(os.path.join(job_dir, "journal.log")))


def ok_count_by_key(recs: List[Dict[str, Any]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for r in recs:
        if r.get("s") == "ok":
            counts[r["k"]] = counts.get(r["k"], 0) + 1
    return counts


def assert_each_task_once(recs: List[Dict[str, Any]], keys: Optional[List[str]] = None) -> None:
    counts = ok_count_by_key(recs)
    twice = sorted(k for k, c in counts.items() if c != 1)
    assert not twice, f"tasks finished more than once: {twice}"
    if keys is not None:
        assert set(counts) == set(keys), f"missing: {set(keys) - set(counts)}, unexpected: {set(counts) - set(keys)}"


def summary_counts(stderr: str) -> Dict[str, int]:
    """ran, reused, retried, failed from the closing summary line."""
    import re

    m = re.search(r"([\d,]+) tasks ran .*?, ([\d,]+) reused from the journal, ([\d,]+) retried, ([\d,]+) failed",
                  stderr)
    assert m, f"no summary line in:\n{stderr}"
    ran, reused, retried, failed = (int(g.replace(",", "")) for g in m.groups())
    return {"ran": ran, "reused": reused, "retried": retried, "failed": failed}


def assert_nothing_half_done(job_dir: Optional[str], sink_out: Optional[str] = None) -> None:
    """Only committed tasks have outputs (each journaled as ok), no attempt left a staging folder behind,
    and a sink folder is either absent or complete (it holds the marker written last)."""
    if job_dir and os.path.isdir(job_dir):
        committed = {r.get("o") for r in journal(job_dir) if r.get("s") == "ok"}
        for part in glob.glob(os.path.join(glob.escape(job_dir), "outputs", "*", "part-*")):
            assert part in committed, f"{part} is in outputs/ but no task that wrote it was journaled"
        left = [p for p in glob.glob(os.path.join(glob.escape(job_dir), "outputs", "*", ".staging", "*"))]
        assert not left, f"staging folders left behind: {left}"
    if sink_out:
        beside = glob.glob(glob.escape(sink_out) + ".mpipipe-*")
        assert not beside, f"half-written sink folders beside {sink_out}: {beside}"
        if os.path.exists(sink_out):
            assert os.path.exists(os.path.join(sink_out, "_MPIPIPE_SINK")), f"{sink_out} exists without its marker"


def one_error_line(done: Done) -> str:
    """The single `mpipipe: error:` line of a failed command; no traceback anywhere."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("mpipipe: error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]
