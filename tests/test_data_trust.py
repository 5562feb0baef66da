"""No silent wrong answers in the data plane: what is read is checked, what is guessed is spelled out, and
nothing that failed looks complete.

Each test here failed before the checks it covers existed: a corrupt or mismatched input file anywhere in a
dataset, a file changed between planning and reading, headerless CSV files losing their first row, sampled
types rounding values, JSON keys dropped after a sample, columns turning NOT NULL when the data happened to
hold no null, and a sink over a PythonScriptNode's text files. Runs use tests/pipelines/trust_job.py on the
local platform with one executor; the rest calls the readers and the sink in this process.
"""
from __future__ import annotations

import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow.fs import FileSelector

from helpers import REPO, python
from mpipipe.errors import PlanError
from mpipipe.logical import Context, CsvDataSet, DataSourceNode, JsonDataSet, ParquetDataSet
from mpipipe.logical.dataset import Fragment
from mpipipe.steps.partio import DataError, PartitionData, read_fragment
from mpipipe.steps.sink import MARKER, sink_local
from mpipipe.steps.sql import connect, run_query

SCRIPT = os.path.join(REPO, "tests", "pipelines", "trust_job.py")
SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.string())])


def write(path, n, start=0, schema=SCHEMA, **cols):
    data = {"a": pa.array(range(start, start + n), pa.int64()), "b": [f"s{i % 5}" for i in range(n)]}
    data.update(cols)
    pq.write_table(pa.table(data, schema=schema) if schema is not None else pa.table(data), str(path))
    return str(path)


def dataset(tmp_path, second=None):
    """A folder of three Parquet files; `second(path)` replaces the middle one."""
    d = tmp_path / "in"
    d.mkdir()
    write(d / "f0.parquet", 10)
    write(d / "f1.parquet", 10, 10)
    write(d / "f2.parquet", 10, 20)
    if second is not None:
        second(d / "f1.parquet")
    return d


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def garbage(path):
    path.write_bytes(b"PAR1 these bytes are not a Parquet file at all" * 4)


def run(scenario, inp, tmp_path, *extra, code=None):
    done = python(SCRIPT, scenario, str(inp), str(tmp_path / "out"), "--data-root", str(tmp_path / "jobs"), *extra,
                  timeout=180)
    if code is not None:
        assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def error_line(done):
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("mpipipe: error: ")]
    assert lines, done.stderr
    return lines[0]


def nothing_complete(out):
    """No sink folder, nothing half-written beside it."""
    assert not os.path.exists(out), os.listdir(out)
    parent = os.path.dirname(out)
    assert not [p for p in os.listdir(parent) if ".mpipipe-" in p] if os.path.isdir(parent) else True


# --- 1. every input file is checked before its data is used or copied -------------------------------------

@pytest.mark.parametrize("damage", [truncate, garbage], ids=["truncated", "garbage"])
def test_a_corrupt_file_after_a_good_one_stops_the_plan(tmp_path, damage):
    inp = dataset(tmp_path, damage)
    with pytest.raises(PlanError) as e:
        DataSourceNode(Context(), ParquetDataSet(str(inp)), name="src")
    msg = str(e.value)
    assert "node 'src'" in msg and str(inp / "f1.parquet") in msg and "\n" not in msg
    assert "remove it from the input or replace it" in msg


@pytest.mark.parametrize("scenario", ["copy", "plan-sink"])
def test_a_corrupt_file_never_reaches_a_complete_sink(tmp_path, scenario):
    inp = dataset(tmp_path, truncate)
    done = run(scenario, inp, tmp_path, code=2)
    line = error_line(done)
    assert str(inp / "f1.parquet") in line and "cannot read Parquet file" in line
    nothing_complete(str(tmp_path / "out" / "written"))


