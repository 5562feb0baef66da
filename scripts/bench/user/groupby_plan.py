"""Group-by over Parquet files as a smallpond plan: hash-partition the rows by key, then GROUP BY in each partition.

    python groupby_plan.py -i 'data/*.parquet' -n 8
    mpiexec -n 3 python groupby_plan.py -i 'data/*.parquet' -n 8

The result is the last node's output (the job directory's outputs/groupby/).
"""
from mpipipe.execution.driver import Driver
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import Context, DataSourceNode, HashPartitionNode, LogicalPlan, SqlEngineNode


def groupby(input_paths, npartitions, hash_columns):
    ctx = Context()
    dataset = ParquetDataSet(input_paths)
    data_files = DataSourceNode(ctx, dataset)
    partitions = HashPartitionNode(ctx, (data_files,), npartitions=npartitions, hash_columns=hash_columns)
    totals = SqlEngineNode(
        ctx,
        (partitions,),
        r"select key, count(*) as n, sum(val) as s, min(tag) as t from {0} group by key",
        output_name="groupby",
    )
    return LogicalPlan(ctx, totals)


def main():
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+", required=True)
    driver.add_argument("-n", "--npartitions", type=int, default=8)
    driver.add_argument("-c", "--hash_columns", nargs="+", default=["key"])
    plan = groupby(**driver.get_arguments())
    driver.run(plan)


if __name__ == "__main__":
    main()
