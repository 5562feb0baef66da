"""The DataFrame form of tests/pipelines/parallel_map.py: read -> repartition / random_shuffle -> partial_sql.

    python parallel_map_df.py INPUT_DIR OUTPUT_DIR [UNIT_ROWS]

UNIT_ROWS: the rule's rows per map task (mpipipe.logical.mapsplit.MAP_UNIT_ROWS), for inputs of test size.

Options come from mpipipe.init() (two executors) and SP_* variables. Rank 0 writes OUTPUT_DIR/<name>.parquet
(the results, in partition order) and OUTPUT_DIR/results.json ({"tasks": {name: map tasks}}).
"""
import json
import os
import sys

import pyarrow.parquet as pq

import mpipipe
from mpipipe.logical import mapsplit

AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY key"


def main():
    inp, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if len(sys.argv) > 3:
        mapsplit.MAP_UNIT_ROWS = int(sys.argv[3])
    sp = mpipipe.init(num_executors=2)
    files = sp.read_parquet(os.path.join(inp, "files", "*.parquet"))
    hashed = files.repartition(4, hash_by="key")
    by_col = sp.read_parquet(os.path.join(inp, "small", "*.parquet")).repartition(4, by="part", map_tasks=3)
    shuffled = sp.read_parquet(os.path.join(inp, "one.parquet")).random_shuffle(3)
    csv = sp.read_csv(os.path.join(inp, "typed", "*.csv"), schema={"id": "BIGINT", "key": "BIGINT", "val": "DOUBLE"})
    results = {
        "agg_files": sp.partial_sql(AGG, hashed),
        "by_col": sp.partial_sql("SELECT part, count(*) AS n, sum(id) AS s FROM {0} GROUP BY part", by_col),
        "shuffled": sp.partial_sql("SELECT count(*) AS n, sum(id) AS s FROM {0}", shuffled),
        "agg_csv": sp.partial_sql("SELECT key, count(*) AS n, sum(val) AS s FROM {0} GROUP BY key",
                                  csv.repartition(2, hash_by="key", map_tasks=2)),
    }
    os.makedirs(out, exist_ok=True)
    for name, df in results.items():
        pq.write_table(df.to_arrow(), os.path.join(out, f"{name}.parquet"))
    tasks = {"hashed": hashed.node.npartitions, "by_col": by_col.node.npartitions,
             "shuffled": shuffled.node.npartitions, "partitions": {k: v.npartitions for k, v in results.items()}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"tasks": tasks}, f)


if __name__ == "__main__":
    main()
