"""Group-by: hash-partition rows by key, then aggregate each partition with DuckDB.

    python examples/groupby.py                                # local processes, generated input
    mpiexec -n 4 python examples/groupby.py                   # inside an MPI world
    python examples/groupby.py -i 'data/*.parquet' -o out     # your own Parquet files (columns key, val, tag)

The plan: source -> split into even row ranges -> hash partition by key ->
SQL GROUP BY per partition -> sink. All rows of a key land in the same
partition, so each partition's groups are final: the output has one row per
key (key, n, sum_val, min_tag), each file ordered by key.

Without -i the script writes its input once (seeded: always the same data):
--rows rows in --files Parquet files under <data-root>/example-data/, with
key BIGINT uniform over 0..--keys-1, val DOUBLE, tag VARCHAR (10 letters).
"""
import os

import common
from mpipipe import Driver
from mpipipe.logical import (Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode)

QUERY = """
SELECT key, count(*) AS n, sum(val) AS sum_val, min(tag) AS min_tag
FROM {0}
GROUP BY key
ORDER BY key
"""


def write_input(folder, rows, files, keys, seed):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f, n in enumerate(common.file_sizes(rows, files)):
        rng = np.random.default_rng([seed, f])  # a stream per file
        table = pa.table({
            "key": rng.integers(0, keys, size=n, dtype=np.int64),
            "val": np.round(rng.normal(100.0, 30.0, size=n), 4),
            "tag": common.random_strings(rng, n, 10),
        })
        pq.write_table(table, os.path.join(folder, f"part-{f:05d}.parquet"))


def main():
    driver = Driver(description=__doc__.splitlines()[0])
    common.add_flags(driver, "groupby", rows=200_000, columns="key, val, tag")
    driver.add_argument("--keys", type=int, default=10_000, help="range of the generated keys (without -i)")
    args = driver.get_arguments()
    common.check_positive(args, "partitions", "splits", "keys")
    inputs = common.input_paths(driver, args, f"groupby-{args['keys']}keys",
                                lambda folder: write_input(folder, args["rows"], args["files"], args["keys"], args["seed"]))

    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet(inputs))
    split = DataSetPartitionNode(ctx, source, args["splits"] or args["partitions"], partition_by="rows")
    by_key = HashPartitionNode(ctx, split, args["partitions"], hash_columns=["key"], name="by_key")
    groups = SqlEngineNode(ctx, by_key, QUERY, name="groups")
    sink = DataSinkNode(ctx, groups, common.output_folder(driver, args, "groupby"), type="copy")
    result = driver.run(LogicalPlan(ctx, sink))
    if result is None:  # --dry-run
        return
    rows_in = sum(v["rows"] for v in result.values("by_key"))
    rows_out = sum(v["rows"] for v in result.values("groups"))
    print(f"groupby: {rows_in:,} rows in, {rows_out:,} groups out, in {args['partitions']} file(s)")
    print(f"output: {result.values()[0]['path']}")


if __name__ == "__main__":
    main()
