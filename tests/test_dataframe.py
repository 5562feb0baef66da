"""The lazy DataFrame API, run for real and checked against DuckDB computing the same thing in this process.

tests/pipelines/dataframe_all.py uses every session reader and every DataFrame method over inputs
generated here. It runs on the local platform, under `mpiexec -n 3`, and as a plain `python` with
SP_PLATFORM=mpi (which launches its own world); each runs twice with the same job id (module-scoped
fixture): the second invocation must reuse everything. Results are compared partition by partition
(the sizes of the expected partitions slice the actual result, which comes in partition order), as
multisets, or in order where order is promised: sources and even splits, partial_sort within each
partition, limit/take in partition order.
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
from typing import Any, Dict, List, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python
from journal_tools import ok_counts
from table_tools import assert_rows, norm

SCRIPT = os.path.join(REPO, "tests", "pipelines", "dataframe_all.py")
ORDER_FILES = (300, 400, 500)  # rows of orders/o0..o2.parquet
TOTAL = sum(ORDER_FILES)
JOB_ID = "dfall"


# --- inputs ----------------------------------------------------------------------------------------

def make_inputs(root: str) -> None:
    rng = random.Random(2024)
    os.makedirs(os.path.join(root, "orders"))
    oid = 0
    for i, n in enumerate(ORDER_FILES):
        ids = list(range(oid, oid + n))
        oid += n
        words = [" ".join(rng.choice(["red", "green", "blue", "gold"]) for _ in range(rng.randint(1, 3))) for _ in ids]
        t = pa.table({
            "order_id": pa.array(ids, pa.int64()),
            "key": pa.array([rng.randrange(40) for _ in ids], pa.int64()),
            "val": pa.array([round(rng.uniform(0, 100), 3) for _ in ids], pa.float64()),
            "tag": pa.array([None if rng.random() < 0.05 else rng.choice("abcde") for _ in ids], pa.string()),
            "part": pa.array([rng.randrange(4) for _ in ids], pa.int64()),
            "words": pa.array(words, pa.string()),
        })
        pq.write_table(t, os.path.join(root, "orders", f"o{i}.parquet"), row_group_size=100)
    with open(os.path.join(root, "items.csv"), "w") as f:
        f.write("order_id|item|qty|price\n")
        for o in range(0, oid, 3):
            fruit = rng.choice(['apple', 'pear', 'fig', 'kiwi'])
            f.write(f"{o}|{fruit}|{rng.randint(1, 9)}|{rng.randint(100, 999) / 100}\n")
    with open(os.path.join(root, "events.jsonl"), "w") as f:
        for _ in range(200):
            f.write(json.dumps({"key": rng.randrange(50), "kind": rng.choice(["view", "click", "buy"]),
                                "amount": round(rng.uniform(1, 50), 2)}) + "\n")
    pq.write_table(pa.table({"key": pa.array(range(30), pa.int64()),  # keys 30..39 of orders have no region
                             "region": [rng.choice(["north", "south", "east", "west"]) for _ in range(30)]}),
                   os.path.join(root, "regions.parquet"))
    pq.write_table(pa.table({"name": ["ann", "bob", "cy", "dee", "eve"],
                             "age": pa.array([31, 42, 27, 55, 38], pa.int64())}),
                   os.path.join(root, "people.parquet"))
    with open(os.path.join(root, "items.json"), "w") as f:
        json.dump({"dicts": [{"id": i, "name": f"n{i}", "score": i * 1.5} for i in range(6)],
                   "values": [3, 1, 4, 1, 5, 9, 2, 6]}, f)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("df_in"))
    make_inputs(root)
    return root


class Duck:
    """The reference: the same inputs in one DuckDB connection in this process."""

    def __init__(self, root: str) -> None:
        self.con = duckdb.connect()
        q = lambda p: "'" + os.path.join(root, p).replace("'", "''") + "'"  # noqa: E731
        c = self.con
        c.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet({q('orders/*.parquet')})")
        for i in range(len(ORDER_FILES)):
            c.execute(f"CREATE VIEW o{i} AS SELECT * FROM read_parquet({q(f'orders/o{i}.parquet')})")
        c.execute(f"CREATE VIEW items AS SELECT * FROM read_csv({q('items.csv')}, delim = '|')")
        c.execute(f"CREATE VIEW events AS SELECT * FROM read_json({q('events.jsonl')}, format = 'newline_delimited')")
        c.execute(f"CREATE VIEW regions AS SELECT * FROM read_parquet({q('regions.parquet')})")
        c.execute(f"CREATE VIEW people AS SELECT * FROM read_parquet({q('people.parquet')})")
        c.execute(f"CREATE VIEW dicts AS SELECT unnest(dicts, recursive := true) FROM read_json({q('items.json')})")
        c.execute(f"CREATE VIEW vals AS SELECT unnest(\"values\") AS item FROM read_json({q('items.json')})")
        # the order a source promises: files by name, rows in file order
        self.orders_ordered = pa.concat_tables([self.sql(f"SELECT * FROM o{i}") for i in range(len(ORDER_FILES))])
        self.people = self.sql("SELECT * FROM people")

    def sql(self, query: str, **tables: pa.Table) -> pa.Table:
        for name, t in tables.items():
            self.con.register(name, t)
        try:
            return self.con.sql(query).to_arrow_table()
        finally:
            for name in tables:
                self.con.unregister(name)

    def hash_parts(self, query: str, cols: Sequence[str], n: int, order: str = "") -> List[pa.Table]:
        """Partition p of a hash repartition: the rows whose DuckDB hash() of `cols` is p modulo n."""
        return [self.sql(f"SELECT * FROM ({query}) WHERE {hash_expr(cols, n)} = {p} {order}") for p in range(n)]

    def even_parts(self, table: pa.Table, n: int) -> List[pa.Table]:
        """An even split by rows: contiguous, sizes differ by at most one."""
        return [table.slice(p * table.num_rows // n, (p + 1) * table.num_rows // n - p * table.num_rows // n)
                for p in range(n)]

    def file_parts(self, n: int) -> List[pa.Table]:
        """An even split of orders/o0..o2 by files into n partitions."""
        k = len(ORDER_FILES)
        empty = self.sql("SELECT * FROM orders LIMIT 0")
        return [pa.concat_tables([empty] + [self.sql(f"SELECT * FROM o{i}")
                                            for i in range(p * k // n, (p + 1) * k // n)])
                for p in range(n)]

    def each(self, parts: Sequence[pa.Table], query: str) -> List[pa.Table]:
        """`query` (reading table t) on every partition."""
        return [self.sql(query, t=t) for t in parts]


def hash_expr(cols: Sequence[str], n: int) -> str:
    return f"(hash({', '.join(cols)}) % {n})::BIGINT"


@pytest.fixture(scope="module")
def duck(inputs):
    d = Duck(inputs)
    yield d
    d.con.close()


# --- runs ------------------------------------------------------------------------------------------

PLATFORMS = ["local", "mpiexec", "launched"]


def invoke(platform: str, inputs: str, out: str, data_root: str, *extra: str, timeout: float = 120):
    env = env_for_tests({"SP_DATA_ROOT": data_root, "SP_JOB_ID": JOB_ID})
    if platform == "mpiexec":
        return mpiexec(3, SCRIPT, inputs, out, *extra, env=env, timeout=timeout)
    if platform == "launched":  # a plain python that starts its own MPI world
        env.update(SP_PLATFORM="mpi", SP_NUM_EXECUTORS="2")
    return python(SCRIPT, inputs, out, *extra, env=env, timeout=timeout)


def needs_mpi(platform: str) -> None:
    if platform != "local" and not os.path.exists(os.path.join(BIN, "mpiexec")):
        pytest.skip("the virtualenv has no mpiexec (pip install 'mpipipe[mpi]')")


class Run:
    def __init__(self, platform: str, out: str, data_root: str) -> None:
        self.platform = platform
        self.out = out
        self.data_root = data_root
        self.first: Any = None
        self.second: Any = None
        self.results: Dict[str, Any] = {}
        self.second_results: Dict[str, Any] = {}
        self.tables: Dict[str, pa.Table] = {}
        self.second_tables: Dict[str, pa.Table] = {}

    def load(self) -> "tuple[Dict[str, Any], Dict[str, pa.Table]]":
        with open(os.path.join(self.out, "results.json")) as f:
            results = json.load(f)
        folder = os.path.join(self.out, "results")
        tables = {f[:-len(".parquet")]: pq.read_table(os.path.join(folder, f)) for f in os.listdir(folder)}
        os.remove(os.path.join(self.out, "results.json"))  # the next invocation must write its own
        return results, tables

    def t(self, name: str) -> pa.Table:
        return self.tables[name]

    def sizes(self, name: str) -> List[int]:
        return self.results["sizes"][name]


def check_done(d: Any, what: str) -> None:
    assert d.returncode == 0, f"{what} failed (exit {d.returncode})\nstdout:\n{d.stdout}\nstderr:\n{d.stderr}"
    assert "Traceback" not in d.stderr, d.stderr


@pytest.fixture(scope="module", params=PLATFORMS)
def run(request, inputs, tmp_path_factory) -> Run:
    needs_mpi(request.param)
    base = tmp_path_factory.mktemp(f"df_{request.param}")
    r = Run(request.param, str(base / "out"), str(base / "jobs"))
    r.first = invoke(r.platform, inputs, r.out, r.data_root)
    check_done(r.first, f"{r.platform}, first invocation")
    r.results, r.tables = r.load()
    r.second = invoke(r.platform, inputs, r.out, r.data_root)
    check_done(r.second, f"{r.platform}, second invocation")
    r.second_results, r.second_tables = r.load()
    return r


# --- comparing -------------------------------------------------------------------------------------

def assert_parts(actual: pa.Table, parts: Sequence[pa.Table], ordered: bool = False, what: str = "") -> None:
    """`actual` is the partitions in order: sliced by the expected sizes, each slice matches its partition."""
    assert actual.num_rows == sum(p.num_rows for p in parts), \
        f"{what}: {actual.num_rows} rows, expected {sum(p.num_rows for p in parts)}"
    offset = 0
    for p, want in enumerate(parts):
        assert_rows(actual.slice(offset, want.num_rows), want, ordered, f"{what}[{p}]")
        offset += want.num_rows


def sizes_of(parts: Sequence[pa.Table]) -> List[int]:
    return [p.num_rows for p in parts]


def pylist(t: pa.Table) -> List[Dict[str, Any]]:
    return [norm(r) for r in t.to_pylist()]


# --- readers ---------------------------------------------------------------------------------------

def test_readers(run, duck):
    assert_rows(run.t("glob"), duck.orders_ordered, ordered=True, what="read_parquet(glob)")
    assert_rows(run.t("dir"), duck.orders_ordered, ordered=True, what="read_parquet(directory)")
    assert_rows(run.t("csv"), duck.sql("SELECT * FROM items"), ordered=True, what="read_csv(delim='|')")
    assert run.t("csv").column_names == ["order_id", "item", "qty", "price"]
    assert_rows(run.t("json"), duck.sql("SELECT * FROM events"), ordered=True, what="read_json")
    assert_rows(run.t("arrow"), duck.sql("SELECT * FROM regions"), ordered=True, what="from_arrow")
    assert_rows(run.t("pandas"), duck.people, ordered=True, what="from_pandas")
    assert_rows(run.t("items_dicts"), duck.sql("SELECT * FROM dicts"), ordered=True, what="from_items(dicts)")
    assert_rows(run.t("items_values"), duck.sql("SELECT * FROM vals"), ordered=True, what="from_items(values)")
    for name in ("glob", "dir", "csv", "json", "arrow", "pandas", "items_dicts", "items_values"):
        assert run.results["npartitions"][name] == 1, name


# --- repartition -----------------------------------------------------------------------------------

def test_repartition_by_hash_of_one_column(run, duck):
    parts = duck.hash_parts("SELECT * FROM orders", ["key"], 4)
    assert run.results["npartitions"]["hash1"] == 4
    assert run.sizes("hash1") == sizes_of(parts)
    assert_parts(run.t("hash1"), parts, what="hash_by=key")


def test_repartition_by_hash_of_several_columns_over_several_tasks(run, duck):
    # three input partitions, so three tasks each write 5 buckets: to_arrow must still come in
    # partition (bucket) order, the order take() and limit() read
    parts = duck.hash_parts("SELECT * FROM orders", ["key", "tag"], 5)
    assert run.results["npartitions"]["hash2"] == 5
    assert run.sizes("hash2") == sizes_of(parts)
    assert all(sizes_of(parts))
    assert_parts(run.t("hash2"), parts, what="hash_by=[key, tag]")


def test_repartition_by_column_value(run, duck):
    parts = [duck.sql(f"SELECT * FROM orders WHERE part = {p}") for p in range(4)]
    assert run.sizes("bycol") == sizes_of(parts)
    assert_parts(run.t("bycol"), parts, what="by=part")


def test_repartition_evenly_by_files_leaves_empty_partitions(run, duck):
    parts = duck.file_parts(5)
    assert run.sizes("files") == sizes_of(parts) == [0, 300, 0, 400, 500]
    assert_parts(run.t("files"), parts, ordered=True, what="repartition(5)")
    assert_rows(run.t("files"), duck.orders_ordered, ordered=True, what="repartition(5)")


def test_repartition_evenly_by_rows(run, duck):
    parts = duck.even_parts(duck.orders_ordered, 7)
    assert run.sizes("rows") == sizes_of(parts)
    assert max(sizes_of(parts)) - min(sizes_of(parts)) <= 1
    assert_parts(run.t("rows"), parts, ordered=True, what="repartition(7, by_rows=True)")
    small = duck.even_parts(duck.people, 8)
    assert run.sizes("rows_small") == sizes_of(small) == [0, 1, 0, 1, 1, 0, 1, 1]
    assert_parts(run.t("rows_small"), small, ordered=True, what="from_pandas().repartition(8, by_rows=True)")


# --- map / filter / flat_map / map_batches ---------------------------------------------------------

def test_map_with_sql(run, duck):
    parts = duck.hash_parts("SELECT order_id, key, val * 2 AS v2, upper(tag) AS utag FROM orders", ["key"], 4)
    assert_parts(run.t("map_sql"), parts, what="map(sql)")
    assert_rows(run.t("pandas_map_sql"), run.t("map_sql"), ordered=True, what="map(sql).to_pandas()")


def test_filter_with_sql(run, duck):
    parts = duck.hash_parts("SELECT * FROM orders WHERE val > 50 AND tag IS NOT NULL", ["key"], 4)
    assert_parts(run.t("filter_sql"), parts, what="filter(sql)")


def test_filter_that_empties_partitions_then_map_with_function_and_schema(run, duck):
    sparse = [duck.sql(f"SELECT * FROM orders WHERE part = {p} AND part IN (1, 3)") for p in range(4)]
    assert run.sizes("sparse") == sizes_of(sparse)
    assert sizes_of(sparse)[0] == sizes_of(sparse)[2] == 0 and all(sizes_of(sparse)[1::2])
    assert_parts(run.t("sparse"), sparse, what="filter(part IN (1, 3))")
    assert run.results["counts"]["sparse"] == sum(sizes_of(sparse))
    mapped = duck.each(sparse,
                       "SELECT order_id, key, coalesce(tag, '-') || key::VARCHAR AS label, val * 10 AS v10 FROM t")
    # the sizes query counted `label` in every partition: the empty ones have the declared columns too
    assert run.sizes("map_fn") == sizes_of(mapped)
    assert_parts(run.t("map_fn"), mapped, what="map(fn, schema=)")
    assert run.t("map_fn").schema.names == ["order_id", "key", "label", "v10"]


def test_filter_with_function(run, duck):
    parts = duck.each(duck.file_parts(5), "SELECT * FROM t WHERE key % 3 = 0")
    assert run.sizes("filter_fn") == sizes_of(parts)
    assert_parts(run.t("filter_fn"), parts, ordered=True, what="filter(fn)")


def test_flat_map_with_sql(run, duck):
    assert run.results["npartitions"]["flat_sql"] == 3
    parts = [duck.sql(f"SELECT order_id, unnest(string_split(words, ' ')) AS word FROM o{i}") for i in range(3)]
    assert_parts(run.t("flat_sql"), parts, what="flat_map(sql)")


def test_flat_map_with_function(run, duck):
    parts = duck.hash_parts("SELECT order_id, unnest(range(key % 3)) AS i, key FROM orders", ["key"], 4)
    parts = [p.drop_columns(["key"]) for p in parts]
    assert_parts(run.t("flat_fn"), parts, what="flat_map(fn, schema=)")
    assert run.results["counts"]["flat_fn"] == sum(sizes_of(parts))


def test_map_batches_with_a_small_batch_size(run, duck):
    parts = duck.file_parts(5)
    assert run.sizes("batches") == sizes_of(parts)  # (the query counted batch_rows in the empty partitions too)
    got = run.t("batches")
    assert_parts(got.select(["order_id", "val"]), duck.each(parts, "SELECT order_id, val FROM t"), ordered=True,
                 what="map_batches")
    # each batch the function saw had at most 64 rows: runs of k rows that say k
    marks = got.column("batch_rows").to_pylist()
    i = 0
    while i < len(marks):
        k = marks[i]
        assert 1 <= k <= 64 and marks[i:i + k] == [k] * k, f"batch of {k} rows at row {i}: {marks[i:i + k + 1]}"
        i += k
    assert marks.count(64) >= 64 * 3, "no partition was cut into batches of 64"


# --- partial_sort, random_shuffle, limit, take ------------------------------------------------------

def test_partial_sort_within_each_partition(run, duck):
    parts = duck.hash_parts("SELECT * FROM orders", ["key"], 4, order="ORDER BY val, order_id")
    assert_parts(run.t("sorted_hash"), parts, ordered=True, what="partial_sort([val, order_id])")
    parts = [duck.sql(f"SELECT * FROM orders WHERE part = {p} ORDER BY order_id") for p in range(4)]
    assert_parts(run.t("sorted_col"), parts, ordered=True, what="partial_sort(order_id)")


def test_random_shuffle(run, duck):
    every = duck.sql("SELECT * FROM orders")
    for name, n in (("shuffled", 4), ("shuffled_default", 5)):
        assert run.results["npartitions"][name] == n, name
        sizes = run.sizes(name)
        assert len(sizes) == n and sum(sizes) == TOTAL, (name, sizes)
        assert sum(1 for s in sizes if s) >= 2, f"{name}: everything in one partition: {sizes}"
        assert_rows(run.t(name), every, what=name)


def test_limit_and_take_in_partition_order(run, duck):
    hash2 = run.t("hash2")  # checked partition by partition above
    assert run.results["npartitions"]["limit_hash"] == 1
    assert_rows(run.t("limit_hash"), hash2.slice(0, 100), ordered=True, what="hash2.limit(100)")
    assert run.results["take_hash2"] == pylist(hash2.slice(0, 12)), "take(12) is not the first rows in partition order"
    # over a split with empty partitions; the limit is above the row count
    assert_rows(run.t("limit_files"), duck.orders_ordered, ordered=True, what="files.limit(5000)")
    assert [norm(r) for r in run.results["take_glob"]] == pylist(duck.orders_ordered.slice(0, 5))


# --- partial_sql -----------------------------------------------------------------------------------

def test_partial_sql_join_of_two_hash_partitioned_frames(run, duck):
    parts = duck.hash_parts("SELECT e.key, e.kind, e.amount, o.order_id FROM events e JOIN orders o ON e.key = o.key",
                            ["key"], 4)
    assert run.sizes("join") == sizes_of(parts)
    assert_parts(run.t("join"), parts, what="partial_sql join")
    assert run.results["counts"]["join"] == sum(sizes_of(parts)) > 1000


def test_partial_sql_with_a_broadcast_input(run, duck):
    parts = duck.hash_parts("SELECT o.order_id, o.key, r.region FROM orders o LEFT JOIN regions r ON o.key = r.key",
                            ["key"], 4)
    got = run.t("bcast")
    assert_parts(got, parts, what="partial_sql broadcast")
    assert 0 < got.column("region").null_count < got.num_rows


def test_partial_sql_over_csv_and_take_all(run, duck):
    parts = duck.hash_parts("SELECT item, count(*) AS n, sum(qty) AS q FROM items GROUP BY item", ["item"], 3)
    assert_parts(run.t("agg_items"), parts, what="partial_sql group by")
    assert run.results["take_all_agg_items"] == pylist(run.t("agg_items"))
    assert run.results["take_all_items_dicts"] == pylist(duck.sql("SELECT * FROM dicts"))


# --- actions ---------------------------------------------------------------------------------------

def test_count(run, duck):
    counts = run.results["counts"]
    assert counts["glob"] == counts["hash2"] == TOTAL
    assert counts["sparse"] == duck.sql("SELECT count(*) n FROM orders WHERE part IN (1, 3)")["n"][0].as_py()
    assert counts["join"] == duck.sql("SELECT count(*) n FROM events e JOIN orders o ON e.key = o.key")["n"][0].as_py()
    assert counts["flat_fn"] == duck.sql("SELECT sum(key % 3) n FROM orders")["n"][0].as_py()


def test_to_pandas(run, duck):
    assert_rows(run.t("pandas_pandas"), duck.people, ordered=True, what="from_pandas().to_pandas()")


def test_write_parquet_replaces_its_own_folder(run, duck):
    written = os.path.join(run.out, "written")
    first, second = run.results["written_first"], run.results["written_second"]
    for listing in (first, second):
        assert "_MPIPIPE_SINK" in listing
        assert len([f for f in listing if f.endswith(".parquet")]) == 4, listing
    assert set(first) & set(second) == {"_MPIPIPE_SINK"}, "the second write left files of the first"
    assert sorted(os.listdir(written)) == second
    files = sorted(f for f in os.listdir(written) if f.endswith(".parquet"))
    got = pa.concat_tables([pq.read_table(os.path.join(written, f)) for f in files])
    assert_rows(got, duck.sql("SELECT * FROM orders WHERE val > 50 AND tag IS NOT NULL"), what="write_parquet")
    assert not [f for f in os.listdir(run.out) if ".mpipipe-" in f], os.listdir(run.out)


# --- laziness and reuse ----------------------------------------------------------------------------

SUMMARY = re.compile(r"\[mpipipe\] job \S+ (\w+) in \S+: ([\d,]+) tasks ran .*?([\d,]+) reused from the journal"
                     r".* on (\w+)$")


def summaries(stderr: str) -> List[tuple]:
    """(action label, status, tasks ran, tasks reused, platform) per run, in order."""
    out, label, seen = [], None, set()
    for line in stderr.splitlines():
        # on mpiexec the executor ranks print the first marker too, and their lines may come late: skip repeats
        if line.startswith("== action ") and line not in seen:
            seen.add(line)
            label = line[len("== action "):]
        m = SUMMARY.match(line)
        if m:
            out.append((label, m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")),
                        m.group(4)))
    return out


def test_nothing_runs_before_the_first_action(run):
    # the script built every frame (partial_sql and all), read their partition counts, then looked
    assert run.results["job_dir_before_first_action"] is False
    assert run.results["npartitions"]["batches"] == 5 and run.results["npartitions"]["join"] == 4


def test_later_actions_reuse_what_earlier_ones_computed(run):
    runs = summaries(run.first.stderr)
    labels = [r[0] for r in runs]
    assert len(runs) == 57 and len(set(labels)) == 57, labels
    platform = "local" if run.platform == "local" else "mpi"
    assert {(r[1], r[4]) for r in runs} == {("succeeded", platform)}
    by_label = {r[0]: r for r in runs}
    # the second action on a frame runs no task
    for label in ("to_arrow glob", "to_arrow hash2", "to_arrow sparse", "to_arrow join", "to_arrow flat_fn",
                  "to_pandas map_sql", "to_pandas pandas"):
        _, _, ran, reused, _ = by_label[label]
        assert ran == 0 and reused > 0, (label, ran, reused)
    assert by_label["to_arrow hash2"][3] == 7  # source, 3 splits, 3 hash tasks
    # a new frame over computed ones runs only its own tasks
    for name, sizes in run.results["sizes"].items():
        assert by_label[f"sizes {name}"][2] == len(sizes), (name, by_label[f"sizes {name}"])
    assert by_label["write_parquet filter_sql"][2] == 1


def test_a_second_invocation_reuses_everything(run):
    runs = summaries(run.second.stderr)
    assert len(runs) == 57
    ran = [(r[0], r[2]) for r in runs if r[2]]
    assert not ran, f"the second invocation ran tasks: {ran}"
    # every task finished once, over both invocations
    counts = ok_counts(run.data_root)
    assert counts and set(counts.values()) == {1}, collections.Counter(counts.values())
    # and gave the same results
    assert run.second_results["job_dir_before_first_action"] is True
    for key in ("npartitions", "counts", "sizes", "take_glob", "take_hash2", "take_all_items_dicts",
                "take_all_agg_items", "written_second"):
        assert run.second_results[key] == run.results[key], key
    assert sorted(run.second_tables) == sorted(run.tables)
    for name, t in run.tables.items():
        assert run.second_tables[name].equals(t), name


# --- errors ----------------------------------------------------------------------------------------

def one_line_error(d: Any) -> str:
    lines = [ln for ln in d.stderr.splitlines() if not ln.startswith(("== action", "[mpipipe]"))]
    assert d.returncode != 0, f"exit 0\nstderr:\n{d.stderr}"
    assert "Traceback" not in d.stderr, d.stderr
    assert len(lines) == 1 and lines[0].startswith("mpipipe: error: "), d.stderr
    return lines[0]


@pytest.mark.parametrize("platform", ["local", "mpiexec"])
def test_write_parquet_into_a_folder_mpipipe_did_not_write(platform, inputs, tmp_path):
    needs_mpi(platform)
    out, jobs = str(tmp_path / "out"), str(tmp_path / "jobs")
    os.makedirs(os.path.join(out, "foreign"))
    with open(os.path.join(out, "foreign", "mine.txt"), "w") as f:
        f.write("keep me")
    d = invoke(platform, inputs, out, jobs, "--foreign", timeout=60)
    line = one_line_error(d)
    assert "was not written by mpipipe" in line and os.path.join(out, "foreign") in line
    assert os.listdir(os.path.join(out, "foreign")) == ["mine.txt"]
    assert not os.path.exists(jobs), "a job directory was made for a plan that failed to build"


BAD_SCRIPTS = {
    "read_parquet_matches_nothing": (
        "sp = mpipipe.init(num_executors=2)\n"
        "sp.read_parquet(os.path.join(IN, 'orders', 'nosuch-*.parquet')).count()\n",
        "matches no file"),
    "partial_sql_bad_column": (
        "sp = mpipipe.init(num_executors=2)\n"
        "df = sp.read_parquet(os.path.join(IN, 'orders')).repartition(2, hash_by='key')\n"
        "sp.partial_sql('SELECT key, sum(nosuch) FROM {0} GROUP BY key', df).count()\n",
        "nosuch"),
    "partial_sql_bad_column_after_an_action": (
        "sp = mpipipe.init(num_executors=2)\n"
        "df = sp.read_parquet(os.path.join(IN, 'orders')).repartition(2, hash_by='key')\n"
        "print(df.count())\n"
        "sp.partial_sql('SELECT nosuch FROM {0}', df).count()\n",
        "nosuch"),
    "unknown_init_option": (
        "sp = mpipipe.init(num_executors=2, bogus_option=1)\n",
        "bogus_option"),
}
ERROR_CASES = [(name, "local") for name in BAD_SCRIPTS] + [
    ("read_parquet_matches_nothing", "mpiexec"), ("partial_sql_bad_column_after_an_action", "mpiexec")]


@pytest.mark.parametrize("case,platform", ERROR_CASES, ids=[f"{c}-{p}" for c, p in ERROR_CASES])
def test_bad_input_is_one_line_error(case, platform, inputs, tmp_path):
    needs_mpi(platform)
    body, needle = BAD_SCRIPTS[case]
    script = tmp_path / "bad.py"
    script.write_text(f"import os\nimport mpipipe\nIN = {inputs!r}\n{body}print('no error', flush=True)\n")
    env = env_for_tests({"SP_DATA_ROOT": str(tmp_path / "jobs")})
    d = (mpiexec(3, str(script), env=env, timeout=60) if platform == "mpiexec"
         else python(str(script), env=env, timeout=60))
    line = one_line_error(d)
    assert needle in line, line
    assert "no error" not in d.stdout
    if "after_an_action" in case:
        assert d.stdout.split() == [str(TOTAL)]