@pytest.mark.parametrize("change,text", [
    (lambda p: write(p, 10, 10, schema=None, a=pa.array([1.5] * 10)), "column 'a' is double instead of int64"),
    (lambda p: write(p, 10, 10, schema=None, c=pa.array([1] * 10)), "extra column 'c'"),
    (lambda p: pq.write_table(pa.table({"a": pa.array(range(10), pa.int64())}), str(p)), "no column 'b'"),
], ids=["other-type", "extra-column", "missing-column"])
def test_a_file_whose_columns_differ_from_the_dataset_stops_the_plan(tmp_path, change, text):
    # DuckDB would read the three files by the first one's columns: 1.5 becomes 2, column c disappears
    inp = dataset(tmp_path, change)
    with pytest.raises(PlanError) as e:
        DataSourceNode(Context(), ParquetDataSet(str(inp)), name="src")
    msg = str(e.value)
    assert text in msg and str(inp / "f1.parquet") in msg and str(inp / "f0.parquet") in msg, msg


def test_files_that_differ_only_in_nullability_or_column_order_are_one_dataset(tmp_path):
    strict = pa.schema([pa.field("a", pa.int64(), nullable=False), ("b", pa.string())])
    inp = dataset(tmp_path, lambda p: write(p, 10, 10, schema=strict))
    pq.write_table(pa.table({"b": ["x"], "a": pa.array([99], pa.int64())}), str(inp / "f3.parquet"))
    node = DataSourceNode(Context(), ParquetDataSet(str(inp)), name="src")
    assert node.output_schema() == SCHEMA
    data = PartitionData([Fragment(str(p)) for p in sorted(inp.iterdir())])
    assert data.to_arrow().column("a").to_pylist() == list(range(30)) + [99]
    con = duckdb.connect()
    data.duckdb_source(con, "t")
    assert con.sql("SELECT sum(a), count(b) FROM t").fetchall() == [(sum(range(30)) + 99, 31)]


def test_a_summary_metadata_file_is_not_read_as_data(tmp_path):
    # Spark and Dask write _metadata beside the data: its row groups point at the data files, and DuckDB
    # reading `dir/*` would count every row twice
    d = tmp_path / "spark"
    d.mkdir()
    t = pa.table({"a": pa.array(range(10), pa.int64())})
    collected = []
    pq.write_table(t, str(d / "part-0.parquet"), metadata_collector=collected)
    collected[0].set_file_path("part-0.parquet")
    pq.write_metadata(t.schema, str(d / "_metadata"), metadata_collector=collected)
    (d / "_SUCCESS").write_bytes(b"")
    node = DataSourceNode(Context(), ParquetDataSet(str(d / "*")), name="glob")
    assert [os.path.basename(f.path) for f in node._fragments] == ["part-0.parquet"]
    with pytest.raises(PlanError, match="is a summary .* count those rows twice"):
        DataSourceNode(Context(), ParquetDataSet([str(d / "part-0.parquet"), str(d / "_metadata")]), name="named")


def test_a_file_changed_after_the_plan_was_made_fails_its_task(tmp_path):
    inp = dataset(tmp_path)
    done = run("changed", inp, tmp_path, code=1)
    line = error_line(done)
    assert "task src[0]" in line and str(inp / "f1.parquet") in line and "changed after the plan was made" in line
    nothing_complete(str(tmp_path / "out" / "written"))


def test_a_row_range_past_the_end_of_a_file_is_an_error_not_fewer_rows(tmp_path):
    path = write(tmp_path / "t.parquet", 100)
    assert read_fragment(Fragment(path, rows=(50, 100))).num_rows == 50
    with pytest.raises(DataError, match="has 100 rows but the plan reads rows 50..149"):
        read_fragment(Fragment(path, rows=(50, 150)))
    with pytest.raises(DataError, match="row group"):
        read_fragment(Fragment(path, row_groups=(0, 3)))


def job_output(tmp_path):
    d = tmp_path / "job-output"
    d.mkdir()
    return str(d)


@pytest.mark.parametrize("how", ["link", "copy"])
def test_the_sink_reads_every_footer_before_it_links_or_copies(tmp_path, how):
    good = write(tmp_path / "good.parquet", 10)
    bad = tmp_path / "bad.parquet"
    garbage(bad)
    out = str(tmp_path / "out")
    data = PartitionData([Fragment(good), Fragment(str(bad))])
    with pytest.raises(DataError) as e:
        sink_local(out, how, [("in", data)], job_output(tmp_path))
    assert str(bad) in str(e.value)
    nothing_complete(out)


