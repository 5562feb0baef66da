"""Partitioning nodes over one-partition sources, whose map side mpipipe cuts into several tasks.

--input-dir DIR  holds files/*.parquet (several files, 2.4M rows in all), one.parquet (one file, 2.4M rows in
                 12 row groups), small/*.parquet (three small files), typed/*.csv and keyed/*.parquet (files
                 that hold one partition each, in column p; tests/test_parallel_map.py writes them)
--out-dir DIR    rank 0 writes outputs.json: {"nodes": {node: [partition folders]}, "tasks": {node: tasks},
                 "job_dir": ..., "stats": ...}
--plan resume    only the small plan of the resume test (build_resume)
--map-unit-rows N  the rule's rows per map task (mpipipe.logical.mapsplit.MAP_UNIT_ROWS), for inputs of test size
"""
import json
import os

from mpipipe import Driver
from mpipipe.atomic import atomic_write
from mpipipe.logical import mapsplit
from mpipipe.logical import (ColumnPartitionNode, Context, CsvDataSet, DataSourceNode, HashPartitionNode,
                             LoadPartitionedDataSetNode, LogicalPlan, ParquetDataSet, SqlEngineNode,
                             UserDefinedPartitionNode)

AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY key"
SETTINGS = "SELECT current_setting('threads')::BIGINT AS threads, current_setting('memory_limit') AS mem, " \
           "(SELECT count(*) FROM {0}) AS n"


def id_mod3(table):
    return table["id"].to_numpy() % 3


def build(ctx, inp):
    files = DataSourceNode(ctx, ParquetDataSet(os.path.join(inp, "files", "*.parquet")), name="src_files")
    one = DataSourceNode(ctx, ParquetDataSet(os.path.join(inp, "one.parquet")), name="src_one")
    small = DataSourceNode(ctx, ParquetDataSet(os.path.join(inp, "small", "*.parquet")), name="src_small")
    typed = DataSourceNode(ctx, CsvDataSet(os.path.join(inp, "typed", "*.csv"),
                                           schema={"id": "BIGINT", "key": "BIGINT", "val": "DOUBLE"}), name="src_csv")

    # the rule's own task counts (the smallpond form: no split node in between); every node is a result, so
    # the SQL nodes read the hash nodes as written
    roots = [HashPartitionNode(ctx, (files,), 4, ["key"], name="hash_files"),
             HashPartitionNode(ctx, (one,), 4, ["key"], name="hash_one")]
    roots += [SqlEngineNode(ctx, (roots[0],), AGG, name="agg_files"),
              SqlEngineNode(ctx, (roots[1],), AGG, name="agg_one")]
    # asked-for counts over small inputs, and the one task of before
    h3 = HashPartitionNode(ctx, (small,), 3, ["key"], partition_column="pcol", map_tasks=3, name="hash_small3")
    h1 = HashPartitionNode(ctx, (small,), 3, ["key"], partition_column="pcol", map_tasks=1, name="hash_small1")
    roots += [h3, h1, SqlEngineNode(ctx, (h3,), AGG, name="agg_small3"),
              SqlEngineNode(ctx, (h1,), AGG, name="agg_small1")]
    roots.append(ColumnPartitionNode(ctx, small, 4, column="part", map_tasks=3, name="col_small"))
    roots.append(UserDefinedPartitionNode(ctx, small, 3, id_mod3, map_tasks=2, name="user_small"))
    roots.append(HashPartitionNode(ctx, small, 3, random_shuffle=True, map_tasks=3, name="rand_small"))
    nested = HashPartitionNode(ctx, small, 3, ["key"], nested=True, dimension="kd", map_tasks=3, name="nested_small")
    roots += [nested, SqlEngineNode(ctx, nested, "SELECT key, count(*) AS n FROM {0} GROUP BY key", name="agg_nested")]
    h_csv = HashPartitionNode(ctx, typed, 2, ["key"], map_tasks=2, name="hash_csv")
    roots += [h_csv, SqlEngineNode(ctx, (h_csv,), "SELECT key, count(*) AS n, sum(val) AS s FROM {0} GROUP BY key",
                                   name="agg_csv")]
    keyed = DataSourceNode(ctx, ParquetDataSet(os.path.join(inp, "keyed", "*.parquet")), name="src_keyed")
    roots.append(LoadPartitionedDataSetNode(ctx, keyed, 3, data_partition_column="p", map_tasks=2, name="load_keyed"))
    # the DuckDB threads a 1-task step and a 3-task step get on hosts of 2 executors
    roots += [SqlEngineNode(ctx, small, SETTINGS, name="settings_one"),
              SqlEngineNode(ctx, h3, SETTINGS, name="settings_three")]
    return roots


def build_resume(ctx, inp):
    """A source cut into 3 map tasks and the group-by over its buckets (the test fails one map task)."""
    small = DataSourceNode(ctx, ParquetDataSet(os.path.join(inp, "small", "*.parquet")), name="src_small")
    h = HashPartitionNode(ctx, (small,), 3, ["key"], map_tasks=3, name="hash_resume")
    return [SqlEngineNode(ctx, (h,), AGG, name="agg_resume")]


def main():
    driver = Driver()
    driver.add_argument("--input-dir", required=True)
    driver.add_argument("--out-dir", required=True)
    driver.add_argument("--plan", default="all")
    driver.add_argument("--map-unit-rows", type=int, default=None)
    args = driver.get_arguments()
    if args["map_unit_rows"]:
        mapsplit.MAP_UNIT_ROWS = args["map_unit_rows"]
    inp, out = os.path.abspath(args["input_dir"]), os.path.abspath(args["out_dir"])
    ctx = Context()
    plan = LogicalPlan(ctx, (build_resume if args["plan"] == "resume" else build)(ctx, inp))
    res = driver.run(plan)
    if res is None:
        return
    report = {"nodes": {n.name: res.outputs(n.name) for n in plan.nodes},
              "tasks": {n.name: n.npartitions for n in plan.nodes}, "job_dir": res.job_dir, "stats": res.stats}
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "outputs.json"), json.dumps(report, indent=1, default=str), mode=None)


if __name__ == "__main__":
    main()
