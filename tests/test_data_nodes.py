"""Every data node, run for real (local platform and `mpiexec -n 3`), checked against DuckDB in this process.

tests/pipelines/data_nodes.py builds one plan with every node kind over inputs generated
here; each platform runs it once (module-scoped fixture), then again to check that the
journal makes the second run reuse everything. Results are compared as multisets (both
sides sorted by all columns) or in order where the node promises an order.
"""
from __future__ import annotations

import json
import math
import os
import random
from typing import Any, Dict, List, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BIN, REPO, mpiexec, python
from journal_tools import ok_counts
from mpipipe.logical.dataset import Fragment
from mpipipe.steps.partio import BUCKET_COLUMN, MANIFEST, PartitionData, bucket_dir
from mpipipe.steps.sink import MARKER
from table_tools import assert_rows

SCRIPT = os.path.join(REPO, "tests", "pipelines", "data_nodes.py")

ORDERS_SCHEMA = pa.schema([("order_id", pa.int64()), ("key", pa.int64()), ("val", pa.float64()),
                           ("tag", pa.string()), ("part", pa.int64())])
ORDER_FILES = {"o0.parquet": 700, "o1.parquet": 800, "o2.parquet": 900, "o3.parquet": 0}
ROW_GROUP = 128


# --- inputs --------------------------------------------------------------------------------