def test_a_vanished_file_fails_the_sink(tmp_path):
    data = PartitionData([Fragment(write(tmp_path / "a.parquet", 3)), Fragment(write(tmp_path / "b.parquet", 3))])
    os.unlink(tmp_path / "b.parquet")
    with pytest.raises(DataError, match="b.parquet does not exist"):
        sink_local(str(tmp_path / "out"), "link", [("in", data)], job_output(tmp_path))
    nothing_complete(str(tmp_path / "out"))


def test_the_files_of_one_intermediate_input_must_agree(tmp_path):
    # what a row function without schema= writes: integers in one partition, floats in the next
    a = tmp_path / "p0.parquet"
    b = tmp_path / "p1.parquet"
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int64())}), str(a))
    pq.write_table(pa.table({"x": pa.array([1.5, 2.5])}), str(b))
    data = PartitionData([Fragment(str(a)), Fragment(str(b))])
    with pytest.raises(DataError, match="column 'x' is double instead of int64.*pass schema="):
        data.to_arrow()
    con = duckdb.connect()
    with pytest.raises(DataError, match="different columns"):
        PartitionData([Fragment(str(a)), Fragment(str(b))]).duckdb_source(con, "t")


def test_row_function_with_types_that_differ_by_partition_is_an_error_not_a_rounded_sum(tmp_path):
    (tmp_path / "unused").mkdir()
    done = run("map-types", tmp_path / "unused", tmp_path, code=1)
    assert "column 'x' is double instead of int64" in error_line(done)
    done = run("map-types-schema", tmp_path / "unused", tmp_path, code=0)
    with open(tmp_path / "out" / "result.json") as f:
        result = json.load(f)
    assert result["sql"] == [{"s": sum(range(50)) + sum(i + 0.5 for i in range(50, 100)), "n": 100}]


def test_row_function_whose_column_is_all_null_in_one_partition(tmp_path):
    (tmp_path / "unused").mkdir()
    run("map-nulls", tmp_path / "unused", tmp_path, code=0)
    with open(tmp_path / "out" / "result.json") as f:
        result = json.load(f)
    assert result["sql"] == [{"s": sum(range(50, 100)), "n": 50}]
    assert result["arrow"] == [None] * 50 + list(range(50, 100))


def test_an_empty_partition_of_a_row_function_adds_no_columns(tmp_path):
    (tmp_path / "unused").mkdir()
    run("map-empty", tmp_path / "unused", tmp_path, code=0)
    with open(tmp_path / "out" / "result.json") as f:
        assert json.load(f) == {"columns": ["x"], "x": [0, 2]}


def test_a_partition_column_that_is_not_a_whole_number_is_refused(tmp_path):
    from types import SimpleNamespace

    from mpipipe.logical import ColumnPartitionNode
    from mpipipe.steps.partition import bucket_with_sql

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"p": [0.0, 1.0, 1.5], "v": [1, 2, 3]}), str(path))
    ctx = Context()
    node = ColumnPartitionNode(ctx, DataSourceNode(ctx, ParquetDataSet(str(path)), name="src"), 3, "p")
    task = SimpleNamespace(output_dir=str(tmp_path / "out"))
    with pytest.raises(DataError, match="1 row.* not a whole number"):  # a cast alone puts 1.5 in partition 2
        bucket_with_sql(task, PartitionData([Fragment(str(path))]), node.bucket_sql(), 3, None, 1, None)
    pq.write_table(pa.table({"p": [0.0, 2.0, 2.0], "v": [1, 2, 3]}), str(path))
    bucket_with_sql(SimpleNamespace(output_dir=str(tmp_path / "ok")), PartitionData([Fragment(str(path))]),
                    node.bucket_sql(), 3, None, 1, None)
    got = PartitionData.from_folders([str(tmp_path / "ok" / "__mpipipe_bucket=2")]).to_arrow()
    assert got.column("v").to_pylist() == [2, 3]


