"""Group-bys after a hash partition, in the plan form and the DataFrame form (tests/test_partial_agg.py).

    python partial_agg.py --input-dir DIR --out-dir OUT [mpipipe's flags]              the plan form
    python partial_agg.py --dataframe --input-dir DIR --out-dir OUT [mpipipe's flags]  the DataFrame form

DIR holds *.parquet (columns key, val, tag, i). Rank 0 writes OUT/<name>.parquet for each query's result
(all partitions, in partition order) and OUT/explain.json: {"plan": the plan's explain(), "<twin node>":
["aggregated" or "rows" for each of its map tasks]}.
"""
import argparse
import json
import os
import sys

import pyarrow.parquet as pq

import mpipipe
from mpipipe import Driver
from mpipipe.logical import (Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode)
from mpipipe.steps.partio import PartitionData

# name -> (query, options of the SQL node); the test runs the same queries in DuckDB
QUERIES = {
    "agg": ("SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY key", {}),
    "nulls": ("SELECT key, count(val) AS c, sum(i) AS si, avg(val) AS a, max(tag) AS m, count(*) AS n "
              "FROM {0} GROUP BY ALL HAVING count(*) > 1", {}),
    # keys that hardly repeat: each map task writes its rows one by one, in the partial columns
    "unique": ("SELECT i, key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY i, key", {}),
    "refused": ("SELECT key, count(DISTINCT tag) AS d, median(val) AS med FROM {0} GROUP BY key", {}),
    "off": ("SELECT key, count(*) AS n FROM {0} GROUP BY key", {"partial_aggregate": False}),
}


def plan_form(driver, args):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(os.path.join(args["input_dir"], "*.parquet")), name="src")
    split = DataSetPartitionNode(ctx, src, 3, partition_by="files", name="split")
    sinks, explain = [], {}
    for name, (query, options) in QUERIES.items():
        h = HashPartitionNode(ctx, (split,), 4, ["i"] if name == "unique" else ["key"], name=f"h_{name}")
        q = SqlEngineNode(ctx, (h,), query, name=name, **options)
        sinks.append(DataSinkNode(ctx, q, os.path.join(args["out_dir"], "sinks", name), name=f"sink_{name}"))
    plan = LogicalPlan(ctx, sinks)
    explain["plan"] = plan.explain()
    result = driver.run(plan)
    if result is None:
        return
    for name in QUERIES:
        table = PartitionData.from_folders(result.outputs(name)).to_arrow()
        pq.write_table(table, os.path.join(args["out_dir"], f"{name}.parquet"))
        twin = f"h_{name}.partial"
        if twin in [n.name for n in plan.nodes]:  # how each map task wrote its partial rows
            explain[twin] = [v.get("partial") for v in result.values(twin)]
    with open(os.path.join(args["out_dir"], "explain.json"), "w") as f:
        json.dump(explain, f)


def dataframe_form(input_dir, out_dir):
    sp = mpipipe.init(num_executors=2)
    df = sp.read_parquet(os.path.join(input_dir, "*.parquet")).repartition(4, hash_by="key")
    agg = sp.partial_sql(QUERIES["agg"][0], df)
    explain = {"agg": agg.explain()}
    pq.write_table(agg.to_arrow(), os.path.join(out_dir, "df_agg.parquet"))
    # the hash partition itself, asked for afterwards: its own rows, not partial ones
    pq.write_table(df.to_arrow(), os.path.join(out_dir, "df_rows.parquet"))
    with open(os.path.join(out_dir, "explain.json"), "w") as f:
        json.dump(explain, f)


def main():
    if "--dataframe" in sys.argv:  # the DataFrame API only: mpipipe.init() reads mpipipe's own flags
        parser = argparse.ArgumentParser()
        parser.add_argument("--input-dir", required=True)
        parser.add_argument("--out-dir", required=True)
        parser.add_argument("--dataframe", action="store_true")
        args, _ = parser.parse_known_args()
        os.makedirs(args.out_dir, exist_ok=True)
        return dataframe_form(args.input_dir, args.out_dir)
    driver = Driver()
    driver.add_argument("--input-dir", required=True)
    driver.add_argument("--out-dir", required=True)
    args = driver.get_arguments()
    os.makedirs(args["out_dir"], exist_ok=True)
    plan_form(driver, args)


if __name__ == "__main__":
    main()
