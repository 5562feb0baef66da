"""Partial aggregation before a hash shuffle: the split of a query (by example, refusals, and two-phase
results against one-phase ones on random tables), the plan it changes, and real runs (local, the DataFrame
form, mpiexec -n 3) compared with DuckDB on the same files."""
from __future__ import annotations

import decimal
import glob
import json
import math
import os
import random

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python
from table_tools import assert_rows
from mpipipe.logical import (Context, DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode)
from mpipipe.logical.partial import PartialHashPartitionNode
from mpipipe.steps.partial_agg import SAMPLE_ROWS, estimated_groups, map_select, over, split_aggregate

SCRIPT = os.path.join(REPO, "tests", "pipelines", "partial_agg.py")

SCHEMA = pa.schema([("key", pa.int64()), ("k2", pa.string()), ("val", pa.float64()), ("i", pa.int32()),
                    ("d", pa.decimal128(10, 2)), ("b", pa.bool_()), ("tag", pa.string())])

AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {0} GROUP BY key"


def split(query, hash_columns=("key",), schema=SCHEMA, **kw):
    return split_aggregate(query, list(hash_columns), schema, **kw)


# --- the split, by example ---------------------------------------------------------------------------

def test_the_usual_group_by_splits_into_a_partial_and_a_combining_query():
    s, why = split(AGG)
    assert why == ""
    assert s.map_query == ('SELECT "key" AS "key", count_star() AS __mpipipe_p0, sum(val) AS __mpipipe_p1, '
                           'min(tag) AS __mpipipe_p2 FROM {0} GROUP BY "key"')
    assert s.reduce_query == ('SELECT "key" AS "key", CAST(sum(__mpipipe_p0) AS BIGINT) AS n, '
                              'CAST(sum(__mpipipe_p1) AS DOUBLE) AS s, min(__mpipipe_p2) AS t FROM {0} GROUP BY "key"')
    assert s.aggregates == ("count_star", "sum", "min")


def test_avg_shares_partials_and_integer_sums_travel_as_decimals():
    s, _ = split("SELECT key, avg(i) AS a, sum(i) AS s, count(i) AS c FROM {0} GROUP BY key")
    # one sum and one count serve all three; a HUGEINT sum would become a DOUBLE in Parquet
    assert s.map_query.count("sum(i)") == 1 and s.map_query.count("count(i)") == 1
    assert "CAST(sum(i) AS DECIMAL(38, 0))" in s.map_query
    assert "CAST(sum(__mpipipe_p0) AS HUGEINT) AS s" in s.reduce_query


def test_where_on_group_keys_runs_on_the_map_side_and_having_on_the_reduce_side():
    s, _ = split("SELECT key, count(*) AS n FROM {0} AS t WHERE t.key > 3 GROUP BY key HAVING sum(val) > 1;")
    assert "WHERE (t.\"key\" > 3)" in s.map_query and "HAVING" not in s.map_query
    assert "HAVING (CAST(sum(__mpipipe_p1) AS DOUBLE) > 1)" in s.reduce_query and "WHERE" not in s.reduce_query


def test_named_input_placeholder_and_group_by_all():
    s, why = split("SELECT k2, key, max(d) FROM {h} GROUP BY ALL", input_names=["h"])
    assert why == "" and s.map_query.endswith('FROM {0} GROUP BY k2, "key"')


def test_over_replaces_the_placeholder_but_not_inside_string_literals():
    s, _ = split("SELECT key, count(*) AS n FROM {0} WHERE key <> 0 OR '{0}' = 'x' GROUP BY key HAVING "
                 "min(tag) <> '{0}'")
    assert "'{0}'" in over(s.map_query, "v") and " FROM v " in over(s.map_query, "v")
    assert "'{0}'" in over(s.reduce_query, "v")