# --- 2. no rows dropped by guessing: CSV headers, TSV, sampled types, JSON keys --------------------------

def read_both_ways(ds):
    """The dataset through the Arrow reader and through DuckDB's view, which must agree."""
    frags = ds.fragments()
    arrow = PartitionData(frags).to_arrow()
    con = duckdb.connect()
    PartitionData(frags).duckdb_source(con, "t")
    duck = con.sql("SELECT * FROM t").to_arrow_table()
    assert duck.column_names == arrow.column_names
    assert duck.to_pylist() == arrow.to_pylist()
    return arrow


TEXT_ROWS = [("alice", "bob"), ("carol", "dave"), ("erin", "frank")]
NUM_ROWS = [(1, 2), (3, 4), (5, 6)]


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")], ids=["csv", "tsv"])
@pytest.mark.parametrize("rows", [TEXT_ROWS, NUM_ROWS], ids=["text", "numbers"])
def test_headerless_files_keep_every_row_when_the_columns_are_given(tmp_path, sep, suffix, rows):
    path = tmp_path / f"x{suffix}"
    path.write_text("".join(sep.join(map(str, r)) + "\n" for r in rows))
    typ = pa.string() if rows is TEXT_ROWS else pa.int64()
    for ds in (CsvDataSet(str(path), schema=pa.schema([("p", typ), ("q", typ)])),
               CsvDataSet(str(path), columns={"p": "VARCHAR" if rows is TEXT_ROWS else "BIGINT",
                                              "q": "VARCHAR" if rows is TEXT_ROWS else "BIGINT"}),
               CsvDataSet(str(path), names=["p", "q"])):
        t = read_both_ways(ds)
        assert t.column_names == ["p", "q"] and [tuple(r.values()) for r in t.to_pylist()] == rows, ds.options


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")], ids=["csv", "tsv"])
def test_files_with_a_header_row(tmp_path, sep, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_text(f"p{sep}q\n" + "".join(sep.join(r) + "\n" for r in TEXT_ROWS))
    t = read_both_ways(CsvDataSet(str(path)))  # no columns given: the first row is the header
    assert t.column_names == ["p", "q"] and [tuple(r.values()) for r in t.to_pylist()] == TEXT_ROWS
    # columns given for a file with a header: say header=True, and the header row is not data
    t = read_both_ways(CsvDataSet(str(path), schema={"x": "VARCHAR", "y": "VARCHAR"}, header=True))
    assert t.column_names == ["x", "y"] and [tuple(r.values()) for r in t.to_pylist()] == TEXT_ROWS


def test_the_header_rule_is_always_spelled_out_to_duckdb(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    assert dict(CsvDataSet(str(path)).options)["header"] is True
    assert dict(CsvDataSet(str(path), names=["x", "y"]).options)["header"] is False
    assert dict(CsvDataSet(str(path), names=["x", "y"], header=True).options)["header"] is True
    tsv = tmp_path / "y.tsv"
    tsv.write_text("a\tb\n1\t2\n")
    assert dict(CsvDataSet([str(path), str(tsv)]).fragments()[1].options)["delim"] == "\t"
    assert "delim" not in dict(CsvDataSet([str(path), str(tsv)]).fragments()[0].options)
    with pytest.raises(PlanError, match="header must be True or False"):
        CsvDataSet(str(path), header="auto")
    with pytest.raises(PlanError, match="schema= or columns="):
        CsvDataSet(str(path), schema={"a": "BIGINT"}, columns={"a": "BIGINT"})


def test_a_value_after_the_sample_is_not_rounded(tmp_path):
    # DuckDB's sniffer looks at the first rows: a column of integers would read a later 1.5 as 2
    csv = tmp_path / "late.csv"
    csv.write_text("a\n" + "".join(f"{i}\n" for i in range(30000)) + "1.5\n")
    jsonl = tmp_path / "late.jsonl"
    jsonl.write_text("".join(json.dumps({"a": i}) + "\n" for i in range(30000)) + json.dumps({"a": 1.5}) + "\n")
    for ds in (CsvDataSet(str(csv)), JsonDataSet(str(jsonl))):
        t = read_both_ways(ds)
        assert t.schema.field("a").type == pa.float64()
        assert t.column("a").to_pylist()[-1] == 1.5


def test_a_json_key_that_appears_late_is_kept(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"a": i}) + "\n" for i in range(30000))
                   + json.dumps({"a": 0, "late": "x"}) + "\n")
    t = read_both_ways(JsonDataSet(str(one)))
    assert t.column_names == ["a", "late"] and t.column("late").to_pylist()[-1] == "x"
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):  # DuckDB samples 32 files by default
        (many / f"f{i:02d}.jsonl").write_text(json.dumps({"a": i, **({"late": "x"} if i == 39 else {})}) + "\n")
    t = read_both_ways(JsonDataSet(str(many)))
    assert "late" in t.column_names and t.column("late").to_pylist()[-1] == "x"


