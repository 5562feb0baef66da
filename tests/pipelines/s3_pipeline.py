"""Reads Parquet from an object store, groups in parallel, writes the result back to the store."""
from mpipipe import Driver
from mpipipe.logical import (Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode)

driver = Driver()
driver.add_argument("--input", required=True)
driver.add_argument("--output", required=True)
args = driver.get_arguments()
ctx = Context()
src = DataSourceNode(ctx, ParquetDataSet(args["input"]))
split = DataSetPartitionNode(ctx, src, 4, partition_by="row_groups")
parts = HashPartitionNode(ctx, split, 3, hash_columns=["key"])
agg = SqlEngineNode(ctx, parts, "SELECT key, count(*) AS n, sum(val) AS s FROM {0} GROUP BY key")
DataSinkNode(ctx, agg, args["output"], type="copy")
driver.run(LogicalPlan(ctx, ctx.nodes[-1]))
