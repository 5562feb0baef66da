"""Group-by: mpipipe (hash partition into 8, SQL per partition) against DuckDB alone, Polars and smallpond.

    python scripts/bench/groupby.py                          # 20,000,000 rows, 3 rounds
    python scripts/bench/groupby.py --rows 2000000 --reps 5
    BENCH_QUICK=1 python scripts/bench/groupby.py            # 1,000,000 rows, no smallpond

Makes the input once (8 Parquet files under mpipipe-jobs/bench-data: key
BIGINT uniform over 0..999,999, val DOUBLE, tag VARCHAR of 10 characters),
then runs, alternating, each tool writing Parquet:

- mpipipe on the local platform with 2 executors: split the files into 8,
  hash-partition by key into 8, then per partition
  `SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t ... GROUP BY key`
  (one DuckDB thread per task);
- DuckDB alone: the same query in one process with 2 threads;
- Polars: the same aggregation, lazy (`scan_parquet ... sink_parquet`), 2 threads;
- smallpond: the same plan as mpipipe (DataSetPartitionNode, HashPartitionNode,
  SqlEngineNode) on its own scheduler with one executor, which runs as many
  tasks at once as the host has cores (2 here, as mpipipe's 2 executors).

The time is the whole command, from outside. At the end every answer is
compared with DuckDB's, group by group (count, sum within 1e-9 relative, min).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {src} GROUP BY key"
MPIPIPE = "mpipipe (local, 2 executors)"
DUCKDB = "DuckDB (1 process, 2 threads)"
POLARS = "Polars lazy (2 threads)"
SMALLPOND = B.SMALLPOND_DATA
SMALLPOND_FAST = B.SMALLPOND_DATA_FAST


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
    t0 = time.perf_counter()
    result = d.run(LogicalPlan(ctx, ctx.nodes[-1]))
    if result is not None:
        print("BENCH_RESULT " + json.dumps({"inner": time.perf_counter() - t0}), flush=True)


def alone(engine: str, input_dir: str, output: str, threads: int) -> None:
    """DuckDB or Polars in this one process."""
    t0 = time.perf_counter()
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(config={"threads": threads})
        con.execute("SET enable_progress_bar = false")
        src = f"read_parquet('{input_dir}/*.parquet')"
        con.execute(f"COPY ({AGG.format(src=src)}) TO '{output}' (FORMAT parquet)")
    else:
        os.environ["POLARS_MAX_THREADS"] = str(threads)
        import polars as pl

        (pl.scan_parquet(os.path.join(input_dir, "*.parquet"))
           .group_by("key")
           .agg(pl.len().alias("n"), pl.col("val").sum().alias("s"), pl.col("tag").min().alias("t"))
           .sink_parquet(output))
    print("BENCH_RESULT " + json.dumps({"inner": time.perf_counter() - t0}), flush=True)


def outputs(tool: str, work: str) -> str:
    """A glob of the tool's result files."""
    return {MPIPIPE: os.path.join(work, "bench-groupby", "outputs", "groupby", "*", "*.parquet"),
            DUCKDB: os.path.join(work, "groupby-duckdb.parquet"),
            POLARS: os.path.join(work, "groupby-polars.parquet"),
            SMALLPOND: os.path.join(B.smallpond_output("groupby", work, SMALLPOND), "**", "*.parquet"),
            SMALLPOND_FAST: os.path.join(B.smallpond_output("groupby", work, SMALLPOND_FAST), "**", "*.parquet")}[tool]


def check(tool: str, work: str, reference: str) -> str:
    """Compare the tool's answer with DuckDB's, group by group."""
    return check_files(tool, sorted(glob.glob(outputs(tool, work), recursive=True)), reference)


def check_files(tool: str, files, reference: str) -> str:
    """Compare an answer (its Parquet files) with DuckDB's (`reference`), group by group: the same keys, each
    once, with the same count, min and a sum within 1e-9 relative."""
    import duckdb

    if not files:
        return f"{tool}: no output files"
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET enable_progress_bar = false")
    got = f"read_parquet({files!r})"
    groups, rows = con.execute(f"SELECT count(*), sum(n) FROM {got}").fetchone()
    bad = con.execute(f"""SELECT count(*) FROM {got} a FULL OUTER JOIN read_parquet('{reference}') b USING (key)
                          WHERE a.n IS DISTINCT FROM b.n OR a.t IS DISTINCT FROM b.t OR a.s IS NULL OR b.s IS NULL
                             OR abs(a.s - b.s) > 1e-9 * greatest(1, abs(b.s))""").fetchone()[0]
    dup = con.execute(f"SELECT count(*) - count(DISTINCT key) FROM {got}").fetchone()[0]
    verdict = ("agrees with DuckDB" if bad == 0 and dup == 0
               else f"DIFFERS from DuckDB: {bad} groups, {dup} duplicate keys")
    return f"{tool}: {groups:,} groups, {rows:,} rows, {verdict}"