def test_csv_files_with_different_header_rows_stop_the_plan(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    (d / "f0.csv").write_text("a,b\n1,2\n")
    (d / "f1.csv").write_text("b,a\n3,4\n")  # the same columns in another order: DuckDB matches by name
    assert read_both_ways(CsvDataSet(str(d))).to_pylist() == [{"a": 1, "b": 2}, {"a": 4, "b": 3}]
    (d / "f2.csv").write_text("a,b,c\n5,6,7\n")  # DuckDB would drop c without a word
    with pytest.raises(PlanError) as e:
        DataSourceNode(Context(), CsvDataSet(str(d)), name="csv")
    assert str(d / "f2.csv") in str(e.value) and "extra column ['c']" in str(e.value)


def test_the_csv_files_of_one_input_are_read_with_one_set_of_types(tmp_path):
    # each file alone would be BIGINT in one and DOUBLE in the other; read together, both are DOUBLE
    d = tmp_path / "csv"
    d.mkdir()
    (d / "f0.csv").write_text("a,b\n1,x\n2,y\n")
    (d / "f1.csv").write_text("a,b\n2.5,z\n")
    ds = CsvDataSet(str(d))
    t = read_both_ways(ds)
    assert t.schema.field("a").type == pa.float64() and t.column("a").to_pylist() == [1.0, 2.0, 2.5]
    data = PartitionData(ds.fragments())
    assert data.schema().field("a").type == pa.float64()
    assert data.reader(batch_size=1).read_all().equals(t)
    out = str(tmp_path / "out")
    sink_local(out, "copy", [("in", PartitionData(ds.fragments()))], job_output(tmp_path))
    files = sorted(p for p in os.listdir(out) if p.endswith(".parquet"))
    assert files == ["in-000000.parquet"]
    assert pq.read_table(os.path.join(out, files[0])).equals(t)


def test_day_and_month_are_never_guessed(tmp_path):
    # DuckDB alone reads 01/02/2024 as 1 February (day first) because no value says otherwise
    dates = tmp_path / "dates.csv"
    dates.write_text("d\n01/02/2024\n03/04/2024\n")
    assert read_both_ways(CsvDataSet(str(dates))).column("d").to_pylist() == ["01/02/2024", "03/04/2024"]
    t = read_both_ways(CsvDataSet(str(dates), dateformat="%m/%d/%Y"))
    assert [str(d) for d in t.column("d").to_pylist()] == ["2024-01-02", "2024-03-04"]
    iso = tmp_path / "iso.csv"
    iso.write_text("d,t\n2024-01-02,2024-01-02 10:00:00\n")
    assert [str(f.type) for f in read_both_ways(CsvDataSet(str(iso))).schema] == ["date32[day]", "timestamp[us]"]
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("t\n01/02/2024 10:00:00\n03/04/2024 11:00:00\n")
    with pytest.raises(PlanError) as e:
        DataSourceNode(Context(), CsvDataSet(str(stamps)), name="stamps")
    assert "timestampformat='%d/%m/%Y %H:%M:%S'" in str(e.value) and str(stamps) in str(e.value)
    ds = CsvDataSet(str(stamps), timestampformat="%m/%d/%Y %H:%M:%S")
    DataSourceNode(Context(), ds, name="stamps_given")
    assert ([str(v) for v in read_both_ways(ds).column("t").to_pylist()]
            == ["2024-01-02 10:00:00", "2024-03-04 11:00:00"])


# --- 3. schemas do not depend on whether the data held a null --------------------------------------------

def test_nullability_does_not_depend_on_the_data(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"a": pa.array([1, None, 3, 4], pa.int64()), "b": ["x", "y", None, "x"]}),
                   str(inp / "with_nulls.parquet"))
    pq.write_table(pa.table({"a": pa.array([1, 2, 3, 4], pa.int64()), "b": ["x", "y", "z", "x"]}),
                   str(inp / "no_nulls.parquet"))
    run("nullability", inp, tmp_path, code=0)
    out = tmp_path / "out"
    for step in ("map", "filter", "sql", "hash", "rowfn", "source"):
        got = {}
        for data in ("with_nulls", "no_nulls"):
            with open(out / f"{data}.{step}.json") as f:
                got[data] = json.load(f)
            assert all(nullable for _, _, nullable in got[data]["arrow"]), (step, data, got[data])
            files = sorted((out / f"{data}.{step}.written").glob("*.parquet"))
            assert files, step
            for p in files:
                assert all(f.nullable for f in pq.read_schema(str(p))), (step, data, p, pq.read_schema(str(p)))
        assert got["with_nulls"] == got["no_nulls"], step