def test_a_slice_whose_keys_hardly_repeat_is_written_row_by_row():
    s, _ = split(AGG)
    assert s.rows_query == ('SELECT "key" AS "key", CAST(1 AS BIGINT) AS __mpipipe_p0, val AS __mpipipe_p1, '
                            'tag AS __mpipipe_p2 FROM {0}')
    con = duckdb.connect()
    n = 1000
    for keys, form in ((range(n), "rows"), ([k % 10 for k in range(n)], "aggregated"), ([], "aggregated"),
                       ([None] * n, "aggregated")):
        con.register("v", pa.table({"key": pa.array(list(keys), pa.int64()), "val": [1.0] * len(keys),
                                    "i": pa.array([1] * len(keys), pa.int32()), "tag": ["x"] * len(keys)}))
        query, how = map_select(s, con, "v")
        assert how == form and query == over(s.rows_query if form == "rows" else s.map_query, "v")


@pytest.mark.parametrize("keys,rows", [(1_000_000, 125_000), (1_000_000, 2_500_000), (10_000, 625_000)])
def test_groups_of_a_slice_are_estimated_from_its_first_rows(keys, rows):
    rng = random.Random(keys + rows)
    drawn = [rng.randrange(keys) for _ in range(rows)]
    sample = drawn[:SAMPLE_ROWS]
    got, true = estimated_groups(rows, len(sample), len(set(sample))), len(set(drawn))
    assert abs(got - true) < 0.05 * true, (got, true)  # enough to tell 37% of the rows from 50%


def test_estimates_at_the_edges():
    assert estimated_groups(0, 0, 0) == 0 and estimated_groups(100, 100, 40) == 40
    assert estimated_groups(10**6, SAMPLE_ROWS, SAMPLE_ROWS) == 10**6  # every key sampled was new
    assert estimated_groups(10**6, SAMPLE_ROWS, 1) == pytest.approx(1)  # one key (NULL, say) so far


REFUSED = [
    ("SELECT key, count(DISTINCT tag) FROM {0} GROUP BY key", "DISTINCT"),
    ("SELECT key, median(val) FROM {0} GROUP BY key", "median() does not combine"),
    ("SELECT key, quantile_cont(val, 0.5) FROM {0} GROUP BY key", "quantile_cont() does not combine"),
    ("SELECT key, string_agg(tag, ',' ORDER BY tag) FROM {0} GROUP BY key", "does not combine"),
    ("SELECT key, min(tag ORDER BY val) FROM {0} GROUP BY key", "ORDER BY"),
    ("SELECT key, any_value(tag) FROM {0} GROUP BY key", "does not combine"),
    ("SELECT key, max(val, 2) FROM {0} GROUP BY key", "2 arguments"),
    ("SELECT key, count(*) FILTER (WHERE val > 0) FROM {0} GROUP BY key", "FILTER"),
    ("SELECT key, count(*), sum(count(*)) OVER () FROM {0} GROUP BY key", "window"),
    ("SELECT a.key, count(*) FROM {0} a JOIN {0} b USING (key) GROUP BY a.key", "join"),
    ("SELECT key, count(*) FROM {0} GROUP BY key ORDER BY key", "ORDER"),
    ("SELECT key, count(*) FROM {0} GROUP BY key LIMIT 5", "LIMIT"),
    ("SELECT DISTINCT key, count(*) FROM {0} GROUP BY key", "DISTINCT"),
    ("SELECT key, k2, count(*) FROM {0} GROUP BY GROUPING SETS ((key), (key, k2))", "GROUPING SETS"),
    ("SELECT key, count(*) FROM {0} GROUP BY ROLLUP (key)", "ROLLUP"),
    ("SELECT count(*) FROM {0}", "no GROUP BY"),
    ("SELECT k2, count(*) FROM {0} GROUP BY k2", "hash column(s) key are not group keys"),
    ("SELECT key % 2 AS m, count(*) FROM {0} GROUP BY key % 2", "not a plain column"),
    ("SELECT key AS k, count(*) FROM {0} GROUP BY k", "not a column of the input"),
    ("SELECT key, count(*) FROM {0} GROUP BY 1", "not a plain column"),
    ("SELECT key, count(*) FROM {0} WHERE val > 0 GROUP BY key", "WHERE clause reads val"),
    ("SELECT key, count(*) AS n FROM {0} GROUP BY key HAVING n > 1", "not a column of the input"),
    ("SELECT key, count(*) FROM {0} WHERE key IN (SELECT key FROM {0}) GROUP BY key", "subquery"),
    ("SELECT key, sum(val * random()) FROM {0} GROUP BY key", "random() may give another value"),
    ("SELECT key, count(*) FROM {0} WHERE key < epoch(now()) GROUP BY key", "now() may give another value"),
    ("SELECT key, count(*), {__data_partition__} AS p FROM {0} GROUP BY key", "partition number"),
    ("SELECT key, count(*) FROM {1} GROUP BY key", "other than its one input"),
    ("CREATE MACRO m(x) AS x + 1; SELECT key, sum(m(i)) FROM {0} GROUP BY key", "several statements"),
    ("WITH t AS (SELECT * FROM {0}) SELECT key, count(*) FROM t GROUP BY key", "WITH"),
    ("SELECT key, count(*) FROM {0} GROUP BY key QUALIFY count(*) > 1", "QUALIFY"),
    ("SELECT key, count(*) FROM {0} GROUP BY key UNION ALL SELECT 1, 2", "not a single SELECT"),
    ("SELECT * FROM {0} GROUP BY ALL", "a group key is not a plain column"),
    ("SELECT key, max(COLUMNS('val')) FROM {0} GROUP BY key", "has a star expression"),
    ("SELECT key, tag, count(*) FROM {0} GROUP BY key", "reads tag outside an aggregate"),
    ("SELECT key, list(val) FROM {0} GROUP BY key", "list() does not combine"),
    ("SELECT key, avg(to_days(i)) FROM {0} GROUP BY key", "avg() giving INTERVAL"),
    ("SELECT key, count(*) FROM read_parquet('x.parquet') GROUP BY key", "exactly its one input"),
]


