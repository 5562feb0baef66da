"""Global sort: range-partition rows by split points taken from a sample, then sort each partition.

    python examples/sort.py                                   # local processes, generated input
    mpiexec -n 4 python examples/sort.py                      # inside an MPI world
    python examples/sort.py -i 'data/*.parquet' --key name    # your own Parquet files, sorted by column `name`

The plan:
  source -> split into even row ranges
         -> sample: a random sample of keys from each range
         -> consolidate the samples -> bounds: --partitions - 1 quantiles of the sample (one row, a list)
  split + bounds -> assign: each row's range = how many bounds are smaller than its key
         -> column partition by that range -> ORDER BY key in each partition -> sink

Partition i then holds only keys <= those of partition i+1, so the output files,
read in file-name order, are the whole input sorted by key. Equal keys always
share a partition. Every step is DuckDB SQL, so the bounds, the ranges and the
final ORDER BY compare keys the same way. The sorted ranges land in the output
folder as they are: the sink hard-links them (it copies only when the output
is on another file system than the job directories) and renames the folder
into place once all are there, so it never looks complete before it is.

Without -i the script writes its input once (seeded: always the same data):
--rows rows in --files Parquet files under <data-root>/example-data/, with
key BLOB (10 random bytes) and payload BIGINT (the row's number).
"""
import os

import common
from mpipipe import Driver, PlanError
from mpipipe.logical import (ColumnPartitionNode, ConsolidateNode, Context, DataSetPartitionNode, DataSinkNode,
                             DataSourceNode, LogicalPlan, ParquetDataSet, SqlEngineNode)

RANGE = "__range"  # the helper column holding each row's range; dropped before the output


def write_input(folder, rows, files, seed):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = 0
    for f, n in enumerate(common.file_sizes(rows, files)):
        rng = np.random.default_rng([seed, f])
        keys = rng.integers(0, 256, size=(n, 10), dtype=np.uint8)
        table = pa.table({
            "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(10), n, [None, pa.py_buffer(keys.tobytes())])
                     .cast(pa.binary()),
            "payload": np.arange(start, start + n, dtype=np.int64),
        })
        pq.write_table(table, os.path.join(folder, f"part-{f:05d}.parquet"))
        start += n


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def build_plan(ctx, inputs, output, key, partitions, splits, sample_rows, seed, sink="link"):
    k = quote(key)
    source = DataSourceNode(ctx, ParquetDataSet(inputs))
    schema = source.output_schema()
    if key not in schema.names:
        raise PlanError(f"sort key {key!r} is not a column of the input; its columns are {', '.join(schema.names)}")
    if RANGE in schema.names:
        raise PlanError(f"the input already has a column named {RANGE}, which this example uses itself")
    split = DataSetPartitionNode(ctx, source, splits, partition_by="rows")
    if partitions == 1:
        assign = SqlEngineNode(ctx, split, f"SELECT *, 0::BIGINT AS {RANGE} FROM {{0}}", name="assign")
    else:
        sample = SqlEngineNode(ctx, split, f"SELECT {k} AS key FROM {{0}} WHERE {k} IS NOT NULL "
                                           f"USING SAMPLE reservoir({sample_rows} ROWS) REPEATABLE ({seed})",
                               name="sample")
        samples = ConsolidateNode(ctx, sample, 1, name="samples")
        fractions = ", ".join(f"{i / partitions!r}" for i in range(1, partitions))
        bounds = SqlEngineNode(ctx, samples, f"SELECT quantile_disc(key, [{fractions}]) AS bounds FROM {{0}}",
                               name="bounds")
        # bounds is NULL when the sample is empty (no rows at all); NULL keys sort last, so they go to the last range
        assign = SqlEngineNode(ctx, {"data": split, "bounds": bounds}, f"""
            SELECT d.*,
                   CASE WHEN d.{k} IS NULL THEN {partitions - 1}
                        ELSE coalesce(len(list_filter(b.bounds, lambda x: x < d.{k})), 0) END::BIGINT AS {RANGE}
            FROM {{data}} AS d CROSS JOIN {{bounds}} AS b""", name="assign")
    ranges = ColumnPartitionNode(ctx, assign, partitions, column=RANGE, name="ranges")
    ordered = SqlEngineNode(ctx, ranges, f"SELECT * EXCLUDE ({RANGE}) FROM {{0}} ORDER BY {k}", name="sorted")
    return DataSinkNode(ctx, ordered, output, type=sink)


def main():
    driver = Driver(description=__doc__.splitlines()[0])
    common.add_flags(driver, "sort", rows=200_000, columns="key, payload (or any, with --key)")
    driver.add_argument("--key", default="key", help="the column to sort by (default: key)")
    driver.add_argument("--sample-rows", type=int, default=2000, help="keys sampled from each split to pick the bounds")
    args = driver.get_arguments()
    common.check_positive(args, "partitions", "splits", "sample_rows")
    inputs = common.input_paths(driver, args, "sort",
                                lambda folder: write_input(folder, args["rows"], args["files"], args["seed"]))
    output = common.output_folder(driver, args, "sort")
    ctx = Context()
    sink = build_plan(ctx, inputs, output, args["key"], args["partitions"], args["splits"] or args["partitions"],
                      args["sample_rows"], args["seed"], common.sink_type(driver, output))
    result = driver.run(LogicalPlan(ctx, sink))
    if result is None:  # --dry-run
        return
    rows_in = sum(v["rows"] for v in result.values("ranges"))
    per_file = [v["rows"] for v in result.values("sorted")]
    print(f"sort: {rows_in:,} rows in, {sum(per_file):,} rows out in {len(per_file)} file(s) "
          f"(rows per file: {', '.join(f'{n:,}' for n in per_file)})")
    print(f"output: {result.values()[0]['path']}")


if __name__ == "__main__":
    main()
