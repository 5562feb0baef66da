"""smallpond's side of the dispatch and group-by benchmarks; runs in smallpond's own virtualenv.

    .venv/bench-smallpond/bin/python scripts/bench/smallpond_side.py noop --tasks 1000 --executors 3 --work DIR
    .venv/bench-smallpond/bin/python scripts/bench/smallpond_side.py groupby --input DIR --executors 1 --work DIR
    .venv/bench-smallpond/bin/python scripts/bench/smallpond_side.py sort --input DIR --executors 1 --work DIR --fast

Runs smallpond's own scheduler (the plan API and `smallpond.execution.driver.Driver`
in `scheduler` mode, the counterpart of mpipipe's plan API; no Ray cluster),
with smallpond's defaults except for what is needed to run here at all:

- `--platform smallpond_platform`: executors with distinct ids (see that file);
- `--malloc system`: smallpond's default allocator is mimalloc, found as
  `libmimalloc.so.2.1` on PATH, which PyPI does not provide;
- the plan's PNG rendering is skipped when Graphviz's `dot` program is missing
  (smallpond renders the plan with it before it schedules anything, and fails
  without it; `dot` does not come from PyPI).

With --fast, the two intervals below take the values smallpond's own test
harness starts its executors with (a work-queue poll every 0.1 s, an executor
probe every 1 s) instead of its defaults; the benchmarks show both, and say
which is which.

Defaults kept (they shape the figures): executors poll their file-based work
queues every 0.5 s, the scheduler probes executors every 30 s (so a job's
first remote task starts about a minute after the command), each task runs in
a freshly forked process, and each executor offers as many task slots as the
host has cores.

Prints a BENCH_RESULT line: `inner` (the scheduler run), `first_task` and
`last_task` (time.time() when the first task of the measured node started and
the last one finished, from smallpond's task_metrics.csv: the no-op tasks, or
the group-by's hash partition, SQL and sink tasks) and the scheduler
process's peak resident memory.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import peak_rss_mb  # noqa: E402

AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY key"


def noop(runtime_ctx, input_datasets, output_path):
    return True


def build_noop(ctx, a):
    from smallpond.logical.dataset import ParquetDataSet
    from smallpond.logical.node import DataSetPartitionNode, DataSourceNode, PythonScriptNode

    src = DataSourceNode(ctx, ParquetDataSet([a.input]))
    parts = DataSetPartitionNode(ctx, (src,), npartitions=a.tasks, partition_by_rows=True)
    return PythonScriptNode(ctx, (parts,), process_func=noop), ("PythonScriptTask",)


def build_groupby(ctx, a):
    from smallpond.logical.dataset import ParquetDataSet
    from smallpond.logical.node import DataSetPartitionNode, DataSourceNode, HashPartitionNode, SqlEngineNode

    src = DataSourceNode(ctx, ParquetDataSet([os.path.join(a.input, "*.parquet")]))
    split = DataSetPartitionNode(ctx, (src,), npartitions=a.partitions)
    parts = HashPartitionNode(ctx, (split,), npartitions=a.partitions, hash_columns=["key"], cpu_limit=1)
    agg = SqlEngineNode(ctx, (parts,), AGG, cpu_limit=1)
    return agg, ("HashPartition", "SqlEngineTask", "DataSinkTask")


SORT_RANGE = "sort_range"


def build_sort(ctx, a):
    """Shuffle by key prefix, then ORDER BY key per range: the first hex digit of the (uniformly random)
    10-byte key gives 16 equal ranges, folded into --partitions (a power of two up to 16) in key order."""
    from smallpond.logical.dataset import ParquetDataSet
    from smallpond.logical.node import DataSetPartitionNode, DataSourceNode, HashPartitionNode, SqlEngineNode

    per = 16 // a.partitions
    src = DataSourceNode(ctx, ParquetDataSet([os.path.join(a.input, "*.parquet")]))
    split = DataSetPartitionNode(ctx, (src,), npartitions=a.partitions)
    tagged = SqlEngineNode(ctx, (split,), "SELECT *, ((instr('0123456789ABCDEF', substr(hex(key), 1, 1)) - 1) "
                                          f"// {per})::UBIGINT AS {SORT_RANGE} FROM {{0}}", cpu_limit=1)
    parts = HashPartitionNode(ctx, (tagged,), npartitions=a.partitions, data_partition_column=SORT_RANGE,
                              shuffle_only=True, drop_partition_column=True, cpu_limit=1)
    ordered = SqlEngineNode(ctx, (parts,), "SELECT key, payload FROM {0} ORDER BY key", cpu_limit=1)
    return ordered, ("SqlEngineTask", "HashPartition", "DataSinkTask")


def fast_intervals() -> None:
    """smallpond's test harness intervals instead of its defaults (see the docstring)."""
    from smallpond.execution.task import RuntimeContext

    init = RuntimeContext.__init__

    def faster(self, *args, **kwargs):
        kwargs.setdefault("secs_wq_poll_interval", 0.1)
        kwargs.setdefault("secs_executor_probe_interval", 1)
        init(self, *args, **kwargs)

    RuntimeContext.__init__ = faster


