"""Every reader and every DataFrame method, through the lazy DataFrame API only (no Driver).

    python dataframe_all.py INPUT_DIR OUTPUT_DIR            the whole program
    python dataframe_all.py INPUT_DIR OUTPUT_DIR --foreign  only write_parquet into OUTPUT_DIR/foreign, a
                                                            non-empty folder mpipipe did not write (must fail)

Options come from mpipipe.init() (two executors) and SP_* variables (SP_DATA_ROOT, SP_JOB_ID, ...).
tests/test_dataframe.py generates INPUT_DIR: orders/o0..o2.parquet, items.csv ('|'-delimited),
events.jsonl, regions.parquet (-> from_arrow), people.parquet (-> from_pandas), items.json (-> from_items).

Rank 0 writes OUTPUT_DIR/results/<name>.parquet (to_arrow / to_pandas results, in partition order),
OUTPUT_DIR/results.json (counts, take results, partition counts and sizes, checks made by the script) and,
through write_parquet, OUTPUT_DIR/written/. Before each action it prints `== action <label>` to stderr,
so a test can tie each `[mpipipe] job ... succeeded` summary to the action that printed it.
"""
import json
import os
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import mpipipe

MAP_SCHEMA = pa.schema([("order_id", pa.int64()), ("key", pa.int64()), ("label", pa.string()), ("v10", pa.float64())])
EXPLODE_SCHEMA = pa.schema([("order_id", pa.int64()), ("i", pa.int64())])
BATCH_SCHEMA = pa.schema([("order_id", pa.int64()), ("val", pa.float64()), ("batch_rows", pa.int64())])


# row and batch functions: defined in the script, so they travel to the workers by value

def label_row(r):
    return {"order_id": r["order_id"], "key": r["key"], "label": f"{r['tag'] or '-'}{r['key']}", "v10": r["val"] * 10}


def key_mod3(r):
    return r["key"] % 3 == 0


def explode(r):
    return [{"order_id": r["order_id"], "i": i} for i in range(r["key"] % 3)]


def tag_batch(t):
    return t.select(["order_id", "val"]).append_column("batch_rows", pa.array([t.num_rows] * t.num_rows, pa.int64()))


def action(label):
    print(f"== action {label}", file=sys.stderr, flush=True)


