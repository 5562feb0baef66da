"""A plan with every kind of data node, over the inputs tests/test_data_nodes.py generates.

--input-dir DIR  holds orders/*.parquet (several row groups each, one file empty), items.csv,
                 events.jsonl, dims/regions.parquet (-> ArrowTableDataSet) and dims/tiny.csv
                 (-> PandasDataSet)
--out-dir DIR    the sinks write sink_link/, sink_copy/, sink_manifest/ and sink_hash_rand/ here; rank 0 writes
                 outputs.json: {"nodes": {node name: [partition folders]}, "job_dir": ..., "stats": ...}
"""
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mpipipe import Driver
from mpipipe.logical import (ArrowComputeNode, ArrowStreamNode, ArrowTableDataSet, ColumnPartitionNode, ConsolidateNode,
                             Context, CsvDataSet, DataSetPartitionNode, DataSinkNode, DataSourceNode,
                             HashPartitionNode, JsonDataSet, LimitNode, LogicalPlan, PandasComputeNode,
                             PandasDataSet, ParquetDataSet, ProjectionNode, PythonScriptNode, SqlEngineNode,
                             UnionNode, UserDefinedPartitionNode)


def order_id_mod3(table):
    return table["order_id"].to_numpy() % 3


def add_double(runtime_ctx, tables):
    t = tables[0].filter(pc.greater(tables[0]["val"], 50.0))
    return t.append_column("val_x2", pc.multiply(t["val"], 2.0))


class TagCounter(ArrowComputeNode):
    """The subclass form: rows per tag of each partition."""

    def process(self, runtime_ctx, tables):
        t = tables[0].group_by("tag").aggregate([("order_id", "count")])
        return t.rename_columns(["tag", "n"]).select(["tag", "n"])


def per_key(runtime_ctx, frames):
    df = frames[0]
    out = df.groupby("key", as_index=False).agg(n=("order_id", "count"), total=("val", "sum"))
    return out


def stream_ids(runtime_ctx, readers):
    for batch in readers[0]:
        yield batch.select(["order_id", "val"])


def read_all(runtime_ctx, readers):
    yield readers[0].read_all()


def write_tag_a(runtime_ctx, inputs, output_path):
    t = inputs[0].to_arrow()
    t = t.filter(pc.equal(t["tag"], "a")).select(["order_id", "key"])
    pq.write_table(t, os.path.join(output_path, "result.parquet"))
    return True