def make_inputs(root: str) -> None:
    """Small deterministic inputs: Parquet files with several row groups (one file empty), CSV, JSONL."""
    rng = random.Random(1234)
    orders = os.path.join(root, "orders")
    dims = os.path.join(root, "dims")
    os.makedirs(orders)
    os.makedirs(dims)
    next_id = 0
    for name, n in ORDER_FILES.items():
        ids = list(range(next_id, next_id + n))
        next_id += n
        cols = {
            "order_id": ids,
            "key": [rng.randrange(60) for _ in ids],
            "val": [round(rng.uniform(0, 100), 3) for _ in ids],
            "tag": [None if rng.random() < 0.05 else rng.choice("abcde") for _ in ids],
            "part": [rng.randrange(4) for _ in ids],
        }
        pq.write_table(pa.table(cols, schema=ORDERS_SCHEMA), os.path.join(orders, name), row_group_size=ROW_GROUP)
    with open(os.path.join(root, "items.csv"), "w") as f:
        f.write("order_id,item,qty,price\n")
        for oid in list(range(next_id)) + [9000, 9001]:  # two items whose order does not exist
            if rng.random() < 0.6:
                for _ in range(rng.randint(1, 3)):
                    f.write(f"{oid},{rng.choice(['apple', 'pear', 'fig', 'kiwi'])},{rng.randint(1, 9)},"
                            f"{rng.randint(100, 999) / 100}\n")
    with open(os.path.join(root, "events.jsonl"), "w") as f:
        for _ in range(300):
            f.write(json.dumps({"key": rng.randrange(70), "kind": rng.choice(["view", "click", "buy"]),
                                "amount": round(rng.uniform(1, 50), 2)}) + "\n")
    regions = pa.table({"key": pa.array(range(50), pa.int64()),
                        "region": [rng.choice(["north", "south", "east", "west"]) for _ in range(50)]})
    pq.write_table(regions, os.path.join(dims, "regions.parquet"))
    with open(os.path.join(dims, "tiny.csv"), "w") as f:
        f.write("a,b\n" + "".join(f"{i},w{i}\n" for i in range(5)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data_nodes_in"))
    make_inputs(root)
    return root


@pytest.fixture(scope="module")
def duck(inputs):
    """The reference: the same inputs in one DuckDB connection in this process."""
    con = duckdb.connect()
    q = lambda p: "'" + os.path.join(inputs, p).replace("'", "''") + "'"  # noqa: E731
    con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet({q('orders/*.parquet')})")
    # the order a source promises: files sorted by name, rows in file order
    con.execute(f"CREATE VIEW orders_ordered AS SELECT * EXCLUDE (filename, file_row_number) FROM "
                f"read_parquet({q('orders/*.parquet')}, filename = true, file_row_number = true) "
                "ORDER BY filename, file_row_number")
    con.execute(f"CREATE VIEW items AS SELECT * FROM read_csv({q('items.csv')})")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_json({q('events.jsonl')}, format = 'newline_delimited')")
    con.execute(f"CREATE VIEW regions AS SELECT * FROM read_parquet({q('dims/regions.parquet')})")
    con.execute(f"CREATE VIEW tiny AS SELECT * FROM read_csv({q('dims/tiny.csv')})")
    yield con
    con.close()


def sql(con, query: str, **tables: pa.Table) -> pa.Table:
    for name, t in tables.items():
        con.register(name, t)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)


# --- runs ----------------------------------------------------------------------------------

class Run:
    def __init__(self, platform: str, out_dir: str, data_root: str, first: Any, second: Any,
                 first_report: Dict[str, Any], second_report: Dict[str, Any]) -> None:
        self.platform = platform
        self.out_dir = out_dir
        self.data_root = data_root
        self.first = first
        self.second = second
        self.report = first_report
        self.second_report = second_report
        self.nodes: Dict[str, List[str]] = first_report["nodes"]

    def folders(self, node: str) -> List[str]:
        return self.nodes[node]

    def part(self, node: str, p: int) -> pa.Table:
        return PartitionData.from_folders([self.nodes[node][p]]).to_arrow()

    def parts(self, node: str) -> List[pa.Table]:
        return [self.part(node, p) for p in range(len(self.nodes[node]))]

    def all(self, node: str) -> pa.Table:
        return PartitionData.from_folders(self.nodes[node]).to_arrow()

    def bucket(self, node: str, b: int) -> pa.Table:
        """Bucket b of a partitioning node: what partition b of its consumers reads."""
        return PartitionData.from_folders([bucket_dir(f, b) for f in self.nodes[node]]).to_arrow()


def _run_once(platform: str, args: List[str]):
    if platform == "local":
        return python(SCRIPT, *args, "--num-executors", "2", timeout=120)
    return mpiexec(3, SCRIPT, *args, timeout=120)


@pytest.fixture(scope="module", params=["local", "mpi"])
def run(request, inputs, tmp_path_factory) -> Run:
    platform = request.param
    if platform == "mpi" and not os.path.exists(os.path.join(BIN, "mpiexec")):
        pytest.skip("the virtualenv has no mpiexec (pip install 'mpipipe[mpi]')")
    base = tmp_path_factory.mktemp(f"data_nodes_{platform}")
    out_dir, data_root = str(base / "out"), str(base / "jobs")
    args = ["--input-dir", inputs, "--out-dir", out_dir, "--data-root", data_root]
    reports = []
    done = []
    for _ in range(2):
        d = _run_once(platform, args)
        assert d.returncode == 0, \
            f"{platform} run failed (exit {d.returncode})\nstdout:\n{d.stdout}\nstderr:\n{d.stderr}"
        with open(os.path.join(out_dir, "outputs.json")) as f:
            reports.append(json.load(f))
        done.append(d)
    return Run(platform, out_dir, data_root, done[0], done[1], reports[0], reports[1])


# --- comparing -----------------------------------------------------------------------------

def concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables)


def same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    return [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b]


def assert_valid_empty(folder: str, schema: pa.Schema, what: str) -> None:
    """An empty partition: no manifest, Parquet file(s) with zero rows and the expected schema."""
    assert not os.path.exists(os.path.join(folder, MANIFEST)), what
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    assert files, f"{what}: {folder} holds no Parquet file"
    for f in files:
        t = pq.read_table(os.path.join(folder, f))
        assert t.num_rows == 0, f"{what}: {f} has {t.num_rows} rows"
        assert same_schema(t.schema, schema), f"{what}: schema {t.schema} != {schema}"


def manifest_fragments(folder: str) -> List[Fragment]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Fragment.from_json(d) for d in json.load(f)["fragments"]]


def units(folder: str, mode: str) -> int:
    frags = manifest_fragments(folder)
    if mode == "files":
        return len(frags)
    if mode == "row_groups":
        assert all(f.row_groups is not None and f.rows is None for f in frags)
        return sum(len(f.row_groups) for f in frags)
    assert all(f.rows is not None for f in frags)
    return sum(f.rows[1] - f.rows[0] for f in frags)


# --- sources -------------------------------------------------------------------------------

