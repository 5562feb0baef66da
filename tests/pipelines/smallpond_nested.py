"""smallpond's nested partitions: hosts, then urls within each host (nested=True), counted per (host, url)
partition, folded back to hosts with ConsolidateNode(dimensions), and joined with the per-host counts in each
(host, url) partition. Prints one JSON line (rank 0)."""
import json
import sys

from mpipipe.execution.driver import Driver
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import (ConsolidateNode, Context, DataSourceNode, HashPartitionNode, LogicalPlan,
                                  RootNode, SqlEngineNode)


def main() -> None:
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    args = driver.get_arguments()
    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet(args["input_paths"]))
    hosts = SqlEngineNode(ctx, (source,), "select url, split_part(url, '/', 3) as host from {0}")
    by_host = HashPartitionNode(ctx, (hosts,), 2, ["host"], "host_partition")
    by_url = HashPartitionNode(ctx, (by_host,), 3, ["url"], "url_partition", nested=True)
    per_cell = SqlEngineNode(ctx, (by_url,), "select host, count(*) as cnt from {0} group by host",
                             output_name="per_cell")
    per_host = SqlEngineNode(ctx, (ConsolidateNode(ctx, per_cell, ["host_partition"]),),
                             "select host, sum(cnt)::bigint as cnt from {0} group by host", output_name="per_host")
    joined = SqlEngineNode(ctx, (per_cell, per_host), "select a.host, a.cnt as cell, b.cnt as total from {0} a "
                           "join {1} b using (host)", output_name="joined")
    exec_plan = driver.run(LogicalPlan(ctx, RootNode(ctx, (joined,))))
    if exec_plan is None:
        return
    out = {"partitions": [per_cell.npartitions, per_host.npartitions, joined.npartitions],
           "per_host": sorted((r["host"], r["cnt"])
                              for r in exec_plan.get_output("per_host").to_arrow_table().to_pylist()),
           "joined": sorted((r["host"], r["cell"], r["total"])
                            for r in exec_plan.get_output("joined").to_arrow_table().to_pylist()),
           "cells": sorted((r["host"], r["cnt"])
                           for r in exec_plan.get_output("per_cell").to_arrow_table().to_pylist())}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
