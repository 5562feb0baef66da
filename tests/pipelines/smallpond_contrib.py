"""smallpond's contrib nodes (copy_table, log_dataset) and a node that lists the same input twice, in a plan
written as a smallpond script would be. Prints what it checks as one JSON line (rank 0)."""
import json

from mpipipe.contrib.copy_table import CopyArrowTable, StreamCopy
from mpipipe.contrib.log_dataset import LogDataSet
from mpipipe.execution.driver import Driver
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import (Context, DataSetPartitionNode, DataSourceNode, LogicalPlan, RootNode,
                                  SqlEngineNode)


def build(input_paths, npartitions):
    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet(input_paths))
    parts = DataSetPartitionNode(ctx, (source,), npartitions, partition_by_rows=True)
    # the same input twice: each of its partitions is read as {0} and as {1}, and runs once
    self_join = SqlEngineNode(ctx, (parts, parts), "select a.url from {0} as a join {1} as b on a.url = b.url",
                              output_name="self_join")
    by_files = DataSetPartitionNode(ctx, (source,), 5, random_shuffle=True)  # each task: its slice of the files
    copied = CopyArrowTable(ctx, (by_files,), output_name="copied")
    streamed = StreamCopy(ctx, (parts,), streaming_batch_size=5, output_name="streamed")
    logged = LogDataSet(ctx, (parts,), num_rows=3, output_name="logged")
    return LogicalPlan(ctx, RootNode(ctx, (self_join, copied, streamed, logged)))


def main() -> None:
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("-n", "--npartitions", type=int, default=3)
    args = driver.get_arguments()
    exec_plan = driver.run(build(args["input_paths"], args["npartitions"]))
    if exec_plan is None:
        return
    out = {"successful": exec_plan.successful, "job_dir": exec_plan.job_dir}
    for name in ("self_join", "copied", "streamed"):
        out[name] = sorted(r["url"] for r in exec_plan.get_output(name).to_arrow_table().to_pylist())
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
