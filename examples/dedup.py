"""Deduplication: keep one row per id, the latest by timestamp, with a deterministic tie-break.

    python examples/dedup.py                                   # local processes, generated input
    mpiexec -n 4 python examples/dedup.py                      # inside an MPI world
    python examples/dedup.py -i 'events/*.parquet' --id user_id --ts updated_at

The plan: source -> split into even row ranges -> hash partition by id ->
per partition, keep the row with the greatest timestamp of each id -> sink.
All rows of an id land in the same partition, so each partition's answer is
final. Rows of one id with the same (latest) timestamp are told apart by
their other columns, largest first, so the same input always gives the same
output; exact duplicate rows are one row.

Without -i the script writes its input once (seeded: always the same data):
--rows rows in --files Parquet files under <data-root>/example-data/, with
id BIGINT (about three rows per id), ts TIMESTAMP (few distinct values, so
ties happen), amount DOUBLE and note VARCHAR; about 10% of the rows are exact
copies of other rows.
"""
import os

import common
from mpipipe import Driver, PlanError
from mpipipe.logical import (Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode)


def write_input(folder, rows, files, seed):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    unique = rows - rows // 10
    ids = rng.integers(0, max(1, unique // 3), size=unique, dtype=np.int64)
    minutes = rng.integers(0, 20, size=unique)  # few timestamps: the same id often has two rows at its latest
    table = pa.table({
        "id": ids,
        "ts": pa.array(np.datetime64("2024-01-01T00:00:00", "us") + minutes * np.timedelta64(60_000_000, "us")),
        "amount": np.round(rng.uniform(0, 100, size=unique), 2),
        "note": common.random_strings(rng, unique, 8, b"abc"),
    })
    copies = rng.integers(0, unique, size=rows - unique) if unique else np.zeros(0, dtype=np.int64)
    order = rng.permutation(np.concatenate([np.arange(unique), copies]))  # copies scattered among the files
    table = table.take(pa.array(order))
    start = 0
    for f, n in enumerate(common.file_sizes(rows, files)):
        pq.write_table(table.slice(start, n), os.path.join(folder, f"part-{f:05d}.parquet"))
        start += n


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def dedup_query(columns, id_col, ts_col):
    """One row per id: the latest, ties broken by every other column, largest first."""
    others = [c for c in columns if c not in (id_col, ts_col)]
    order = ", ".join(f"{quote(c)} DESC NULLS LAST" for c in [ts_col] + others)
    return (f"SELECT * FROM {{0}} "
            f"QUALIFY row_number() OVER (PARTITION BY {quote(id_col)} ORDER BY {order}) = 1 "
            f"ORDER BY {quote(id_col)}")


def main():
    driver = Driver(description=__doc__.splitlines()[0])
    common.add_flags(driver, "dedup", rows=200_000, columns="id, ts (and any others)")
    driver.add_argument("--id", default="id", help="the column that identifies a record (default: id)")
    driver.add_argument("--ts", default="ts", help="the column whose greatest value is kept (default: ts)")
    args = driver.get_arguments()
    common.check_positive(args, "partitions", "splits")
    inputs = common.input_paths(driver, args, "dedup",
                                lambda folder: write_input(folder, args["rows"], args["files"], args["seed"]))

    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet(inputs))
    columns = source.output_schema().names
    missing = [c for c in (args["id"], args["ts"]) if c not in columns]
    if missing:
        raise PlanError(f"column(s) {', '.join(missing)} not in the input; its columns are {', '.join(columns)} "
                        "(choose them with --id and --ts)")
    split = DataSetPartitionNode(ctx, source, args["splits"] or args["partitions"], partition_by="rows")
    by_id = HashPartitionNode(ctx, split, args["partitions"], hash_columns=[args["id"]], name="by_id")
    latest = SqlEngineNode(ctx, by_id, dedup_query(columns, args["id"], args["ts"]), name="deduped")
    sink = DataSinkNode(ctx, latest, common.output_folder(driver, args, "dedup"), type="copy")
    result = driver.run(LogicalPlan(ctx, sink))
    if result is None:  # --dry-run
        return
    rows_in = sum(v["rows"] for v in result.values("by_id"))
    rows_out = sum(v["rows"] for v in result.values("deduped"))
    print(f"dedup: {rows_in:,} rows in, {rows_out:,} rows out ({rows_in - rows_out:,} dropped), "
          f"in {args['partitions']} file(s)")
    print(f"output: {result.values()[0]['path']}")


if __name__ == "__main__":
    main()