def test_sources_read_what_duckdb_reads(run, duck):
    assert_rows(run.all("src_glob"), sql(duck, "SELECT * FROM orders_ordered"), ordered=True, what="src_glob")
    assert_rows(run.all("src_dir"), sql(duck, "SELECT * FROM orders_ordered"), ordered=True, what="src_dir")
    assert_rows(run.all("src_csv"), sql(duck, "SELECT * FROM items"), what="src_csv")
    assert_rows(run.all("src_json"), sql(duck, "SELECT * FROM events"), what="src_json")
    assert_rows(run.all("src_arrow"), sql(duck, "SELECT * FROM regions"), ordered=True, what="src_arrow")
    assert_rows(run.all("src_pandas"), sql(duck, "SELECT * FROM tiny"), ordered=True, what="src_pandas")
    for name in ("src_glob", "src_dir", "src_csv", "src_json", "src_arrow", "src_pandas"):
        assert len(run.folders(name)) == 1
    # files are referenced, not copied; in-memory tables are written once
    glob_files = [f.path for f in manifest_fragments(run.folders("src_glob")[0])]
    assert [os.path.basename(p) for p in glob_files] == sorted(ORDER_FILES)
    assert [f.path for f in manifest_fragments(run.folders("src_dir")[0])] == glob_files
    assert not manifest_fragments(run.folders("src_arrow")[0])


# --- even splits ---------------------------------------------------------------------------

SPLITS = [
    # node, mode, partitions, source view, source node
    ("split_files", "files", 2, "orders_ordered", "src_glob"),
    ("split_files_many", "files", 6, "orders_ordered", "src_glob"),
    ("split_csv_files", "files", 2, "items", "src_csv"),
    ("split_rg", "row_groups", 5, "orders_ordered", "src_dir"),
    ("split_rg_many", "row_groups", 30, "orders_ordered", "src_dir"),
    ("split_rows", "rows", 3, "orders_ordered", "src_glob"),
    ("split_rows_many", "rows", 8, "tiny", "src_pandas"),
]


@pytest.mark.parametrize("node,mode,n,view,source", SPLITS, ids=[s[0] for s in SPLITS])
def test_even_split(run, duck, node, mode, n, view, source):
    folders = run.folders(node)
    assert len(folders) == n
    parts = run.parts(node)
    # contiguous and complete: the partitions, in order, are the input in order
    assert_rows(concat(parts), sql(duck, f"SELECT * FROM {view}"), ordered=True, what=node)
    sizes = [units(f, mode) for f in folders]
    assert max(sizes) - min(sizes) <= 1, f"{node}: uneven split by {mode}: {sizes}"
    schema = run.all(source).schema
    for f, size, t in zip(folders, sizes, parts):
        if size == 0:  # (a unit may hold no rows too: the empty file's one row group)
            assert t.num_rows == 0
            assert_valid_empty(f, schema, f"{node} {os.path.basename(f)}")
    empties = [f for f in folders if not manifest_fragments(f)]
    expected_empty = {"split_files_many": 6 - len(ORDER_FILES), "split_csv_files": 1,
                      "split_rg_many": 30 - total_row_groups(), "split_rows_many": 8 - 5}.get(node, 0)
    assert len(empties) == expected_empty, f"{node}: {len(empties)} empty partitions, expected {expected_empty}"


# --- partitioning --------------------------------------------------------------------------

HASHES = [
    # node, hash columns, buckets, reference view, input partitions
    ("hash_key", ["key"], 4, "orders", 3),
    ("hash_orders_id", ["order_id"], 4, "orders", 6),
    ("hash_items", ["order_id"], 4, "items", 1),
    ("hash_events", ["key"], 4, "events", 1),
    ("rehash", ["order_id"], 3, "orders", 4),
]


def total_row_groups() -> int:
    # pyarrow writes one (empty) row group for an empty table
    return sum(max(1, math.ceil(n / ROW_GROUP)) for n in ORDER_FILES.values())


def hash_expr(cols: Sequence[str], n: int) -> str:
    return f"(hash({', '.join(cols)}) % {n})::BIGINT"


