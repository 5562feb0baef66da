"""A shuffle's intermediate files: Arrow IPC by default where only the plan reads them, Parquet with
SP_SHUFFLE_FORMAT=parquet or where the user may read them; the same rows either way, row for row; a torn
IPC file is refused, naming it."""
from __future__ import annotations

import glob
import os
import random
import re
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, env_for_tests, python
from table_tools import assert_rows
from mpipipe.config import build_config
from mpipipe.errors import ConfigError
from mpipipe.logical import (Context, DataSinkNode, DataSourceNode, HashPartitionNode, LogicalPlan, ParquetDataSet,
                             PythonScriptNode, RootNode, SqlEngineNode)
from mpipipe.logical.intermediates import choose_intermediates
from mpipipe.steps.partio import BUCKET_COLUMN, DataError, PartitionData, bucket_dir
from mpipipe.steps.partition import bucket_with_function, bucket_with_sql

SCRIPT = os.path.join(REPO, "tests", "pipelines", "shuffle_files.py")
UNORDERED = ("df_direct.parquet", "plan_streamed.parquet")  # a bucket's rows as the shuffle left them


def _table(n: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "key": pa.array([rng.randrange(50) for _ in range(n)], pa.int64()),
        "val": pa.array([round(rng.uniform(0, 100), 3) for _ in range(n)], pa.float64()),
        "tag": pa.array([None if rng.random() < 0.1 else rng.choice("abcde") for _ in range(n)], pa.string()),
        "blob": pa.array([rng.randbytes(rng.randrange(0, 40)) for _ in range(n)], pa.binary()),
    })


@pytest.fixture()
def source(tmp_path):
    path = str(tmp_path / "in.parquet")
    pq.write_table(_table(5000), path, row_group_size=700)
    return path


def _bucket(tmp_path, source, fmt, how="sql", nbuckets=5, partition_column=None):
    task = types.SimpleNamespace(output_dir=str(tmp_path / f"{how}-{fmt}"))
    data = PartitionData.from_folders([os.path.dirname(source)])
    if how == "sql":
        bucket_with_sql(task, data, f"(hash(key) % {nbuckets})::BIGINT", nbuckets, partition_column, 1, None,
                        check=False, fmt=fmt)
    else:
        bucket_with_function(task, data, lambda t: [v % nbuckets for v in t.column("key").to_pylist()], nbuckets,
                             fmt)
    return task.output_dir


@pytest.mark.parametrize("how", ["sql", "function"])
def test_buckets_as_arrow_files_hold_the_parquet_buckets_rows_row_for_row(tmp_path, source, how):
    arrow = _bucket(tmp_path, source, "arrow", how)
    parquet = _bucket(tmp_path, source, "parquet", how)
    assert sorted(os.path.relpath(p, arrow) for p in glob.glob(os.path.join(arrow, "*", "*"))) == \
        [f"{BUCKET_COLUMN}={b}/data_0.arrow" for b in range(5)]
    assert not glob.glob(os.path.join(arrow, "**", "*.parquet"), recursive=True)
    total = 0
    for b in range(5):
        a = PartitionData.from_folders([bucket_dir(arrow, b)])
        p = PartitionData.from_folders([bucket_dir(parquet, b)])
        assert [f.format for f in a.fragments] == ["arrow"]
        assert a.schema() == p.schema()
        assert a.num_rows() == p.num_rows()
        assert_rows(a.to_arrow(), p.to_arrow(), ordered=True, what=f"bucket {b}")
        assert_rows(pa.Table.from_batches(list(a.batches(batch_size=100)), a.schema()), p.to_arrow(), ordered=True)
        assert_rows(a.to_arrow(["val", "id"]), p.to_arrow(["val", "id"]), ordered=True)
        total += a.num_rows()
    assert total == 5000


def test_a_partition_column_and_empty_buckets_come_out_alike(tmp_path, source):
    arrow = _bucket(tmp_path, source, "arrow", nbuckets=80, partition_column="part")
    parquet = _bucket(tmp_path, source, "parquet", nbuckets=80, partition_column="part")
    empty = 0
    for b in range(80):
        a = PartitionData.from_folders([bucket_dir(arrow, b)])
        p = PartitionData.from_folders([bucket_dir(parquet, b)])
        assert a.schema() == p.schema() and "part" in a.schema().names
        empty += a.num_rows() == 0
        assert_rows(a.to_arrow(), p.to_arrow(), ordered=True, what=f"bucket {b}")
    assert empty >= 30  # 50 keys into 80 buckets