def main():
    inp, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    foreign_only = "--foreign" in sys.argv[3:]
    sp = mpipipe.init(num_executors=2)

    if foreign_only:
        df = sp.read_parquet(os.path.join(inp, "orders"))
        action("write_parquet foreign")
        df.write_parquet(os.path.join(out, "foreign"))  # must stop with one line, before anything runs
        print("write_parquet into a foreign folder did not fail", file=sys.stderr)
        sys.exit(3)

    # --- readers --------------------------------------------------------------------------------
    orders_dir = os.path.join(inp, "orders")
    glob_df = sp.read_parquet(os.path.join(orders_dir, "*.parquet"))
    dir_df = sp.read_parquet(orders_dir)
    csv_df = sp.read_csv(os.path.join(inp, "items.csv"), delim="|")
    json_df = sp.read_json(os.path.join(inp, "events.jsonl"))
    arrow_df = sp.from_arrow(pq.read_table(os.path.join(inp, "regions.parquet")))
    pandas_df = sp.from_pandas(pd.read_parquet(os.path.join(inp, "people.parquet")))
    with open(os.path.join(inp, "items.json")) as f:
        items = json.load(f)
    items_dicts = sp.from_items(items["dicts"])
    items_values = sp.from_items(items["values"])

    # --- repartitioning -------------------------------------------------------------------------
    hash1 = glob_df.repartition(4, hash_by="key")                         # one task, 4 buckets
    hash2 = glob_df.repartition(3).repartition(5, hash_by=["key", "tag"])  # three tasks, 5 buckets each
    bycol = dir_df.repartition(4, by="part")
    files = glob_df.repartition(5)                                       # 3 files into 5: two empty
    rows = glob_df.repartition(7, by_rows=True)
    rows_small = pandas_df.repartition(8, by_rows=True)                  # 5 rows into 8: three empty
    events_h = json_df.repartition(4, hash_by="key")
    items_h = csv_df.repartition(3, hash_by="item")

    # --- map / filter / flat_map, SQL and functions -----------------------------------------------
    map_sql = hash1.map("order_id, key, val * 2 AS v2, upper(tag) AS utag")
    filter_sql = hash1.filter("val > 50 AND tag IS NOT NULL")
    sparse = bycol.filter("part IN (1, 3)")                              # partitions 0 and 2 become empty
    map_fn = sparse.map(label_row, schema=MAP_SCHEMA)
    filter_fn = files.filter(key_mod3)
    flat_sql = glob_df.repartition(3).flat_map("order_id, unnest(string_split(words, ' ')) AS word")
    flat_fn = hash1.flat_map(explode, schema=EXPLODE_SCHEMA)
    batches = files.map_batches(tag_batch, batch_size=64, schema=BATCH_SCHEMA)

    # --- sorting, shuffling, limits, SQL ------------------------------------------------------------
    sorted_hash = hash1.partial_sort(["val", "order_id"])
    sorted_col = bycol.partial_sort("order_id")
    shuffled = glob_df.random_shuffle(4)
    shuffled_default = files.random_shuffle()
    limit_hash = hash2.limit(100)
    limit_files = files.limit(5000)
    join = sp.partial_sql("SELECT e.key, e.kind, e.amount, o.order_id FROM {0} e JOIN {1} o ON e.key = o.key",
                          events_h, hash1)
    bcast = sp.partial_sql("SELECT o.order_id, o.key, r.region FROM {0} o LEFT JOIN {1} r ON o.key = r.key",
                           hash1, arrow_df)
    agg_items = sp.partial_sql("SELECT item, count(*) AS n, sum(qty) AS q FROM {0} GROUP BY item", items_h)

    frames = {
        "glob": glob_df, "dir": dir_df, "csv": csv_df, "json": json_df, "arrow": arrow_df, "pandas": pandas_df,
        "items_dicts": items_dicts, "items_values": items_values,
        "hash1": hash1, "hash2": hash2, "bycol": bycol, "files": files, "rows": rows, "rows_small": rows_small,
        "map_sql": map_sql, "filter_sql": filter_sql, "sparse": sparse, "map_fn": map_fn, "filter_fn": filter_fn,
        "flat_sql": flat_sql, "flat_fn": flat_fn, "batches": batches, "sorted_hash": sorted_hash,
        "sorted_col": sorted_col, "shuffled": shuffled, "shuffled_default": shuffled_default,
        "limit_hash": limit_hash, "limit_files": limit_files, "join": join, "bcast": bcast, "agg_items": agg_items,
    }
    results = {"npartitions": {name: df.npartitions for name, df in frames.items()}}

    # laziness: every frame above is built, and nothing has run (no job directory yet)
    job_dir = os.path.join(os.environ["SP_DATA_ROOT"], os.environ["SP_JOB_ID"])
    results["job_dir_before_first_action"] = os.path.exists(job_dir)

    # --- actions ------------------------------------------------------------------------------------
    # (on `mpiexec -n 3` the executor ranks leave inside the first action; rank 0 goes on alone)
    counts = {}
    for name in ("glob", "hash2", "sparse", "join", "flat_fn"):
        action(f"count {name}")
        counts[name] = frames[name].count()
    results["counts"] = counts

    os.makedirs(os.path.join(out, "results"), exist_ok=True)
    for name, df in frames.items():
        action(f"to_arrow {name}")
        pq.write_table(df.to_arrow(), os.path.join(out, "results", f"{name}.parquet"))

    # rows per partition, in partition order (one row per partition, empty ones included)
    sizes = {}
    for name in ("hash1", "hash2", "bycol", "files", "rows", "rows_small", "sparse", "map_fn", "filter_fn",
                 "batches", "shuffled", "shuffled_default", "join"):
        query = "SELECT count(*) AS n FROM {0}"
        if name in ("map_fn", "batches"):  # empty partitions must have the declared columns
            query = "SELECT count(*) AS n, count(" + ("label" if name == "map_fn" else "batch_rows") + ") AS m FROM {0}"
        action(f"sizes {name}")
        sizes[name] = [r["n"] for r in sp.partial_sql(query, frames[name]).take_all()]
    results["sizes"] = sizes

    action("take glob")
    results["take_glob"] = glob_df.take(5)
    action("take hash2")
    results["take_hash2"] = hash2.take(12)
    action("take_all items_dicts")
    results["take_all_items_dicts"] = items_dicts.take_all()
    action("take_all agg_items")
    results["take_all_agg_items"] = agg_items.take_all()
    for name in ("map_sql", "pandas"):
        action(f"to_pandas {name}")
        pdf = frames[name].to_pandas()
        assert isinstance(pdf, pd.DataFrame), type(pdf)
        pq.write_table(pa.Table.from_pandas(pdf, preserve_index=False),
                       os.path.join(out, "results", f"pandas_{name}.parquet"))

    # write_parquet: a new folder, then the same folder again (replaced, nothing of the first write left)
    written = os.path.join(out, "written")
    action("write_parquet bcast")
    bcast.write_parquet(written)
    results["written_first"] = sorted(os.listdir(written))
    action("write_parquet filter_sql")
    filter_sql.write_parquet(written)
    results["written_second"] = sorted(os.listdir(written))

    with open(os.path.join(out, "results.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(out, "results.json.tmp"), os.path.join(out, "results.json"))
    print("dataframe_all done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