@pytest.mark.parametrize("node,cols,n,view,tasks", HASHES, ids=[h[0] for h in HASHES])
def test_hash_partition(run, duck, node, cols, n, view, tasks):
    folders = run.folders(node)
    assert len(folders) == tasks
    schema = sql(duck, f"SELECT * FROM {view} LIMIT 0").schema
    for f in folders:  # every task writes every bucket, empty ones as valid empty Parquet
        for b in range(n):
            d = bucket_dir(f, b)
            assert os.path.isdir(d), d
            t = PartitionData.from_folders([d]).to_arrow()
            assert same_schema(t.schema, schema)
            if t.num_rows == 0:
                assert_valid_empty(d, schema, f"{node} {d}")
    seen = []
    for b in range(n):
        got = run.bucket(node, b)
        want = sql(duck, f"SELECT * FROM {view} WHERE {hash_expr(cols, n)} = {b}")
        assert_rows(got, want, what=f"{node} bucket {b}")
        seen.append(got.append_column("b", pa.array([b] * got.num_rows, pa.int64())))
    everything = concat(seen)
    assert_rows(everything.drop_columns(["b"]), sql(duck, f"SELECT * FROM {view}"), what=node)
    # all rows of a key land in exactly one bucket
    spread = sql(duck, f"SELECT {', '.join(cols)}, count(DISTINCT b) nb FROM t GROUP BY ALL HAVING nb <> 1",
                 t=everything)
    assert spread.num_rows == 0, spread.to_pylist()[:5]


def test_hash_partition_with_partition_column_and_several_columns(run, duck):
    for b in range(3):
        got = run.bucket("hash_multi", b)
        assert set(got.column("pcol").to_pylist()) <= {b}
        want = sql(duck, f"SELECT *, {hash_expr(['key', 'tag'], 3)} AS pcol FROM orders "
                         f"WHERE {hash_expr(['key', 'tag'], 3)} = {b}")
        assert_rows(got, want, what=f"hash_multi bucket {b}")
    assert run.all("hash_multi").num_rows == sum(ORDER_FILES.values())


def test_random_shuffle_keeps_every_row_once(run, duck):
    assert len(run.folders("hash_rand")) == 5
    sizes = [run.bucket("hash_rand", b).num_rows for b in range(4)]
    assert sum(sizes) == sum(ORDER_FILES.values())
    assert sum(1 for s in sizes if s) >= 2, f"random shuffle put everything in one bucket: {sizes}"
    assert_rows(concat([run.bucket("hash_rand", b) for b in range(4)]), sql(duck, "SELECT * FROM orders"),
                what="hash_rand")


def test_column_partition(run, duck):
    for b in range(4):
        assert_rows(run.bucket("col_part", b), sql(duck, f"SELECT * FROM orders WHERE part = {b}"),
                    what=f"col_part bucket {b}")


def test_user_defined_partition_keeps_input_order_within_a_bucket(run, duck):
    for b in range(3):
        assert_rows(run.bucket("user_part", b), sql(duck, f"SELECT * FROM orders WHERE order_id % 3 = {b}"),
                    what=f"user_part bucket {b}")
    # grouping is a stable sort: within one task's bucket, rows keep the input order
    for t, folder in enumerate(run.folders("user_part")):
        src = run.part("split_rg", t)
        for b in range(3):
            got = PartitionData.from_folders([bucket_dir(folder, b)]).to_arrow()
            want = sql(duck, f"SELECT * FROM s WHERE order_id % 3 = {b}", s=src)
            assert_rows(got, want, ordered=True, what=f"user_part task {t} bucket {b}")


# --- SQL -----------------------------------------------------------------------------------

def test_sql_group_by_on_hash_partitions(run, duck):
    parts = run.parts("sql_agg")
    assert len(parts) == 4
    want = "SELECT key, count(*) c, sum(val) s, min(tag) t FROM orders GROUP BY key"
    assert_rows(concat(parts), sql(duck, want), what="sql_agg")
    for p, t in enumerate(parts):  # partition p holds exactly the keys of bucket p
        assert_rows(t, sql(duck, f"SELECT * FROM ({want}) WHERE {hash_expr(['key'], 4)} = {p}"), what=f"sql_agg[{p}]")


def test_sql_named_inputs_join(run, duck):
    assert len(run.folders("sql_named")) == 4
    want = sql(duck, "SELECT o.order_id, o.key, i.item, i.qty * i.price AS amount "
                     "FROM orders o JOIN items i ON o.order_id = i.order_id")
    assert want.num_rows > 1000
    assert_rows(run.all("sql_named"), want, what="sql_named")