def test_duckdb_reads_arrow_buckets_of_several_map_tasks_as_it_reads_parquet_ones(tmp_path, source):
    import duckdb

    from mpipipe.steps.sql import connect

    maps = {fmt: [_bucket(tmp_path / f"m{i}", source, fmt) for i in range(3)] for fmt in ("arrow", "parquet")}
    query = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t, max(blob) AS b FROM v GROUP BY key ORDER BY key"
    results = {}
    for fmt, outs in maps.items():
        con = connect(1, None, None)
        try:
            PartitionData.from_folders([bucket_dir(o, 2) for o in outs]).duckdb_source(con, "v")
            results[fmt] = con.sql(query).to_arrow_table()
        finally:
            con.close()
    assert results["arrow"].num_rows > 0
    assert_rows(results["arrow"], results["parquet"], ordered=True)
    assert duckdb  # the reader's engine


def test_duckdb_sees_the_types_a_parquet_bucket_gives(tmp_path):
    """Types Arrow has no plain form of (a UUID) travel as extension types, not as text."""
    import duckdb

    folder = tmp_path / "in"
    os.makedirs(folder)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i AS key, uuid() AS u, INTERVAL (i) DAY AS iv, i / 7 AS d FROM range(500) t(i)) "
                f"TO '{folder / 'u.parquet'}' (FORMAT parquet)")
    con.close()
    types_of = {}
    for fmt in ("arrow", "parquet"):
        out = _bucket(tmp_path, str(folder / "u.parquet"), fmt)
        con = duckdb.connect()
        PartitionData.from_folders([bucket_dir(out, b) for b in range(5)]).duckdb_source(con, "v")
        types_of[fmt] = con.sql("SELECT typeof(u), typeof(iv), typeof(d), count(*) FROM v GROUP BY ALL").fetchall()
        con.close()
    assert types_of["arrow"] == types_of["parquet"] == [("UUID", "INTERVAL", "DOUBLE", 500)]


def test_a_torn_arrow_file_is_refused_naming_it(tmp_path, source):
    out = _bucket(tmp_path, source, "arrow")
    path = os.path.join(bucket_dir(out, 1), "data_0.arrow")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # what a writer killed before its footer leaves
        f.truncate(size - 40)
    data = PartitionData.from_folders([bucket_dir(out, b) for b in range(5)])
    with pytest.raises(DataError, match="cannot read Arrow file .*data_0.arrow.*--fresh"):
        data.to_arrow()
    with pytest.raises(DataError, match="data_0.arrow"):
        PartitionData.from_folders([bucket_dir(out, 1)]).num_rows()


def test_an_unpublished_attempt_is_never_read(tmp_path, source):
    """A map task's files are written in its attempt's staging folder and renamed into place when it succeeds:
    a reader lists only the published folder, whatever a killed attempt left beside it."""
    out = _bucket(tmp_path, source, "arrow")
    staging = os.path.join(out, ".staging", "part-00000.a0.r1.123", f"{BUCKET_COLUMN}=1")
    os.makedirs(staging)
    with open(os.path.join(staging, "data_0.arrow"), "wb") as f:
        f.write(b"ARROW1\0\0 torn")
    with open(os.path.join(bucket_dir(out, 1), ".data_1.arrow.tmp"), "wb") as f:
        f.write(b"ARROW1\0\0 torn")
    data = PartitionData.from_folders([bucket_dir(out, 1)])
    assert [os.path.basename(f.path) for f in data.fragments] == ["data_0.arrow"]
    assert data.num_rows() == PartitionData.from_folders([bucket_dir(_bucket(tmp_path, source, "parquet"), 1)]) \
        .num_rows()


# --- which nodes write which form ---------------------------------------------------------------------

def _plan(tmp_path, **hash_options):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([str(tmp_path / "*.parquet")]))
    h = HashPartitionNode(ctx, (src,), 4, ["key"], **hash_options)
    return ctx, src, h


def test_a_shuffle_only_the_plan_reads_gets_the_jobs_format(tmp_path, source):
    ctx, _, h = _plan(tmp_path)
    plan = LogicalPlan(ctx, SqlEngineNode(ctx, (h,), "SELECT * FROM {0}", partial_aggregate=False))
    choose_intermediates(plan, "arrow")
    assert h.intermediate_format == "arrow"
    choose_intermediates(plan, "parquet")
    assert h.intermediate_format == "parquet"


def test_a_shuffle_the_user_may_read_stays_parquet(tmp_path, source):
    ctx, _, h = _plan(tmp_path)
    choose_intermediates(LogicalPlan(ctx, h), "arrow")  # the plan's result
    assert h.intermediate_format == "parquet"
    ctx, _, h = _plan(tmp_path)
    sql = SqlEngineNode(ctx, (h,), "SELECT * FROM {0}", partial_aggregate=False)
    choose_intermediates(LogicalPlan(ctx, RootNode(ctx, (h, sql))), "arrow")  # one of a RootNode's results
    assert h.intermediate_format == "parquet"
    ctx, _, h = _plan(tmp_path, output_name="parts")  # smallpond's get_output("parts") lists Parquet files
    choose_intermediates(LogicalPlan(ctx, SqlEngineNode(ctx, (h,), "SELECT * FROM {0}")), "arrow")
    assert h.intermediate_format == "parquet"
    ctx, _, h = _plan(tmp_path, output_path=str(tmp_path / "published"))
    choose_intermediates(LogicalPlan(ctx, SqlEngineNode(ctx, (h,), "SELECT * FROM {0}")), "arrow")
    assert h.intermediate_format == "parquet"


