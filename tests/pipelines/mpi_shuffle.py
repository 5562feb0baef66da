"""A group-by and a nested shuffle whose buckets may move over MPI; results to OUT/<name>.parquet.

    python mpi_shuffle.py INPUT_GLOB OUT [--fail-partition P] [--slow]

--fail-partition P: partition P of the node reading the shuffle fails on every attempt while the file
OUT/fail exists (a run that stops after its map tasks finished, to be run again without it). --slow: each
partition of that node takes a second while OUT/slow exists (time to kill the run in the middle of them).
"""
import argparse
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

import mpipipe
from mpipipe.logical import (ArrowComputeNode, Context, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, RootNode, SqlEngineNode)


def checked_sort(runtime_ctx, tables):
    if os.path.exists(os.path.join(OUT, "fail")) and runtime_ctx.partition == FAIL:
        raise RuntimeError(f"partition {FAIL} fails on purpose")
    if os.path.exists(os.path.join(OUT, "slow")):
        time.sleep(1.0)
    return tables[0].sort_by([("id", "ascending")])


def main() -> None:
    global OUT, FAIL
    parser = argparse.ArgumentParser()
    parser.add_argument("pattern")
    parser.add_argument("out")
    parser.add_argument("--fail-partition", type=int, default=-1)
    args, _ = parser.parse_known_args()
    OUT, FAIL = args.out, args.fail_partition
    os.makedirs(OUT, exist_ok=True)
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([args.pattern]))
    hashed = HashPartitionNode(ctx, (src,), 5, ["key"])
    grouped = SqlEngineNode(ctx, (hashed,), "SELECT key, count(*) AS n, sum(val) AS s FROM {0} GROUP BY key "
                                            "ORDER BY key")
    rows = ArrowComputeNode(ctx, (hashed,), process_func=checked_sort)
    by_id = HashPartitionNode(ctx, (src,), 3, ["id"], nested=True)
    nested = SqlEngineNode(ctx, (by_id,), "SELECT * FROM {0} ORDER BY id")
    sinks = [DataSinkNode(ctx, (node,), os.path.join(OUT, label), type="copy")
             for label, node in (("grouped", grouped), ("rows", rows), ("nested", nested))]
    mpipipe.init().run(LogicalPlan(ctx, RootNode(ctx, sinks)))
    for label in ("grouped", "rows", "nested"):
        folder = os.path.join(OUT, label)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
        pq.write_table(pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files]),
                       os.path.join(OUT, label + ".parquet"))


OUT, FAIL = "", -1

if __name__ == "__main__":
    main()
