"""A small data pipeline for the fault-tolerance tests: several data nodes, a sink, and a node with resources.

    src (Parquet files of key BIGINT, val BIGINT) -> split (row ranges) -> by_key (hash into --parts)
      -> groups (SQL: count and sum per key) -> joined (SQL: + label from --dims, broadcast)
      -> enrich (Arrow: score = total * 2 + n, or * 3 with --variant b) -> sink (copy to --out)
    mem: a ComputeNode of 2 partitions with resources {"memory": "256MiB"}; its value records
         task.resources["memory"] and the attempt, so a test sees what a retry was given
    duck_oom (with --duck-oom): SQL with memory="256MiB" whose list aggregate needs more than
         DuckDB's 256 MB limit; its output records DuckDB's memory_limit

Every input value is an integer (the sums stay exact), so the output has the same rows on every run.

--sleep S          each enrich task sleeps S seconds (kill tests)
--slow-first S     enrich[0] sleeps S seconds, except in a speculative copy (straggler tests)
--variant a|b      which enrich function (a code change for the journal tests)
--sql Q            the groups query (bad-SQL tests)
--mem-resources R  the mem node's resources, a requirement string (bad-requirement tests)
--hold FILE        enrich tasks wait until FILE exists (at most 2 minutes)
--print-keys       print {node name: [fingerprint, partitions]} as JSON and run nothing
--report PATH      rank 0 writes the run's stats and outputs there as JSON
"""
import json
import os
import time

import pyarrow.compute as pc

from mpipipe import ComputeNode, Driver
from mpipipe.logical import (ArrowComputeNode, Context, DataSetPartitionNode, DataSinkNode, DataSourceNode,
                             HashPartitionNode, LogicalPlan, ParquetDataSet, SqlEngineNode)

GROUPS = "SELECT key, count(*) AS n, sum(val) AS total FROM {0} GROUP BY key"
JOINED = "SELECT g.key, g.n, g.total, d.label FROM {g} g LEFT JOIN {d} d USING (key)"
DUCK_OOM = ("SELECT len(list(range)) AS n, current_setting('memory_limit') AS memory_limit "
            "FROM range(16000000)")


def enrich_a(ctx, tables):
    _straggle(ctx)
    t = tables[0]
    return t.append_column("score", pc.add(pc.multiply(t["total"], 2), t["n"]))


def enrich_b(ctx, tables):
    _straggle(ctx)
    t = tables[0]
    return t.append_column("score", pc.add(pc.multiply(t["total"], 3), t["n"]))


def _straggle(ctx):
    """Wait as the flags say (read from the environment the script sets for its workers)."""
    hold = os.environ.get("DATA_JOB_HOLD")
    deadline = time.monotonic() + 120
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.05)
    sleep = float(os.environ.get("DATA_JOB_SLEEP", "0"))
    slow = float(os.environ.get("DATA_JOB_SLOW_FIRST", "0"))
    if slow and ctx.partition == 0 and not ctx.final_output.endswith(".speculative"):
        time.sleep(slow)  # only the first copy of partition 0 is slow: a speculative copy is not
    elif sleep:
        time.sleep(sleep)


def memory_probe(task):
    return {"memory": task.resources.get("memory"), "attempt": task.attempt}


def build(args):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(args["input"]), name="src")
    split = DataSetPartitionNode(ctx, src, args["splits"], partition_by="rows", name="split")
    by_key = HashPartitionNode(ctx, split, args["parts"], hash_columns=["key"], name="by_key")
    groups = SqlEngineNode(ctx, by_key, args["sql"] or GROUPS, name="groups")
    dims = DataSourceNode(ctx, ParquetDataSet(args["dims"]), name="dims")
    joined = SqlEngineNode(ctx, {"g": groups, "d": dims}, JOINED, name="joined")
    enrich = ArrowComputeNode(ctx, joined, process=enrich_b if args["variant"] == "b" else enrich_a, name="enrich")
    sink = DataSinkNode(ctx, enrich, args["out"], type="copy", name="sink")
    mem = ComputeNode(ctx, memory_probe, npartitions=2, name="mem",
                      resources=args["mem_resources"] or {"memory": "256MiB"})
    roots = [sink, mem]
    if args["duck_oom"]:
        roots.append(SqlEngineNode(ctx, [], DUCK_OOM, name="duck_oom", cpus=1, memory="256MiB"))
    return LogicalPlan(ctx, roots)


def main():
    driver = Driver()
    driver.add_argument("--input", required=True)
    driver.add_argument("--dims", required=True)
    driver.add_argument("--out", required=True)
    driver.add_argument("--splits", type=int, default=3)
    driver.add_argument("--parts", type=int, default=4)
    driver.add_argument("--sleep", type=float, default=0.0)
    driver.add_argument("--slow-first", type=float, default=0.0)
    driver.add_argument("--variant", default="a", choices=["a", "b"])
    driver.add_argument("--sql", default=None)
    driver.add_argument("--mem-resources", default=None)
    driver.add_argument("--duck-oom", action="store_true")
    driver.add_argument("--print-keys", action="store_true")
    driver.add_argument("--report", default=None)
    driver.add_argument("--hold", default=None)
    args = driver.get_arguments()
    # task bodies read these in the worker processes (which inherit rank 0's or the rank's environment)
    os.environ["DATA_JOB_SLEEP"] = str(args["sleep"])
    os.environ["DATA_JOB_SLOW_FIRST"] = str(args["slow_first"])
    os.environ["DATA_JOB_HOLD"] = args["hold"] or ""
    plan = build(args)
    if args["print_keys"]:
        print(json.dumps({i.name: [i.fingerprint, i.npartitions] for i in plan.infos}))
        return
    result = driver.run(plan)
    if result is not None and args["report"]:
        with open(args["report"], "w") as f:
            json.dump({"stats": result.stats, "job_dir": result.job_dir, "mem": result.values("mem"),
                       "nodes": result.nodes}, f, default=str)


if __name__ == "__main__":
    main()