def test_a_shuffle_read_by_a_node_that_may_open_its_files_stays_parquet(tmp_path, source):
    ctx, _, h = _plan(tmp_path)
    script = PythonScriptNode(ctx, (h,), process_func=lambda rc, inputs, out: True)
    sql = SqlEngineNode(ctx, (h,), "SELECT * FROM {0}", partial_aggregate=False)
    choose_intermediates(LogicalPlan(ctx, RootNode(ctx, (script, sql))), "arrow")
    assert h.intermediate_format == "parquet"
    ctx, _, h = _plan(tmp_path)
    choose_intermediates(LogicalPlan(ctx, DataSinkNode(ctx, (h,), str(tmp_path / "m"), type="manifest")), "arrow")
    assert h.intermediate_format == "parquet"
    ctx, _, h = _plan(tmp_path)
    choose_intermediates(LogicalPlan(ctx, DataSinkNode(ctx, (h,), str(tmp_path / "c"), type="copy")), "arrow")
    assert h.intermediate_format == "arrow"


def test_the_shuffle_format_option_is_checked():
    assert build_config(env={}).shuffle_format == "arrow"
    assert build_config(env={"SP_SHUFFLE_FORMAT": "Parquet"}).shuffle_format == "parquet"
    assert build_config(env={}, init={"shuffle_format": "parquet"}).shuffle_format == "parquet"
    with pytest.raises(ConfigError, match="shuffle_format .*expected one of arrow, parquet, got 'ipc'"):
        build_config(env={"SP_SHUFFLE_FORMAT": "ipc"})


# --- real runs --------------------------------------------------------------------------------------------

def test_every_reader_of_a_shuffle_gets_the_same_rows_from_arrow_and_from_parquet_files(tmp_path):
    os.makedirs(tmp_path / "in")
    for i in range(3):
        pq.write_table(_table(1500, seed=i).set_column(0, "id", pa.array(range(i * 1500, (i + 1) * 1500))),
                       str(tmp_path / "in" / f"p{i}.parquet"), row_group_size=400)
    results = {}
    # "killed": every first attempt of half the tasks is killed (SIGKILL or a segfault) after its body wrote its
    # files and before they were published; the retries' output must be what a run without faults gives
    for fmt in ("arrow", "parquet", "killed"):
        out = str(tmp_path / f"out-{fmt}")
        for part in ("plan", "dataframe"):
            env = env_for_tests({"SP_PLATFORM": "local", "SP_NUM_EXECUTORS": "2", "SP_PROGRESS_INTERVAL": "0",
                                 "SP_DATA_ROOT": str(tmp_path / "jobs"), "SP_JOB_ID": f"shuffle-{part}-{fmt}",
                                 "SP_SHUFFLE_FORMAT": "parquet" if fmt == "parquet" else "arrow"})
            if fmt == "killed":
                env.update(SP_INJECT_FAULTS="rate=0.5,kinds=kill+segfault,seed=3", SP_MAX_RETRIES="2")
            done = python(SCRIPT, str(tmp_path / "in" / "*.parquet"), out, part, env=env, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            if fmt == "killed":
                assert int(re.search(r"(\d+) retried", done.stderr).group(1)) > 0, done.stderr[-3000:]
        job = str(tmp_path / "jobs")
        arrow_files = glob.glob(os.path.join(job, f"*-{fmt}", "outputs", "**", "*.arrow"), recursive=True)
        if fmt != "parquet":
            kinds = {os.path.relpath(p, job).split(os.sep)[2] for p in arrow_files}
            assert {"hash_partition", "user_partition", "column_partition"} <= kinds, kinds
        else:
            assert not arrow_files
        results[fmt] = {os.path.basename(p): pq.read_table(p) for p in glob.glob(os.path.join(out, "*.parquet"))}
        for p in glob.glob(os.path.join(out, "*", "*")):
            assert p.endswith((".parquet", "_MPIPIPE_SINK")), p
    for fmt in ("arrow", "killed"):
        assert sorted(results[fmt]) == sorted(results["parquet"]) and len(results[fmt]) == 10
        for name, table in sorted(results[fmt].items()):
            assert table.num_rows > 0, name
            # where a query orders the rows, row for row; a shuffle's own order within a bucket is DuckDB's (a
            # Parquet bucket written by several threads) or the input's (Arrow files), neither promised
            assert_rows(table, results["parquet"][name], ordered=name not in UNORDERED, what=f"{fmt}: {name}")
