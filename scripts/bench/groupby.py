"""Group-by benchmark: mpipipe (hash partition into 8, SQL per partition) against DuckDB alone.

    python scripts/bench/groupby.py --rows 20000000 --reps 3

Makes the input once (8 Parquet files: key BIGINT uniform 0..999,999, val
DOUBLE, tag VARCHAR of 10 characters), then runs, alternating, mpipipe on the
local platform with 2 executors (one DuckDB thread each) and DuckDB in one
process with 2 threads, both writing Parquet. Prints each run, the medians
(min-max) and the ratio; checks that both answers have the same groups and sums.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {src} GROUP BY key"


def make_input(folder: str, rows: int, files: int) -> None:
    import duckdb

    marker = os.path.join(folder, f".complete-{rows}-{files}")
    if os.path.exists(marker):
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    con = duckdb.connect(config={"threads": 2})
    per = rows // files
    for i in range(files):
        con.execute(f"""COPY (SELECT (hash(i * 7919 + {i}) % 1000000)::BIGINT AS key,
                                     (hash(i + {i} * 1000003) % 1000000) / 1000.0 AS val,
                                     'tag' || lpad(((hash(i) % 9999999))::VARCHAR, 7, '0') AS tag
                              FROM range({i * per}, {(i + 1) * per}) t(i))
                        TO '{folder}/part-{i}.parquet' (FORMAT parquet)""")
    con.close()
    open(marker, "w").close()


def pipeline() -> None:
    """The mpipipe side, run as its own script (so it can also run under mpiexec)."""
    from mpipipe import Driver
    from mpipipe.logical import (Context, DataSetPartitionNode, DataSourceNode, HashPartitionNode, LogicalPlan,
                                 ParquetDataSet, SqlEngineNode)

    d = Driver()
    d.add_argument("--input", required=True)
    d.add_argument("--partitions", type=int, default=8)
    args = d.get_arguments()
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(os.path.join(args["input"], "*.parquet")))
    split = DataSetPartitionNode(ctx, src, args["partitions"], partition_by="files")
    parts = HashPartitionNode(ctx, split, args["partitions"], hash_columns=["key"], cpus=1)
    SqlEngineNode(ctx, parts, AGG.format(src="{0}"), name="groupby", cpus=1)
    d.run(LogicalPlan(ctx, ctx.nodes[-1]))


def run_mpipipe(input_dir: str, work: str, executors: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--pipeline", "--input", input_dir,
           "--num-executors", str(executors), "--fresh", "--data-root", work, "--job-id", "groupby",
           "--progress-interval", "60"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    return time.perf_counter() - t0


def run_duckdb(input_dir: str, work: str, threads: int) -> float:
    code = (f"import duckdb; con = duckdb.connect(config={{'threads': {threads}}}); "
            "con.execute('SET enable_progress_bar = false'); "
            f"con.execute(\"COPY ({AGG.format(src=repr(input_dir + '/*.parquet'))}) TO '{work}/duckdb.parquet' (FORMAT parquet)\")")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=1800)
    return time.perf_counter() - t0


def check(work: str) -> str:
    import duckdb

    a = duckdb.sql(f"SELECT count(*), sum(n), round(sum(s), 1) FROM '{work}/groupby/outputs/groupby/*/*.parquet'").fetchall()
    b = duckdb.sql(f"SELECT count(*), sum(n), round(sum(s), 1) FROM '{work}/duckdb.parquet'").fetchall()
    if a != b:
        raise SystemExit(f"answers differ: mpipipe {a} vs duckdb {b}")
    return f"groups {a[0][0]:,}, rows {a[0][1]:,}"


def main() -> None:
    if "--pipeline" in sys.argv:
        sys.argv.remove("--pipeline")
        return pipeline()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--work", default=os.path.join("mpipipe-jobs", "bench-groupby"))
    a = ap.parse_args()
    input_dir = os.path.abspath(os.path.join(a.work, f"input-{a.rows}"))
    work = os.path.abspath(a.work)
    t0 = time.perf_counter()
    make_input(input_dir, a.rows, a.files)
    print(f"input: {a.rows:,} rows in {a.files} files under {input_dir} ({time.perf_counter() - t0:.1f} s)")
    times = {"mpipipe": [], "duckdb": []}
    for rep in range(a.reps):
        times["mpipipe"].append(run_mpipipe(input_dir, work, a.executors))
        times["duckdb"].append(run_duckdb(input_dir, work, a.executors))
        print(f"rep {rep + 1}: mpipipe {times['mpipipe'][-1]:.2f} s, duckdb {times['duckdb'][-1]:.2f} s")
    print(check(work))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:8s} median {med[k]:.2f} s ({min(v):.2f}-{max(v):.2f})")
    print(f"ratio mpipipe/duckdb: {med['mpipipe'] / med['duckdb']:.2f}")


if __name__ == "__main__":
    main()