def test_sql_join_of_two_hash_partitioned_inputs(run, duck):
    assert len(run.folders("sql_join")) == 4
    want = sql(duck, "SELECT e.key, e.kind, e.amount, o.order_id FROM events e JOIN orders o ON e.key = o.key")
    assert_rows(run.all("sql_join"), want, what="sql_join")


def test_sql_broadcast_of_one_partition_input(run, duck):
    assert len(run.folders("sql_bcast")) == 4
    want = sql(duck, "SELECT o.order_id, o.key, r.region FROM orders o LEFT JOIN regions r ON o.key = r.key")
    got = run.all("sql_bcast")
    assert_rows(got, want, what="sql_bcast")
    assert got.column("region").null_count > 0 and got.column("region").null_count < got.num_rows


def test_sql_select_star_over_buckets_has_the_input_columns(run, duck):
    # DuckDB must not add the bucket folders' `__mpipipe_bucket=N` as a (hive) column
    for p in range(4):
        got = run.part("sql_star", p)
        assert BUCKET_COLUMN not in got.column_names
        assert_rows(got, run.bucket("hash_key", p), what=f"sql_star[{p}]")
    assert_rows(run.all("sql_star"), sql(duck, "SELECT * FROM orders"), what="sql_star")


def test_sql_empty_after_filter(run, duck):
    folders = run.folders("sql_empty")
    assert len(folders) == 5
    schema = sql(duck, "SELECT order_id, val FROM orders WHERE val < 0").schema
    for f in folders:
        assert_valid_empty(f, schema, f"sql_empty {f}")
    assert run.all("sql_empty").num_rows == 0


def test_sql_partial_sort_within_each_partition(run, duck):
    for p in range(4):
        bucket = run.bucket("hash_key", p)
        want = sql(duck, "SELECT order_id, key, val FROM b ORDER BY val DESC, order_id", b=bucket)
        assert_rows(run.part("sql_sorted", p), want, ordered=True, what=f"sql_sorted[{p}]")


def test_sql_several_statements_over_empty_partitions(run, duck):
    assert len(run.folders("sql_macro")) == 6
    assert_rows(run.all("sql_macro"), sql(duck, "SELECT order_id, val * 2 AS v2 FROM orders"), what="sql_macro")
    empty_inputs = [p for p, f in enumerate(run.folders("split_files_many")) if not manifest_fragments(f)]
    assert len(empty_inputs) == 2
    for p in empty_inputs:
        assert run.part("sql_macro", p).num_rows == 0


def test_sql_over_empty_csv_partition(run, duck):
    parts = run.parts("sql_csv")
    empty_inputs = [p for p, f in enumerate(run.folders("split_csv_files")) if not manifest_fragments(f)]
    assert len(empty_inputs) == 1 and parts[empty_inputs[0]].num_rows == 0
    assert_rows(concat(parts), sql(duck, "SELECT item, sum(qty) AS q FROM items GROUP BY item"), what="sql_csv")


# --- function nodes ------------------------------------------------------------------------

def test_arrow_compute_function(run, duck):
    assert len(run.folders("arrow_fn")) == 4
    assert_rows(run.all("arrow_fn"), sql(duck, "SELECT *, val * 2.0 AS val_x2 FROM orders WHERE val > 50"),
                what="arrow_fn")


def test_arrow_compute_subclass(run, duck):
    for b in range(3):
        assert_rows(run.part("arrow_cls", b),
                    sql(duck, f"SELECT tag, count(order_id) AS n FROM orders WHERE order_id % 3 = {b} GROUP BY tag"),
                    what=f"arrow_cls[{b}]")


def test_pandas_compute(run, duck):
    for b in range(4):
        assert_rows(run.part("pandas_node", b),
                    sql(duck, f"SELECT key, count(order_id) AS n, sum(val) AS total FROM orders WHERE part = {b} "
                              "GROUP BY key"),
                    what=f"pandas_node[{b}]")