def build(ctx, inp, out):
    orders = os.path.join(inp, "orders")
    src_glob = DataSourceNode(ctx, ParquetDataSet(os.path.join(orders, "*.parquet")), name="src_glob")
    src_dir = DataSourceNode(ctx, ParquetDataSet(orders), name="src_dir")
    src_csv = DataSourceNode(ctx, CsvDataSet(os.path.join(inp, "items.csv")), name="src_csv")
    src_json = DataSourceNode(ctx, JsonDataSet(os.path.join(inp, "events.jsonl")), name="src_json")
    src_arrow = DataSourceNode(ctx, ArrowTableDataSet(pq.read_table(os.path.join(inp, "dims", "regions.parquet"))),
                               name="src_arrow")
    import pandas as pd

    src_pandas = DataSourceNode(ctx, PandasDataSet(pd.read_csv(os.path.join(inp, "dims", "tiny.csv"))),
                                name="src_pandas")

    split_files = DataSetPartitionNode(ctx, src_glob, 2, partition_by="files", name="split_files")
    split_files_many = DataSetPartitionNode(ctx, src_glob, 6, partition_by="files", name="split_files_many")
    split_csv_files = DataSetPartitionNode(ctx, src_csv, 2, partition_by="files", name="split_csv_files")
    split_rg = DataSetPartitionNode(ctx, src_dir, 5, partition_by="row_groups", name="split_rg")
    split_rg_many = DataSetPartitionNode(ctx, src_dir, 30, partition_by="row_groups", name="split_rg_many")
    split_rows = DataSetPartitionNode(ctx, src_glob, 3, partition_by="rows", name="split_rows")
    DataSetPartitionNode(ctx, src_pandas, 8, partition_by="rows", name="split_rows_many")

    hash_key = HashPartitionNode(ctx, split_rows, 4, hash_columns=["key"], name="hash_key")
    hash_multi = HashPartitionNode(ctx, split_files, 3, hash_columns=["key", "tag"], partition_column="pcol",
                                   name="hash_multi")
    hash_rand = HashPartitionNode(ctx, split_rg, 4, random_shuffle=True, name="hash_rand")
    col_part = ColumnPartitionNode(ctx, split_rows, 4, column="part", name="col_part")
    user_part = UserDefinedPartitionNode(ctx, split_rg, 3, order_id_mod3, name="user_part")
    hash_orders_id = HashPartitionNode(ctx, split_files_many, 4, hash_columns="order_id", name="hash_orders_id")
    hash_items = HashPartitionNode(ctx, src_csv, 4, hash_columns=["order_id"], name="hash_items")
    hash_events = HashPartitionNode(ctx, src_json, 4, hash_columns=["key"], name="hash_events")
    HashPartitionNode(ctx, hash_key, 3, hash_columns=["order_id"], name="rehash")  # buckets of buckets

    sql_agg = SqlEngineNode(ctx, hash_key, "SELECT key, count(*) c, sum(val) s, min(tag) t FROM {0} GROUP BY key",
                            name="sql_agg")
    SqlEngineNode(ctx, {"orders": hash_orders_id, "items": hash_items},
                  "SELECT o.order_id, o.key, i.item, i.qty * i.price AS amount "
                  "FROM {orders} o JOIN {items} i ON o.order_id = i.order_id", name="sql_named")
    SqlEngineNode(ctx, [hash_events, hash_key],
                  "SELECT e.key, e.kind, e.amount, o.order_id FROM {0} e JOIN {1} o ON e.key = o.key",
                  name="sql_join")
    SqlEngineNode(ctx, [hash_key, src_arrow],
                  "SELECT o.order_id, o.key, r.region FROM {0} o LEFT JOIN {1} r ON o.key = r.key",
                  name="sql_bcast")
    SqlEngineNode(ctx, split_rg, "SELECT order_id, val FROM {0} WHERE val < 0", name="sql_empty")
    SqlEngineNode(ctx, hash_key, "SELECT * FROM {0}", name="sql_star")
    SqlEngineNode(ctx, hash_key, "SELECT order_id, key, val FROM {0} ORDER BY val DESC, order_id",
                  name="sql_sorted")
    sql_macro = SqlEngineNode(ctx, split_files_many, ["CREATE MACRO twice(x) AS x * 2",
                                                      "SELECT order_id, twice(val) AS v2 FROM {0}"], name="sql_macro")
    SqlEngineNode(ctx, split_csv_files, "SELECT item, sum(qty) AS q FROM {0} GROUP BY item", name="sql_csv")

    ArrowComputeNode(ctx, hash_key, add_double, name="arrow_fn")
    TagCounter(ctx, user_part, name="arrow_cls")
    PandasComputeNode(ctx, col_part, per_key, name="pandas_node")
    ArrowStreamNode(ctx, split_rg, stream_ids, name="stream_node", batch_size=50, checkpoint_batches=2)
    ArrowStreamNode(ctx, split_files_many, stream_ids, name="stream_declared", batch_size=500,
                    output_schema=pa.schema([("order_id", pa.int64()), ("val", pa.float64())]))
    PythonScriptNode(ctx, col_part, write_tag_a, name="python_node")
    ProjectionNode(ctx, hash_multi, ["order_id", "pcol", "val * 2 AS v2"], name="projection")
    LimitNode(ctx, split_rows, 250, name="limit_rows")
    LimitNode(ctx, split_rg_many, 10 ** 6, name="limit_all")
    LimitNode(ctx, col_part, 700, name="limit_buckets")
    # DuckDB writes a column NOT NULL when it saw no nulls, nullable for an empty partition:
    # the files of one input differ in nullability
    LimitNode(ctx, sql_macro, 10 ** 6, name="limit_sql")
    ArrowStreamNode(ctx, ConsolidateNode(ctx, sql_macro, 1, name="consolidate_sql"), read_all, checkpoint=False,
                    name="stream_read_all")
    UnionNode(ctx, [split_files, split_rows], name="union_node")
    UnionNode(ctx, [hash_key, col_part], name="union_bucketed")
    ConsolidateNode(ctx, split_rg_many, 4, name="consolidate")
    ConsolidateNode(ctx, hash_key, 2, name="consolidate_buckets")
    DataSinkNode(ctx, sql_agg, os.path.join(out, "sink_link"), type="link", name="sink_link")
    DataSinkNode(ctx, [split_rg, user_part], os.path.join(out, "sink_copy"), type="copy", name="sink_copy")
    DataSinkNode(ctx, split_rows, os.path.join(out, "sink_manifest"), type="manifest", name="sink_manifest")
    DataSinkNode(ctx, hash_rand, os.path.join(out, "sink_hash_rand"), type="link", name="sink_hash_rand")


def main():
    driver = Driver()
    driver.add_argument("--input-dir", required=True)
    driver.add_argument("--out-dir", required=True)
    args = driver.get_arguments()
    inp, out = os.path.abspath(args["input_dir"]), os.path.abspath(args["out_dir"])
    ctx = Context()
    build(ctx, inp, out)
    res = driver.run(LogicalPlan(ctx, list(ctx.nodes)))
    if res is None:
        return
    report = {"nodes": {n.name: res.outputs(n.name) for n in ctx.nodes}, "job_dir": res.job_dir,
              "stats": res.stats}
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "outputs.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(tmp, os.path.join(out, "outputs.json"))


if __name__ == "__main__":
    main()
