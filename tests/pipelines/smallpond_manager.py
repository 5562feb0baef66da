"""smallpond's JobManager.run(plan) -> ExecutionPlan, twice: an earlier job's output, read back by the partition
each file holds, feeds the next job (LoadPartitionedDataSetNode). Prints one JSON line."""
import json
import sys

from mpipipe.execution.manager import JobManager
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import (Context, DataSourceNode, HashPartitionNode, LoadPartitionedDataSetNode,
                                  LogicalPlan, SqlEngineNode)


def main() -> None:
    paths, data_root = sys.argv[1], sys.argv[2]
    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet([paths]))
    parts = HashPartitionNode(ctx, (source,), npartitions=4, hash_columns=["url"], data_partition_column="bucket",
                              output_name="parts")
    urls = SqlEngineNode(ctx, (parts,), "select url, bucket from {0}", output_name="urls")
    first = JobManager(data_root=data_root).run(LogicalPlan(ctx, urls), num_executors=2, fault_inject_prob=0.0)
    out = {"first": first.successful,
           "final_groups": [d.num_rows for d in first.final_output.load_partitioned_datasets(4, "bucket")],
           "parts_groups": [d.num_rows for d in first.get_output("parts").load_partitioned_datasets(4, "bucket")]}
    ctx = Context()
    again = DataSourceNode(ctx, first.get_output("parts"))
    loaded = LoadPartitionedDataSetNode(ctx, (again,), npartitions=4, data_partition_column="bucket")
    counted = SqlEngineNode(ctx, (loaded,), "select count(*) as n, min(bucket) as lo, max(bucket) as hi from {0}")
    second = JobManager(data_root=data_root).run(LogicalPlan(ctx, counted), num_executors=2)
    out["second"] = second.successful
    out["counts"] = second.final_output.to_arrow_table().to_pylist()
    bad_ctx = Context()
    failing = SqlEngineNode(bad_ctx, (DataSourceNode(bad_ctx, ParquetDataSet([paths])),),
                            "select error('no') from {0}")
    third = JobManager(data_root=data_root).run(LogicalPlan(bad_ctx, failing), num_executors=1, max_fail_count=0)
    out["third"] = third.successful
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
