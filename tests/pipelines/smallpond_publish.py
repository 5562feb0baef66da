"""Nodes with smallpond's `output_path` publish their partitions into a folder that a DataSinkNode also writes:
the sink keeps what they published. Prints one JSON line (rank 0)."""
import json
import os
from typing import List

import pyarrow as pa

from mpipipe.execution.driver import Driver
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import ArrowComputeNode, Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, \
    LogicalPlan


def upper(runtime_ctx, tables: List[pa.Table]) -> pa.Table:
    return pa.table({"url": [u.upper() for u in tables[0].column("url").to_pylist()]})


def main() -> None:
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("--out")
    args = driver.get_arguments()
    ctx = Context()
    parts = DataSetPartitionNode(ctx, (DataSourceNode(ctx, ParquetDataSet(args["input_paths"])),), 3)
    shout = ArrowComputeNode(ctx, (parts,), process_func=upper, output_name="shout", output_path=args["out"])
    exec_plan = driver.run(LogicalPlan(ctx, DataSinkNode(ctx, (shout,), output_path=args["out"])))
    if exec_plan is None:
        return
    published = ParquetDataSet([os.path.join(args["out"], "shout", "**", "*.parquet")])
    out = {"published_rows": published.num_rows, "published_files": published.num_files,
           "sunk": sorted(f for f in os.listdir(args["out"]) if f.endswith(".parquet"))}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