def task_times(job_root: str, kinds):
    """(first start, last finish, count) of the tasks of these kinds, from smallpond's task_metrics.csv."""
    path = os.path.join(job_root, "log", "task_metrics.csv")
    starts, ends = [], []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("task_props.key", "").startswith(tuple(kinds)) and row.get("task_props.start_time"):
                    starts.append(float(row["task_props.start_time"]))
                    ends.append(float(row["task_props.finish_time"]))
    except OSError:
        return None, None, 0
    if not starts:
        return None, None, 0
    return min(starts), max(ends), len(starts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=["noop", "groupby", "sort"])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--input", help="noop: a small Parquet file; groupby, sort: the folder of input files")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--executors", type=int, default=3)
    ap.add_argument("--work", required=True, help="smallpond's data root (emptied first)")
    ap.add_argument("--output", help="groupby, sort: where the result files go (smallpond's --output_path)")
    ap.add_argument("--fast", action="store_true", help="its test harness's intervals instead of its defaults")
    a = ap.parse_args()
    if a.fast:
        fast_intervals()

    if shutil.which("dot") is None:  # see the docstring
        import graphviz

        graphviz.Digraph.render = lambda self, *args, **kwargs: None

    from smallpond.execution.driver import Driver
    from smallpond.logical.node import Context, LogicalPlan

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    if a.output:
        shutil.rmtree(a.output, ignore_errors=True)
    job_id = str(uuid.uuid4())
    argv = ["scheduler", "--job_id", job_id, "--data_root", a.work, "--num_executors", str(a.executors),
            "--platform", "smallpond_platform", "--malloc", "system", "--console_log_level", "WARNING",
            "--disable_log_analytics"]
    if a.output:
        argv += ["--output_path", a.output]
    driver = Driver()
    driver.parse_arguments(argv)
    ctx = Context()
    root, kind = {"noop": build_noop, "groupby": build_groupby, "sort": build_sort}[a.workload](ctx, a)
    t0 = time.perf_counter()
    plan = driver.run(LogicalPlan(ctx, root), stop_process_on_done=False)
    inner = time.perf_counter() - t0
    roots = glob.glob(os.path.join(a.work, f"*.{job_id}"))
    first, last, n = task_times(roots[0], kind) if roots else (None, None, 0)
    print("BENCH_RESULT " + json.dumps({
        "inner": inner, "ok": plan is not None, "first_task": first, "last_task": last, "measured_tasks": n,
        "tasks": a.tasks if a.workload == "noop" else a.partitions, "executors": a.executors,
        "rank0_rss_mb": peak_rss_mb()}), flush=True)
    sys.exit(0 if plan is not None else 1)


if __name__ == "__main__":
    main()