def test_arrow_stream(run, duck):
    assert len(run.folders("stream_node")) == 5
    for p in range(5):
        src = run.part("split_rg", p)
        assert_rows(run.part("stream_node", p), sql(duck, "SELECT order_id, val FROM s", s=src), ordered=True,
                    what=f"stream_node[{p}]")
    assert_rows(run.all("stream_node"), sql(duck, "SELECT order_id, val FROM orders"), what="stream_node")
    # checkpoints are gone once the partition succeeded
    assert not os.path.exists(os.path.join(run.report["job_dir"], "checkpoints", "stream_node", "p0"))


def test_arrow_stream_with_declared_schema_over_empty_partitions(run, duck):
    declared = pa.schema([("order_id", pa.int64()), ("val", pa.float64())])
    folders = run.folders("stream_declared")
    empty_inputs = [p for p, f in enumerate(run.folders("split_files_many")) if not manifest_fragments(f)]
    assert len(folders) == 6 and len(empty_inputs) == 2
    for p in empty_inputs:
        assert_valid_empty(folders[p], declared, f"stream_declared[{p}]")
    assert_rows(run.all("stream_declared"), sql(duck, "SELECT order_id, val FROM orders_ordered"), ordered=True,
                what="stream_declared")


def test_arrow_stream_reader_over_files_that_differ_in_nullability(run, duck):
    assert_rows(run.all("stream_read_all"), sql(duck, "SELECT order_id, val * 2 AS v2 FROM orders_ordered"),
                ordered=True, what="stream_read_all")


def test_python_script_node(run, duck):
    for b in range(4):
        folder = run.folders("python_node")[b]
        assert os.path.exists(os.path.join(folder, "result.parquet"))
        assert_rows(run.part("python_node", b),
                    sql(duck, f"SELECT order_id, key FROM orders WHERE part = {b} AND tag = 'a'"),
                    what=f"python_node[{b}]")


# --- projection, limit, union, consolidate -------------------------------------------------

def test_projection(run, duck):
    want = sql(duck, f"SELECT order_id, {hash_expr(['key', 'tag'], 3)} AS pcol, val * 2 AS v2 FROM orders")
    assert_rows(run.all("projection"), want, what="projection")
    for p in range(3):
        assert set(run.part("projection", p).column("pcol").to_pylist()) <= {p}


def test_limit_in_partition_order(run, duck):
    assert len(run.folders("limit_rows")) == 1
    assert_rows(run.all("limit_rows"), sql(duck, "SELECT * FROM orders_ordered LIMIT 250"), ordered=True,
                what="limit_rows")
    # a limit above the row count returns every row, in partition order
    assert_rows(run.all("limit_all"), sql(duck, "SELECT * FROM orders_ordered"), ordered=True, what="limit_all")
    # input files that differ in nullability (DuckDB outputs, empty partitions among them)
    want = sql(duck, "SELECT order_id, val * 2 AS v2 FROM orders_ordered")
    assert_rows(run.all("limit_sql"), want, ordered=True, what="limit_sql")
    # over a partitioning node, "partition order" is bucket order: bucket 0 of every task first
    buckets = concat([run.bucket("col_part", b) for b in range(4)])
    assert_rows(run.all("limit_buckets"), buckets.slice(0, 700), ordered=True, what="limit_buckets")


def test_union_in_input_order(run, duck):
    parts = run.parts("union_node")
    expected = run.parts("split_files") + run.parts("split_rows")
    assert len(parts) == len(expected) == 5
    for p, (got, want) in enumerate(zip(parts, expected)):
        assert_rows(got, want, ordered=True, what=f"union_node[{p}]")
    assert_rows(concat(parts), sql(duck, "SELECT * FROM orders UNION ALL SELECT * FROM orders"), what="union_node")


def test_union_of_bucketed_inputs(run, duck):
    parts = run.parts("union_bucketed")
    assert len(parts) == 8
    for j in range(4):
        assert_rows(parts[j], run.bucket("hash_key", j), ordered=True, what=f"union_bucketed[{j}]")
        assert_rows(parts[4 + j], sql(duck, f"SELECT * FROM orders WHERE part = {j}"), what=f"union_bucketed[{4 + j}]")