@pytest.mark.parametrize("query,reason", REFUSED, ids=[r for _, r in REFUSED])
def test_refused_queries_say_why(query, reason):
    s, why = split(query)
    assert s is None
    assert reason in why, why


@pytest.mark.parametrize("query", ["SELECT key, val FROM {0} WHERE val > 0", "SELECT * FROM {0} ORDER BY key",
                                   "SELECT key, sum(val) OVER (PARTITION BY key) FROM {0}"])
def test_queries_that_aggregate_nothing_are_refused_without_a_word(query):
    assert split(query) == (None, "")


def test_the_partition_column_the_shuffle_adds_is_refused():
    s, why = split("SELECT key, max(pcol) FROM {0} GROUP BY key", partition_column="pcol")
    assert s is None and "partition column 'pcol'" in why


def test_unknown_schema_and_random_shuffle_are_refused():
    assert split(AGG, schema=None)[1] == "the input's columns are not known before running"
    assert split(AGG, hash_columns=())[1] == "rows are not partitioned by columns"


# --- two phases against one, on random tables --------------------------------------------------------

ACCEPTED = [
    (AGG, ["key"]),
    ("SELECT key, k2, count(val) AS c, sum(i) AS si, avg(i) AS ai, avg(val) AS av, max(d) AS md, sum(d) AS sd, "
     "avg(d) AS ad, bool_and(b) AS ba, bool_or(b) AS bo, bit_xor(i) AS bx, bit_or(i) AS bor, min(b) AS mb, "
     "count() AS n FROM {0} GROUP BY key, k2", ["key"]),
    ("SELECT key, k2, sum(i) * 2 + count(*) AS x, round(avg(val), 3) AS r FROM {0} GROUP BY key, k2", ["key", "k2"]),
    ("SELECT k2, key, lower(k2) || '!' AS l, min(val) AS mv, max(tag) AS mt FROM {0} AS t "
     "WHERE t.key IS NOT NULL AND coalesce(k2, '') <> 'b' GROUP BY k2, t.key HAVING count(i) > 0 OR max(tag) IS NULL",
     ["k2"]),
    ("SELECT key FROM {0} GROUP BY key HAVING sum(i) > 10 AND avg(val) IS NOT NULL", ["key"]),
    ("SELECT key, CASE WHEN count(*) > 2 THEN 'many' ELSE 'few' END AS size, sum(i) IS NULL AS all_null, "
     "sum(val) / nullif(count(val), 0) AS mean FROM {0} GROUP BY key", ["key"]),
]


