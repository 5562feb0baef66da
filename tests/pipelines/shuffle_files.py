"""Shuffles read by every kind of node that reads buckets, in one plan and with the DataFrame API; the results
go to OUT/<name>.parquet (one file each, partitions in order) so a test can compare a run whose intermediates
are Arrow IPC files with one whose intermediates are Parquet (SP_SHUFFLE_FORMAT).

    python shuffle_files.py INPUT_GLOB OUT plan|dataframe
"""
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import mpipipe
from mpipipe.logical import (ArrowComputeNode, ArrowStreamNode, Context, DataSinkNode, DataSourceNode,
                             HashPartitionNode, LimitNode, LogicalPlan, ParquetDataSet, PandasComputeNode, RootNode,
                             SqlEngineNode, UserDefinedPartitionNode)


def sort_table(runtime_ctx, tables):
    return tables[0].sort_by([("id", "ascending")])


def double_val(runtime_ctx, frames):
    df = frames[0].sort_values("id")
    df["val"] = df["val"] * 2
    return df


def stream_copy(runtime_ctx, readers):
    for batch in readers[0]:
        yield pa.Table.from_batches([batch])


def by_id(table):
    return pc.remainder(table.column("id"), 3)


def main() -> None:
    pattern, out, part = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    sp = mpipipe.init()
    if part == "plan":
        run_plan(sp, pattern, out)
    else:
        run_dataframe(sp, pattern, out)
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if os.path.isdir(folder):
            files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
            assert len(files) == len(os.listdir(folder)) - 1, os.listdir(folder)  # Parquet and the sink's marker
            table = pa.concat_tables([pq.read_table(os.path.join(folder, f)) for f in files])
            pq.write_table(table, os.path.join(out, name + ".parquet"))


def run_plan(sp, pattern, out):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([pattern]))
    hashed = HashPartitionNode(ctx, (src,), 4, ["key"])
    grouped = SqlEngineNode(ctx, (hashed,), "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} "
                                            "GROUP BY key ORDER BY key")
    rows = SqlEngineNode(ctx, (hashed,), "SELECT * FROM {0} ORDER BY id", partial_aggregate=False)
    arrow = ArrowComputeNode(ctx, (hashed,), process_func=sort_table)
    pandas = PandasComputeNode(ctx, (hashed,), process_func=double_val)
    streamed = ArrowStreamNode(ctx, (hashed,), process_func=stream_copy)
    limited = LimitNode(ctx, (hashed,), 7)
    fn_parts = UserDefinedPartitionNode(ctx, (src,), 3, partition_fn=by_id)
    fn_rows = SqlEngineNode(ctx, (fn_parts,), "SELECT * FROM {0} ORDER BY id")
    sinks = [DataSinkNode(ctx, (node,), os.path.join(out, f"plan_{label}"), type="copy")
             for label, node in (("grouped", grouped), ("rows", rows), ("arrow", arrow), ("pandas", pandas),
                                 ("streamed", streamed), ("fn_rows", fn_rows))]
    # the limit's rows depend on the order of the bucket files it reads, not on their form: only its count counts
    counted = SqlEngineNode(ctx, (limited,), "SELECT count(*) AS n FROM {0}")
    sinks.append(DataSinkNode(ctx, (counted,), os.path.join(out, "plan_limit"), type="copy"))
    sp.run(LogicalPlan(ctx, RootNode(ctx, sinks)))


def run_dataframe(sp, pattern, out):
    df = sp.read_parquet(pattern)
    sp.partial_sql("SELECT key, sum(val) AS s FROM {0} GROUP BY key ORDER BY key",
                   df.repartition(3, hash_by="key")).write_parquet(os.path.join(out, "df_grouped"))
    df.repartition(4, by="id % 4").partial_sort(by="id").write_parquet(os.path.join(out, "df_sorted"))
    # a shuffle straight into a sink: the user's folder gets Parquet, whatever the intermediates are
    df.repartition(2, hash_by="id").write_parquet(os.path.join(out, "df_direct"))


if __name__ == "__main__":
    main()