def main() -> None:
    if "--pipeline" in sys.argv:
        sys.argv.remove("--pipeline")
        return pipeline()
    a = B.data_workload_args(__doc__.splitlines()[0], 1_000_000 if B.quick() else 20_000_000)
    if a.alone:
        return alone(a.alone, a.input, a.output, a.executors)

    input_dir = os.path.join(B.DATA, f"groupby-{a.rows}rows-{a.files}files")
    work = os.path.join(B.WORK, "groupby")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    make_input(input_dir, a.rows, a.files)
    print(f"group-by: {a.rows:,} rows in {a.files} files under {os.path.relpath(input_dir)} "
          f"(ready in {time.perf_counter() - t0:.1f} s), {a.reps} rounds", flush=True)

    me = os.path.abspath(__file__)
    cmds = {
        MPIPIPE: ([B.PYTHON, me, "--pipeline", "--input", input_dir, "--partitions", str(a.partitions),
                   "--platform", "local", "--num-executors", str(a.executors), "--fresh", "--data-root", work,
                   "--job-id", "bench-groupby", "--progress-interval", "0"], B.bench_env()),
        DUCKDB: ([B.PYTHON, me, "--alone", "duckdb", "--input", input_dir, "--output", outputs(DUCKDB, work),
                  "--executors", str(a.executors)], B.bench_env()),
        POLARS: ([B.PYTHON, me, "--alone", "polars", "--input", input_dir, "--output", outputs(POLARS, work),
                  "--executors", str(a.executors)], B.bench_env()),
    }
    notes = []
    skip = B.smallpond_skip_reason()
    if skip:
        notes.append(skip)
    else:
        for tool, cmd in B.smallpond_data_commands("groupby", input_dir, a.partitions, work).items():
            cmds[tool] = (cmd, B.smallpond_env())
    tools = list(cmds)

    def run_one(tool, rep):
        cmd, env = cmds[tool]
        if tool == MPIPIPE:
            B.clear_job(work, "bench-groupby")
        rec = B.run(cmd, 1800, env=env, label=tool)
        if tool in (SMALLPOND, SMALLPOND_FAST) and rec.get("first_task") and rec.get("last_task"):
            rec["data_tasks"] = rec["last_task"] - rec["first_task"]  # first data task's start to last one's end
        return rec

    def show(tool, rec):
        extra = (f" (its data tasks, first start to last end: {rec['data_tasks']:.1f} s)"
                 if rec.get("data_tasks") else "")
        return f"{rec['wall']:7.2f} s{extra}"

    runs = B.alternate(tools, a.reps, run_one, show)
    checks = []
    for tool in tools:
        if tool != DUCKDB and runs[DUCKDB][-1].get("status") == "ok" and runs[tool][-1].get("status") == "ok":
            checks.append(check(tool, work, outputs(DUCKDB, work)))
    metrics = [("wall", "time (s)", "s"), ("inner", "inside the process (s)", "s")]
    cmp = B.compare(runs, metrics, [MPIPIPE], ["wall"])
    if SMALLPOND in runs:
        for tool in (SMALLPOND, SMALLPOND_FAST):
            s = B.metric(runs[tool], "data_tasks")
            notes.append(f"{tool}: of its time, {B.fmt_summary(s)} s from its first data task (hash partition) "
                         "starting to its last one (SQL, sink) ending; the rest is mostly its scheduler finding its "
                         "executor")
        notes.append(B.SMALLPOND_INTERVALS)
        sp = B.smallpond_versions()
        notes.append(f"smallpond runs in its own virtualenv with DuckDB {sp.get('duckdb')} and pyarrow "
                     f"{sp.get('pyarrow')} (its pins)")
    notes.append("each tool writes Parquet with its own default compression: snappy (mpipipe, DuckDB), "
                 "zstd (Polars, smallpond)")
    res = {"workload": "groupby", "title": f"Group-by: {a.rows:,} rows, {a.files} files, hash partition into "
                                           f"{a.partitions}, GROUP BY key",
           "params": {"rows": a.rows, "files": a.files, "partitions": a.partitions, "reps": a.reps,
                      "executors": a.executors},
           "runs": runs, "tables": [{"columns": cmp["columns"], "rows": cmp["rows"]}], "ratios": cmp["ratios"],
           "checks": checks, "notes": notes, "commands": {t: cmds[t][0] for t in tools}}
    B.finish(res, a.out)


if __name__ == "__main__":
    main()