def random_table(rng: random.Random, n: int) -> pa.Table:
    def maybe(v, p=0.2):
        return None if rng.random() < p else v

    keys = [maybe(rng.randrange(6), 0.1) for _ in range(n)]
    return pa.table({
        "key": pa.array(keys, pa.int64()),
        "k2": pa.array([maybe(rng.choice("abc")) for _ in range(n)], pa.string()),
        # key 5's values are all NULL: sums and averages of nothing
        "val": pa.array([None if k == 5 else maybe(rng.uniform(-1e6, 1e6)) for k in keys], pa.float64()),
        "i": pa.array([maybe(rng.randrange(-2**31, 2**31)) for _ in range(n)], pa.int32()),
        "d": pa.array([maybe(decimal.Decimal(rng.randrange(-10**9, 10**9)) / 100) for _ in range(n)],
                      pa.decimal128(10, 2)),
        "b": pa.array([maybe(rng.random() < 0.5) for _ in range(n)], pa.bool_()),
        "tag": pa.array([maybe(f"t{rng.randrange(20)}") for _ in range(n)], pa.string()),
    }, schema=SCHEMA)


def two_phase(s, slices, hash_columns, nbuckets, folder, rng):
    """As a run does it: each slice's partial rows (aggregated, or one by one, at random) bucketed into
    Parquet files, each bucket combined."""
    con = duckdb.connect()
    hashed = f"hash({', '.join(hash_columns)}) % {nbuckets}"
    schema = None
    for j, t in enumerate(slices):
        con.register("slice", t)
        rows = over(s.rows_query if rng.random() < 0.5 else s.map_query, "slice")
        schema = con.sql(f"{rows} LIMIT 0").to_arrow_table().schema
        con.execute(f"COPY (SELECT *, {hashed} AS b FROM ({rows})) TO '{folder}/m{j}' "
                    "(FORMAT parquet, PARTITION_BY (b))")
        con.unregister("slice")
    out, types = [], set()
    for b in range(nbuckets):
        files = glob.glob(f"{folder}/m*/b={b}/*.parquet")
        if files:
            con.execute(f"CREATE OR REPLACE VIEW bucket AS SELECT * EXCLUDE (b) FROM read_parquet({files!r}, "
                        "hive_partitioning = true)")
        else:
            con.register("bucket", schema.empty_table())
        rel = con.sql(over(s.reduce_query, "bucket"))
        types.add(tuple(str(t) for t in rel.types))
        out.append(rel.to_arrow_table())
        if not files:
            con.unregister("bucket")
    return pa.concat_tables(out), types


def close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b and type(a) is type(b)


def sorted_rows(t):
    rows = [tuple(r.values()) for r in t.to_pylist()]
    return sorted(rows, key=lambda r: tuple((v is None, str(type(v)), v if v is not None else 0) for v in r))


@pytest.mark.parametrize("query,hash_columns", ACCEPTED, ids=[f"q{i}" for i in range(len(ACCEPTED))])
def test_two_phases_give_the_one_phase_rows_and_types(query, hash_columns, tmp_path):
    s, why = split(query, hash_columns)
    assert s is not None and s.rows_query, why
    con = duckdb.connect()
    for seed in range(12):
        rng = random.Random(seed)
        # 1 to 7 slices, some empty, of up to 60 rows
        slices = [random_table(rng, rng.choice([0, 1, 3, 20, 60])) for _ in range(rng.randrange(1, 8))]
        nbuckets = rng.choice([1, 2, 3, 5])
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        got, types = two_phase(s, slices, hash_columns, nbuckets, folder, rng)
        con.register("whole", pa.concat_tables(slices))
        one = con.sql(query.replace("{0}", "whole"))
        assert types == {tuple(str(t) for t in one.types)}, f"seed {seed}: {types} vs {one.types}"
        want = one.to_arrow_table()
        con.unregister("whole")
        assert got.column_names == want.column_names
        a, b = sorted_rows(got), sorted_rows(want)
        assert len(a) == len(b), f"seed {seed}: {len(a)} rows vs {len(b)}"
        for x, y in zip(a, b):
            assert all(close(u, v) for u, v in zip(x, y)), f"seed {seed}: {x} vs {y}"