def test_the_sink_copies_a_users_file_as_it_is_but_makes_this_jobs_files_nullable(tmp_path):
    strict = pa.schema([pa.field("a", pa.int64(), nullable=False), ("b", pa.string())])
    job = tmp_path / "job"
    (job / "outputs").mkdir(parents=True)
    mine = write(job / "outputs" / "bucket.parquet", 5, schema=strict)
    users = write(tmp_path / "users.parquet", 5, schema=strict)
    out = tmp_path / "out"
    sink_local(str(out), "copy",
               [("mine", PartitionData([Fragment(mine)])), ("users", PartitionData([Fragment(users)]))],
               job_output(tmp_path), str(job))
    assert all(f.nullable for f in pq.read_schema(str(out / "mine-000000.parquet")))
    assert (out / "users-000000.parquet").read_bytes() == open(users, "rb").read()


def test_sql_output_files_are_nullable_and_keep_order_and_types(tmp_path):
    src = write(tmp_path / "in.parquet", 1000)
    out = str(tmp_path / "out.parquet")
    con = connect(1, None, None)
    run_query(con, ["SELECT a, b, [a] AS l, {'k': a} AS s, 1.5::DECIMAL(10, 2) AS d FROM {0} ORDER BY a DESC"
                    .replace("{0}", "__mpipipe_input_0")], [PartitionData([Fragment(src)])], out)
    schema = pq.read_schema(out)
    assert all(f.nullable for f in schema)
    assert [str(t) for t in schema.types] == ["int64", "string", "list<element: int64>", "struct<k: int64>",
                                              "decimal128(10, 2)"]
    assert pq.read_table(out).column("a").to_pylist() == list(range(999, -1, -1))


# --- 4. a sink over nodes that write files that are not Parquet -------------------------------------------

@pytest.mark.parametrize("how", ["link", "copy"])
def test_sink_over_python_script_outputs_places_their_files(tmp_path, how):
    inp = dataset(tmp_path)
    run("script-sink", inp, tmp_path, "--type", how, code=0)
    out = tmp_path / "out" / "written"
    assert (out / MARKER).exists()
    assert (out / "reports-000000" / "report.txt").read_text() == "partition 0\n"
    assert (out / "reports-000001" / "report.txt").read_text() == "partition 1\n"
    assert (out / "reports-000001" / "plots" / "p.bin").read_bytes() == bytes([1]) * 10
    assert (out / "notes-000000" / "notes.md").read_text() == "# notes\n"


