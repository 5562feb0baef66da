"""Build-time validation of data nodes (no processes), the pure split/substitute functions,
and one real run: ArrowStreamNode resuming from its checkpoint."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, python
from journal_tools import records
from mpipipe.errors import PlanError
from mpipipe.logical import (ArrowComputeNode, ColumnPartitionNode, ConsolidateNode, Context, CsvDataSet,
                             DataSetPartitionNode, DataSinkNode, DataSourceNode, HashPartitionNode, LimitNode,
                             LogicalPlan, ParquetDataSet, SqlEngineNode, UnionNode, UserDefinedPartitionNode)
from mpipipe.logical.dataset import Fragment
from mpipipe.steps.partio import DataError, PartitionData, read_fragment
from mpipipe.steps.partition import even_split
from mpipipe.steps.sink import MARKER
from mpipipe.steps.sql import input_view, substitute

STREAM_SCRIPT = os.path.join(REPO, "tests", "pipelines", "stream_resume.py")


def write_parquet(path, n, start=0, row_group_size=None, extra=False):
    cols = {"a": pa.array(range(start, start + n), pa.int64()), "b": [f"s{i % 7}" for i in range(n)]}
    if extra:
        cols["c"] = pa.array([1.5] * n)
    pq.write_table(pa.table(cols), str(path), row_group_size=row_group_size)
    return str(path)


@pytest.fixture
def pq_file(tmp_path):
    return write_parquet(tmp_path / "t.parquet", 50)


@pytest.fixture
def ctx():
    return Context()


@pytest.fixture
def src(ctx, pq_file):
    return DataSourceNode(ctx, ParquetDataSet(pq_file), name="src")


def plan_error(fn, node: str) -> str:
    """Call fn, which must raise PlanError naming `node`; return the message."""
    with pytest.raises(PlanError) as e:
        fn()
    msg = str(e.value)
    assert f"'{node}'" in msg, f"the error does not name node {node!r}: {msg}"
    return msg


# --- SQL -----------------------------------------------------------------------------------

# a query is checked when the plan is made (LogicalPlan, or a DataFrame action), as smallpond reports it

def test_sql_that_does_not_parse(ctx, src):
    msg = plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, src, "SELEC a FROM {0}", name="bad_sql")), "bad_sql")
    assert "does not parse" in msg and "(query: SELEC a FROM {0})" in msg


def test_sql_placeholder_beyond_the_inputs(ctx, src, pq_file):
    other = DataSourceNode(ctx, ParquetDataSet(pq_file), name="other")
    msg = plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, [src, other], "SELECT * FROM {0} JOIN {2} USING (a)",
                                                            name="three")),
                     "three")
    assert "{2}" in msg and "2 input(s)" in msg


def test_sql_unknown_named_input(ctx, src):
    msg = plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, {"orders": src}, "SELECT * FROM {nosuch}",
                                                            name="named")), "named")
    assert "{nosuch}" in msg and "{orders}" in msg


def test_sql_unknown_column_is_a_binder_error(ctx, src):
    msg = plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, src, "SELECT nosuch_column FROM {0}",
                                                            name="binder")), "binder")
    assert "nosuch_column" in msg


def test_sql_named_inputs_and_schema_known_at_build_time(ctx, src, pq_file):
    other = DataSourceNode(ctx, ParquetDataSet(pq_file), name="other")
    node = SqlEngineNode(ctx, {"l": src, "r": other}, "SELECT l.a, r.b FROM {l} l JOIN {r} r USING (a)", name="ok")
    assert node.output_schema().names == ["a", "b"]
    assert node.input_names == ("l", "r")


def test_sql_string_literals_are_not_placeholders(ctx, src):
    node = SqlEngineNode(ctx, src, "SELECT a FROM {0} WHERE regexp_matches(b, '^s[0-9]{1}$') OR b = '{b}'",
                         name="literal")
    assert node.output_schema().names == ["a"]


def test_sql_inputs_with_different_partition_counts(ctx, src):
    h3 = HashPartitionNode(ctx, src, 3, hash_columns="a", name="h3")
    h4 = HashPartitionNode(ctx, src, 4, hash_columns="a", name="h4")
    # reported when the plan is submitted (a run, explain(); as smallpond's planner does), not when built
    mm = SqlEngineNode(ctx, [h3, h4], "SELECT * FROM {0} JOIN {1} USING (a)", name="mm")
    msg = plan_error(lambda: LogicalPlan(ctx, mm).explain(), "mm")
    assert "h3: 3" in msg and "h4: 4" in msg
    plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, {"x": h3, "y": h4}, "SELECT * FROM {x}",
                                                      name="mm_named")).infos, "mm_named")
    msg = plan_error(lambda: LogicalPlan(ctx, SqlEngineNode(ctx, h3, "SELECT * FROM {0}", npartitions=4,
                                                            name="mm_explicit")).infos, "mm_explicit")
    assert "'h3' has 3" in msg
    # a one-partition input is broadcast, so it goes with any count
    assert SqlEngineNode(ctx, [h3, src], "SELECT * FROM {0}", name="bcast").npartitions == 3


# --- inputs --------------------------------------------------------------------------------

def test_input_path_that_matches_nothing(ctx, tmp_path):
    msg = plan_error(lambda: DataSourceNode(ctx, ParquetDataSet(str(tmp_path / "none" / "*.parquet")),
                                            name="src_glob"), "src_glob")
    assert "matches no file" in msg
    (tmp_path / "empty_dir").mkdir()
    msg = plan_error(lambda: DataSourceNode(ctx, CsvDataSet(str(tmp_path / "empty_dir")), name="src_dir"), "src_dir")
    assert "matches no file" in msg and ".csv" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its mode")
def test_unreadable_input_file(ctx, tmp_path):
    path = write_parquet(tmp_path / "locked.parquet", 5)
    os.chmod(path, 0)
    try:
        msg = plan_error(lambda: DataSourceNode(ctx, ParquetDataSet(path), name="src_locked"), "src_locked")
        assert "not readable" in msg
    finally:
        os.chmod(path, 0o644)


def test_corrupt_input_file(ctx, tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    msg = plan_error(lambda: DataSourceNode(ctx, ParquetDataSet(str(tmp_path / "bad.parquet")), name="src_bad"),
                     "src_bad")
    assert "bad.parquet" in msg


def test_split_of_csv_by_rows_is_refused(ctx, tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    csv = DataSourceNode(ctx, CsvDataSet(str(tmp_path / "x.csv")), name="csv")
    msg = plan_error(lambda: DataSetPartitionNode(ctx, csv, 2, partition_by="rows", name="split_csv"), "split_csv")
    assert "Parquet" in msg
    assert DataSetPartitionNode(ctx, csv, 2, partition_by="files", name="split_ok").npartitions == 2


# --- shapes and counts ---------------------------------------------------------------------

def test_union_of_incompatible_schemas(ctx, src, tmp_path):
    wide = DataSourceNode(ctx, ParquetDataSet(write_parquet(tmp_path / "w.parquet", 5, extra=True)), name="wide")
    msg = plan_error(lambda: UnionNode(ctx, [src, wide], name="u"), "u")
    assert "different schemas" in msg and "'src'" in msg and "'wide'" in msg


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True, None])
def test_npartitions_must_be_a_whole_number(ctx, src, bad):
    def cases():
        yield "split", lambda: DataSetPartitionNode(ctx, src, bad, name="split")
        yield "hash", lambda: HashPartitionNode(ctx, src, bad, hash_columns="a", name="hash")
        yield "colpart", lambda: ColumnPartitionNode(ctx, src, bad, column="a", name="colpart")
        yield "userpart", lambda: UserDefinedPartitionNode(ctx, src, bad, lambda t: [0] * t.num_rows, name="userpart")
        if bad is not None:  # None means "the default" for these
            yield "consolidate", lambda: ConsolidateNode(ctx, src, bad, name="consolidate")
            yield "sql", lambda: SqlEngineNode(ctx, src, "SELECT * FROM {0}", npartitions=bad, name="sql")
            yield "arrow", lambda: ArrowComputeNode(ctx, src, lambda c, t: t[0], npartitions=bad, name="arrow")

    for name, make in cases():
        msg = plan_error(make, name)
        assert "npartitions must be a whole number >= 1" in msg, msg
    assert not ctx.nodes[1:], "a rejected node was registered"


def test_consolidate_into_more_partitions_than_the_input_has(ctx, src):
    split = DataSetPartitionNode(ctx, src, 3, name="split3")
    msg = plan_error(lambda: ConsolidateNode(ctx, split, 4, name="cons"), "cons")
    assert "cannot consolidate 3 partitions into 4" in msg


def test_limit_must_be_a_whole_number(ctx, src):
    plan_error(lambda: LimitNode(ctx, src, -1, name="lim"), "lim")
    plan_error(lambda: LimitNode(ctx, src, 1.5, name="lim2"), "lim2")


def test_hash_columns_must_exist(ctx, src):
    msg = plan_error(lambda: HashPartitionNode(ctx, src, 2, hash_columns=["nope"], name="h"), "h")
    assert "nope" in msg
    plan_error(lambda: HashPartitionNode(ctx, src, 2, name="h_none"), "h_none")
    msg = plan_error(lambda: HashPartitionNode(ctx, src, 2, hash_columns="a", partition_column="b", name="h_pc"),
                     "h_pc")
    assert "already exists" in msg


# --- sinks ---------------------------------------------------------------------------------

def test_sink_into_a_foreign_non_empty_folder(ctx, src, tmp_path):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    msg = plan_error(lambda: DataSinkNode(ctx, src, str(foreign), name="sink_theirs"), "sink_theirs")
    assert "not written by mpipipe" in msg
    (tmp_path / "a_file").write_text("x")
    plan_error(lambda: DataSinkNode(ctx, src, str(tmp_path / "a_file"), name="sink_file"), "sink_file")
    plan_error(lambda: DataSinkNode(ctx, src, str(tmp_path / "ok"), type="zip", name="sink_type"), "sink_type")
    plan_error(lambda: DataSinkNode(ctx, src, "s3://bucket/out", type="link", name="sink_s3_link"), "sink_s3_link")
    # an empty folder, or one mpipipe wrote before (it holds the marker), is fine
    (tmp_path / "empty").mkdir()
    DataSinkNode(ctx, src, str(tmp_path / "empty"), name="sink_empty")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / MARKER).write_text("{}")
    (ours / "src-000000.parquet").write_text("old")
    DataSinkNode(ctx, src, str(ours), name="sink_ours")
    assert (foreign / "precious.txt").read_text() == "keep me"


# --- even_split ----------------------------------------------------------------------------

def assert_even(sizes):
    assert max(sizes) - min(sizes) <= 1, sizes


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_even_split_by_files(n):
    frags = [Fragment(f"/data/f{i}.parquet") for i in range(5)]
    parts = [even_split(frags, n, p, "files") for p in range(n)]
    assert [f for part in parts for f in part] == frags  # contiguous, complete, in order
    assert_even([len(part) for part in parts])
    assert sum(1 for part in parts if not part) == max(0, n - 5)


@pytest.fixture
def grouped_files(tmp_path):
    """Three files of 3, 1 and 4 row groups (250, 50 and 330 rows)."""
    return [write_parquet(tmp_path / "g0.parquet", 250, 0, 100), write_parquet(tmp_path / "g1.parquet", 50, 250, 100),
            write_parquet(tmp_path / "g2.parquet", 330, 300, 100)]


def table_of(frags):
    return PartitionData(list(frags), pa.schema([("a", pa.int64()), ("b", pa.string())])).to_arrow()


@pytest.mark.parametrize("n", [1, 3, 5, 8, 11])
def test_even_split_by_row_groups(grouped_files, n):
    frags = [Fragment(p) for p in grouped_files]
    parts = [even_split(frags, n, p, "row_groups") for p in range(n)]
    units = [[(f.path, g) for f in part for g in f.row_groups] for part in parts]
    everything = [(p, g) for p, k in zip(grouped_files, (3, 1, 4)) for g in range(k)]
    assert [u for part in units for u in part] == everything
    assert_even([len(u) for u in units])
    for part in parts:  # neighbouring groups of one file make one fragment
        assert len({f.path for f in part}) == len(part)
        assert all(f.rows is None for f in part)
    assert table_of([f for part in parts for f in part]).equals(table_of(frags))


@pytest.mark.parametrize("n", [1, 4, 7, 630, 700])
def test_even_split_by_rows(grouped_files, n):
    frags = [Fragment(p) for p in grouped_files]
    parts = [even_split(frags, n, p, "rows") for p in range(n)]
    sizes = [sum(f.rows[1] - f.rows[0] for f in part) for part in parts]
    assert sum(sizes) == 630
    assert_even(sizes)
    assert sum(1 for s in sizes if s == 0) == max(0, n - 630)
    assert table_of([f for part in parts for f in part]).column("a").to_pylist() == list(range(630))
    for part in parts:
        for f in part:
            assert 0 <= f.rows[0] < f.rows[1]
            assert read_fragment(f).num_rows == f.rows[1] - f.rows[0]


def test_even_split_by_rows_of_row_group_and_row_fragments(grouped_files):
    # a split of a split: fragments that already cover some row groups, or a row range
    frags = [Fragment(grouped_files[0], row_groups=(1, 2)), Fragment(grouped_files[2], rows=(10, 40))]
    parts = [even_split(frags, 4, p, "rows") for p in range(4)]
    assert_even([sum(f.rows[1] - f.rows[0] for f in part) for part in parts])
    got = table_of([f for part in parts for f in part]).column("a").to_pylist()
    assert got == list(range(100, 250)) + list(range(310, 340))
    with pytest.raises(DataError, match="non-contiguous"):
        even_split([Fragment(grouped_files[2], row_groups=(0, 2))], 2, 0, "rows")
    # row groups of a row-range fragment stay whole units
    rg = [even_split(frags, 2, p, "row_groups") for p in range(2)]
    assert [f for part in rg for f in part] == [Fragment(grouped_files[0], row_groups=(1,)),
                                                 Fragment(grouped_files[0], row_groups=(2,)), frags[1]]


def test_even_split_by_rows_needs_parquet():
    with pytest.raises(DataError, match="Parquet"):
        even_split([Fragment("/data/x.csv", "csv")], 2, 0, "rows")
    with pytest.raises(DataError, match="Parquet"):
        even_split([Fragment("/data/x.csv", "csv")], 2, 0, "row_groups")


def test_reader_over_files_that_differ_in_nullability(tmp_path):
    # DuckDB writes NOT NULL columns when it saw no nulls, nullable ones for an empty partition
    loose = pa.schema([("a", pa.int64())])
    strict = pa.schema([pa.field("a", pa.int64(), nullable=False)])
    pq.write_table(loose.empty_table(), str(tmp_path / "0.parquet"))
    pq.write_table(pa.table({"a": [1, 2]}, schema=strict), str(tmp_path / "1.parquet"))
    pq.write_table(pa.table({"a": [3, None]}, schema=loose), str(tmp_path / "2.parquet"))
    data = PartitionData([Fragment(str(tmp_path / f"{i}.parquet")) for i in (1, 0, 2)])
    assert data.reader().read_all().column("a").to_pylist() == [1, 2, 3, None]
    assert data.to_arrow().column("a").to_pylist() == [1, 2, 3, None]


# --- substitute ----------------------------------------------------------------------------

def test_substitute_positions_and_names():
    names = ["orders", "items"]
    assert substitute("n", "SELECT * FROM {0} JOIN {1} USING (k)", names) == \
        f"SELECT * FROM {input_view(0)} JOIN {input_view(1)} USING (k)"
    assert substitute("n", "SELECT * FROM {items} i, {orders} o, {0} z", names) == \
        f"SELECT * FROM {input_view(1)} i, {input_view(0)} o, {input_view(0)} z"
    assert substitute("n", "SELECT 1", []) == "SELECT 1"
    # braces that are not placeholders, and string literals, are left as written
    q = "SELECT {'x': 1} AS s, '{orders}' AS lit, 'it''s {9}' AS t, regexp_matches(b, 'a{2,3}') FROM {0}"
    assert substitute("n", q, names) == q.replace("FROM {0}", f"FROM {input_view(0)}")


@pytest.mark.parametrize("sql,needle", [("SELECT * FROM {2}", "{2}"), ("SELECT * FROM {nosuch}", "{nosuch}"),
                                        ("SELECT * FROM {0}", "{0}")])
def test_substitute_unknown_references(sql, needle):
    names = ["orders", "items"] if needle != "{0}" else []
    with pytest.raises(PlanError) as e:
        substitute("the_node", sql, names)
    assert "'the_node'" in str(e.value) and needle in str(e.value)


# --- ArrowStreamNode: checkpoint and resume (a real run on the local platform) ---------------

def test_stream_resumes_after_the_checkpointed_batches(tmp_path, data_root):
    path = write_parquet(tmp_path / "in.parquet", 1000, 0, 100)  # 10 row groups -> 2 partitions of 5 batches
    side = tmp_path / "side"
    side.mkdir()
    out = tmp_path / "report.json"
    done = python(STREAM_SCRIPT, "--input", path, "--side-dir", str(side), "--fail-after", "3", "--out", str(out),
                  "--data-root", data_root, "--num-executors", "1", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 retried" in done.stderr
    with open(out) as f:
        report = json.load(f)

    def processed(partition, attempt):
        p = side / f"p{partition}.a{attempt}.jsonl"
        return [json.loads(line)["ids"] for line in p.read_text().splitlines()] if p.exists() else None

    batches = [list(range(b * 100, b * 100 + 100)) for b in range(5)]
    # attempt 0 pulled batches 0..3; batch 3 failed before its output was yielded, so 0..2 are checkpointed
    assert processed(0, 0) == batches[:4]
    # attempt 1 processed only what no checkpoint covered
    assert processed(0, 1) == batches[3:]
    assert processed(0, 2) is None
    assert processed(1, 0) == [list(range(b * 100, b * 100 + 100)) for b in range(5, 10)]
    assert processed(1, 1) is None
    # every input row exactly once, in order
    got = PartitionData.from_folders(report["outputs"]).to_arrow()
    assert got.column("a").to_pylist() == list(range(1000))
    assert got.equals(pq.read_table(path))
    failed = [(r["n"], r["p"], r["a"]) for r in records(data_root) if r.get("s") == "failed"]
    assert failed == [("stream", 0, 0)]
    assert not os.path.exists(os.path.join(report["job_dir"], "checkpoints", "stream", "p0"))