# --- the plan ---------------------------------------------------------------------------------------------

@pytest.fixture
def src(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(random_table(random.Random(1), 50), path)
    ctx = Context()
    return DataSourceNode(ctx, ParquetDataSet(path), name="src")


def test_a_hash_partition_read_only_by_a_group_by_becomes_a_partial_aggregate(src):
    ctx = src.ctx
    h = HashPartitionNode(ctx, src, 4, ["key"], name="h")
    q = SqlEngineNode(ctx, h, AGG, name="agg")
    assert ctx.nodes[-1] is q  # the twin is made before the SQL node: plans list nodes in creation order
    plan = LogicalPlan(ctx, q)
    twin = q.inputs[0]
    assert isinstance(twin, PartialHashPartitionNode) and twin.name == "h.partial"
    assert [n.name for n in plan.nodes] == ["src", "h.partial", "agg"]
    assert twin.split.map_query.startswith('SELECT "key" AS "key", count_star()')
    assert "CAST(sum(__mpipipe_p0) AS BIGINT) AS n" in q.statements[0]
    text = plan.explain()
    assert ("h.partial: partition by hash of key into 4, each task's rows aggregated first where keys repeat "
            "(count_star, sum, min)") in text
    assert "combining the partial aggregates of h.partial" in text
    # later plans keep the decision (executors keep the nodes they were sent), and h stays plain for others
    assert [n.name for n in LogicalPlan(ctx, [q, h]).nodes] == ["src", "h", "h.partial", "agg"]
    assert type(h) is HashPartitionNode


def _fingerprints(src, **options):
    ctx = src.ctx
    h = HashPartitionNode(ctx, src, 4, ["key"])
    q = SqlEngineNode(ctx, h, AGG, **options)
    infos = LogicalPlan(ctx, q).infos
    return infos[1].fingerprint, infos[2].fingerprint, infos[2].describe


def test_turned_off_it_runs_as_written_and_the_fingerprints_differ(src):
    on_hash, on_sql, _ = _fingerprints(src)
    off_hash, off_sql, describe = _fingerprints(src, partial_aggregate=False)
    assert on_hash != off_hash and on_sql != off_sql  # the journal never mixes the two forms
    assert describe.endswith("(no partial aggregate: turned off (partial_aggregate=False))")


@pytest.mark.parametrize("shape", ["root", "second reader", "refused", "random", "published"])
def test_plans_where_it_does_not_apply_are_left_as_they_are(src, shape, tmp_path):
    ctx = src.ctx
    kw = {"random_shuffle": True} if shape == "random" else {}
    if shape == "published":
        kw["output_path"] = str(tmp_path / "pub")
    h = HashPartitionNode(ctx, src, 4, None if shape == "random" else ["key"], name="h", **kw)
    q = SqlEngineNode(ctx, h, "SELECT key, median(val) AS m FROM {0} GROUP BY key" if shape == "refused" else AGG,
                      name="agg")
    roots = [q]
    if shape == "root":
        roots.append(h)
    if shape == "second reader":
        roots.append(DataSinkNode(ctx, h, str(tmp_path / "out"), name="also"))
    plan = LogicalPlan(ctx, roots)
    assert q.inputs == (h,) and not any(isinstance(n, PartialHashPartitionNode) for n in plan.nodes)
    assert q.statements[0] == q.sql_query.replace("{0}", "__mpipipe_input_0")
    reason = {"root": "'h' is also a result of the plan", "second reader": "'h' is also read by also",
              "refused": "median() does not combine", "random": "rows are spread at random",
              "published": "'h' publishes its partitions"}[shape]
    assert reason in q.describe()


def test_other_inputs_and_queries_without_aggregates_get_no_note(src):
    ctx = src.ctx
    q = SqlEngineNode(ctx, DataSetPartitionNode(ctx, src, 2), AGG, name="agg")
    f = SqlEngineNode(ctx, HashPartitionNode(ctx, src, 2, ["key"]), "SELECT * FROM {0} WHERE val > 0", name="f")
    LogicalPlan(ctx, [q, f])
    assert "partial" not in q.describe() and "partial" not in f.describe()


# --- real runs ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("partial_inputs")
    rng = random.Random(7)
    for f in range(5):
        n = 0 if f == 3 else 400  # one empty file: an empty map slice
        t = random_table(rng, n).select(["key", "val", "tag", "i"])
        pq.write_table(t, str(folder / f"p{f}.parquet"))
    return str(folder)


def duck_answer(inputs, query):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{inputs}/*.parquet')")
    return con.sql(query.replace("{0}", "t")).to_arrow_table()


def check_plan_run(out, inputs):
    from partial_agg import QUERIES  # tests/pipelines is on the path below

    explain = json.load(open(os.path.join(out, "explain.json")))["plan"]
    for name, (query, _) in QUERIES.items():
        got = pq.read_table(os.path.join(out, f"{name}.parquet"))
        want = duck_answer(inputs, query)
        assert_rows(got, want, what=name)
    assert "h_agg.partial:" in explain and "h_nulls.partial:" in explain and "h_unique.partial:" in explain
    forms = json.load(open(os.path.join(out, "explain.json")))
    assert forms["h_agg.partial"] == ["aggregated"] * 3 and set(forms["h_unique.partial"]) == {"rows"}
    assert "\n  h_refused: partition by hash of key into 4;" in explain
    assert "(no partial aggregate: the select list: count(DISTINCT ...)" in explain
    assert "\n  h_off: partition by hash of key into 4;" in explain


@pytest.fixture(autouse=True)
def _pipelines_on_path(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "tests", "pipelines"))


def test_plan_form_runs_locally_with_duckdb_s_answers(inputs, tmp_path):
    out = str(tmp_path / "out")
    args = ["--input-dir", inputs, "--out-dir", out, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2"]
    d = python(SCRIPT, *args, timeout=180)
    assert d.returncode == 0, d.stderr
    check_plan_run(out, inputs)
    # the same plan made again in another process has the same fingerprints: everything comes from the journal
    again = python(SCRIPT, *args, timeout=180)
    assert again.returncode == 0 and " 0 tasks ran " in again.stderr, again.stderr
    check_plan_run(out, inputs)


def test_dataframe_form_runs_locally_with_duckdb_s_answers(inputs, tmp_path):
    out = str(tmp_path / "out")
    env = env_for_tests({"SP_DATA_ROOT": str(tmp_path / "jobs")})
    d = python(SCRIPT, "--dataframe", "--input-dir", inputs, "--out-dir", out, env=env, timeout=180)
    assert d.returncode == 0, d.stderr
    from partial_agg import QUERIES

    assert_rows(pq.read_table(os.path.join(out, "df_agg.parquet")), duck_answer(inputs, QUERIES["agg"][0]),
                what="DataFrame group-by")
    # the hash partition, read after the group-by used its twin: every input row once
    assert_rows(pq.read_table(os.path.join(out, "df_rows.parquet")), duck_answer(inputs, "SELECT * FROM {0}"),
                what="the hash partition's own rows")
    assert "combining the partial aggregates of hash_partition.partial" in \
        json.load(open(os.path.join(out, "explain.json")))["agg"]


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")), reason="the virtualenv has no mpiexec")
def test_plan_form_under_mpiexec_with_duckdb_s_answers(inputs, tmp_path):
    out = str(tmp_path / "out")
    d = mpiexec(3, SCRIPT, "--input-dir", inputs, "--out-dir", out, "--data-root", str(tmp_path / "jobs"),
                timeout=180)
    assert d.returncode == 0, d.stderr
    check_plan_run(out, inputs)