def test_union_and_consolidate_pass_files_that_are_not_parquet_on(tmp_path):
    inp = dataset(tmp_path)
    run("script-union", inp, tmp_path, "--type", "copy", code=0)
    out = tmp_path / "out" / "written"
    assert (out / MARKER).exists()
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    assert got == ["together-000000/000000/plots/p.bin", "together-000000/000000/report.txt",
                   "together-000000/000001/plots/p.bin", "together-000000/000001/report.txt",
                   "together-000000/000002/notes.md"]
    assert (out / "together-000000" / "000001" / "report.txt").read_text() == "partition 1\n"


def test_sink_manifest_lists_files_that_are_not_parquet(tmp_path):
    inp = dataset(tmp_path)
    run("script-sink", inp, tmp_path, "--type", "manifest", code=0)
    with open(tmp_path / "out" / "written" / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["fragments"] == []
    assert sorted(os.path.basename(p) for p in manifest["files"]) == ["notes.md", "p.bin", "p.bin", "report.txt",
                                                                      "report.txt"]


def test_a_table_step_over_text_files_says_what_it_found(tmp_path):
    inp = dataset(tmp_path)
    line = error_line(run("script-sql", inp, tmp_path, code=1))
    assert "holds no Parquet data, only other files (report.txt, plots/p.bin)" in line
    assert "older version" not in line


# --- object stores ---------------------------------------------------------------------------------------

@pytest.fixture
def bucket(s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    s3.make_bucket("mpipipe-trust")
    return s3, "mpipipe-trust"


def test_object_store_csv_is_read_with_the_same_options_as_a_local_file(bucket, tmp_path):
    s3, name = bucket
    fs = s3.filesystem()
    with fs.open_output_stream(f"{name}/csv/x.csv") as f:
        f.write(b"alice|1\nbob|2\ncarol|3\n")
    ds = CsvDataSet(f"s3://{name}/csv/x.csv", delim="|", schema={"who": "VARCHAR", "n": "BIGINT"})
    t = PartitionData(ds.fragments()).to_arrow()
    assert t.to_pylist() == [{"who": "alice", "n": 1}, {"who": "bob", "n": 2}, {"who": "carol", "n": 3}]
    node = DataSourceNode(Context(), ds, name="s3csv")
    assert node.output_schema().names == ["who", "n"]


def test_object_store_sink_checks_its_inputs_before_it_replaces_a_complete_folder(bucket, tmp_path):
    from mpipipe.steps.sink import WRITING, foreign_contents, sink_uri

    s3, name = bucket
    fs = s3.filesystem()
    out = f"s3://{name}/out"
    good = write(tmp_path / "good.parquet", 10)
    sink_uri(out, [("in", PartitionData([Fragment(good)]))], job_output(tmp_path))
    before = sorted(i.path for i in fs.get_file_info(FileSelector(f"{name}/out")))
    assert f"{name}/out/{MARKER}" in before and f"{name}/out/in-000000.parquet" in before
    bad = tmp_path / "bad.parquet"
    garbage(bad)
    with pytest.raises(DataError, match="bad.parquet"):
        sink_uri(out, [("in", PartitionData([Fragment(good), Fragment(str(bad))]))], str(tmp_path / "job-output-2"))
    assert sorted(i.path for i in fs.get_file_info(FileSelector(f"{name}/out"))) == before
    # a copy that failed half-way leaves its WRITING marker: the folder is still ours, and the next try replaces it
    with fs.open_output_stream(f"{name}/half/{WRITING}") as f:
        f.write(b"{}")
    with fs.open_output_stream(f"{name}/half/in-000000.parquet") as f:
        f.write(b"half")
    assert not foreign_contents(f"s3://{name}/half")
    sink_uri(f"s3://{name}/half", [("in", PartitionData([Fragment(good)]))], str(tmp_path / "job-output-3"))
    names = sorted(os.path.basename(i.path) for i in fs.get_file_info(FileSelector(f"{name}/half")))
    assert names == [MARKER, "in-000000.parquet"]
    assert pq.read_table(f"{name}/half/in-000000.parquet", filesystem=fs).num_rows == 10