def test_consolidate_merges_neighbours_in_order(run, duck):
    parts = run.parts("consolidate")
    src = run.parts("split_rg_many")
    assert len(parts) == 4
    for q in range(4):
        want = concat(src[q * 30 // 4:(q + 1) * 30 // 4])
        assert_rows(parts[q], want, ordered=True, what=f"consolidate[{q}]")
    assert_rows(concat(parts), sql(duck, "SELECT * FROM orders_ordered"), ordered=True, what="consolidate")
    bparts = run.parts("consolidate_buckets")
    assert len(bparts) == 2
    for q in range(2):
        want = concat([run.bucket("hash_key", 2 * q), run.bucket("hash_key", 2 * q + 1)])
        assert_rows(bparts[q], want, ordered=True, what=f"consolidate_buckets[{q}]")


# --- sinks ---------------------------------------------------------------------------------

def sink_table(folder: str) -> pa.Table:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    return concat([pq.read_table(os.path.join(folder, f)) for f in files])


def test_sinks(run, duck):
    link = os.path.join(run.out_dir, "sink_link")
    copy = os.path.join(run.out_dir, "sink_copy")
    manifest = os.path.join(run.out_dir, "sink_manifest")
    shuffled = os.path.join(run.out_dir, "sink_hash_rand")
    for folder in (link, copy, manifest, shuffled):
        assert os.path.isfile(os.path.join(folder, MARKER)), folder
        assert not [f for f in os.listdir(run.out_dir) if ".mpipipe-" in f], os.listdir(run.out_dir)

    # link: the SQL output files, hard-linked
    agg = sql(duck, "SELECT key, count(*) c, sum(val) s, min(tag) t FROM orders GROUP BY key")
    assert_rows(sink_table(link), agg, what="sink_link")
    files = sorted(f for f in os.listdir(link) if f.endswith(".parquet"))
    assert len(files) == 4 and all(f.startswith("sql_agg-") for f in files)
    assert all(os.stat(os.path.join(link, f)).st_nlink >= 2 for f in files)
    with open(os.path.join(link, MARKER)) as f:
        assert json.load(f) == {"type": "link", "files": 4}

    # copy: row-group fragments are read and written out, bucket files copied
    got = sink_table(copy)
    assert_rows(got, sql(duck, "SELECT * FROM orders UNION ALL SELECT * FROM orders"), what="sink_copy")
    names = os.listdir(copy)
    assert any(n.startswith("split_rg-") for n in names) and any(n.startswith("user_part-") for n in names)
    assert all(os.stat(os.path.join(copy, n)).st_nlink == 1 for n in names if n.endswith(".parquet"))

    # manifest: only a list of fragments, which read as the input in order; manifest.txt (smallpond's) has
    # their files, one path per line
    assert sorted(os.listdir(manifest)) == sorted([MARKER, "manifest.json", "manifest.txt"])
    with open(os.path.join(manifest, "manifest.json")) as f:
        frags = [Fragment.from_json(d) for d in json.load(f)["fragments"]]
    with open(os.path.join(manifest, "manifest.txt")) as f:
        assert f.read().splitlines() == [fr.path for fr in frags]
    assert_rows(PartitionData(frags).to_arrow(), sql(duck, "SELECT * FROM orders_ordered"), ordered=True,
                what="sink_manifest")

    assert_rows(sink_table(shuffled), sql(duck, "SELECT * FROM orders"), what="sink_hash_rand")

    # the sink task's own output points at what it wrote
    assert_rows(run.all("sink_link"), agg, what="sink_link job output")
    assert_rows(run.all("sink_manifest"), sql(duck, "SELECT * FROM orders_ordered"), ordered=True,
                what="sink_manifest job output")


# --- the journal ---------------------------------------------------------------------------

def test_second_run_reuses_everything_from_the_journal(run):
    total = run.report["stats"]["ran"]
    assert total > 100
    assert f"{total} tasks ran" in run.first.stderr
    assert "0 tasks ran" in run.second.stderr, run.second.stderr
    assert f"{total} reused from the journal" in run.second.stderr, run.second.stderr
    assert run.second_report["stats"]["ran"] == 0
    assert run.second_report["nodes"] == run.nodes
    counts = ok_counts(run.data_root)
    assert len(counts) == total and set(counts.values()) == {1}, "a task ran twice"
    executors = "2 executor(s) on local" if run.platform == "local" else "2 executor(s) on mpi"
    assert executors in run.first.stderr
