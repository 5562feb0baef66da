"""The map side of a partitioning node over a one-partition source runs as several tasks.

Unit tests of the rule (mpipipe.logical.mapsplit) and of the plan it gives; then real runs (local platform and
`mpiexec -n 3`) of tests/pipelines/parallel_map.py and of its DataFrame form, whose task counts are read from
the plan, the outputs and `mpipipe status`, and whose results are compared with DuckDB reading the same
files in this process; the DuckDB threads a small step gets; and a job whose map task failed, resumed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from typing import Any, Dict, List

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python, run as run_cmd
from journal_tools import ok_counts
from mpipipe.data.fragment import Fragment
from mpipipe.errors import PlanError
from mpipipe.logical import (Context, CsvDataSet, DataSourceNode, HashPartitionNode, LogicalPlan, ParquetDataSet,
                             SqlEngineNode, UserDefinedPartitionNode)
from mpipipe.logical import mapsplit
from mpipipe.logical.datanode import bucket_folders, num_outputs
from mpipipe.steps.partio import PartitionData, bucket_dir
from table_tools import assert_rows
from test_data_nodes import Run as DataNodesRun

SCRIPT = os.path.join(REPO, "tests", "pipelines", "parallel_map.py")
DF_SCRIPT = os.path.join(REPO, "tests", "pipelines", "parallel_map_df.py")
MPIPIPE = os.path.join(BIN, "mpipipe")
FILE_ROWS = 600_000  # 4 files: 2.4M rows, two map tasks by the rule with units of UNIT_ROWS
UNIT_ROWS = 1_000_000  # the test runs' unit (the default, 8M rows, would need inputs too large for tests)
ONE_GROUP = 200_000  # one.parquet: 2.4M rows in 12 row groups
SMALL = {"s0.parquet": 700, "s1.parquet": 0, "s2.parquet": 900}
AGG = "SELECT key, count(*) AS n, sum(val) AS s, min(tag) AS t FROM {src} GROUP BY key ORDER BY key"


# --- inputs ----------------------------------------------------------------------------------------

def table(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    key = (ids * 7919) % 100_003
    return pa.table({"id": ids, "key": key, "val": (ids % 1000) / 8.0,
                     "tag": pc.binary_join_element_wise("t", pc.cast(pa.array(ids % 13), pa.string()), ""),
                     "part": ids % 4})


def make_inputs(root: str) -> None:
    os.makedirs(os.path.join(root, "files"))
    for i in range(4):
        pq.write_table(table(i * FILE_ROWS, FILE_ROWS), os.path.join(root, "files", f"f{i}.parquet"))
    pq.write_table(table(0, 4 * FILE_ROWS), os.path.join(root, "one.parquet"), row_group_size=ONE_GROUP)
    os.makedirs(os.path.join(root, "small"))
    start = 0
    for name, n in SMALL.items():
        pq.write_table(table(start, n), os.path.join(root, "small", name), row_group_size=128)
        start += n
    os.makedirs(os.path.join(root, "keyed"))
    for i, p in enumerate([2, 0, 2, 1]):  # files holding one partition each (p), partition 2 in two files
        pq.write_table(table(i * 50, 50).append_column("p", pa.array([p] * 50, pa.int64())),
                       os.path.join(root, "keyed", f"k{i}.parquet"))
    os.makedirs(os.path.join(root, "typed"))
    for i in range(3):
        t = table(i * 500, 500).select(["id", "key", "val"])
        with open(os.path.join(root, "typed", f"c{i}.csv"), "w") as f:
            f.writelines(f"{a},{b},{c}\n" for a, b, c in zip(*(t.column(k).to_pylist() for k in t.column_names)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("parallel_map_in"))
    make_inputs(root)
    return root


@pytest.fixture(scope="module")
def duck(inputs):
    con = duckdb.connect()
    for view, where in (("files", "files/*.parquet"), ("one", "one.parquet"), ("small", "small/*.parquet"),
                        ("keyed", "keyed/*.parquet")):
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{os.path.join(inputs, where)}')")
    con.execute(f"CREATE VIEW typed AS SELECT * FROM read_csv('{os.path.join(inputs, 'typed', '*.csv')}', "
                "header = false, columns = {'id': 'BIGINT', 'key': 'BIGINT', 'val': 'DOUBLE'})")
    yield con
    con.close()


def sql(con, query: str) -> pa.Table:
    return con.sql(query).to_arrow_table()


def read(folders: List[str], order: str = "") -> pa.Table:
    t = PartitionData.from_folders(folders).to_arrow()
    return t.sort_by(order) if order else t


# --- the rule, without processes -------------------------------------------------------------------

def test_rule_counts_rows_and_bytes():
    assert mapsplit.auto_tasks(7_999_999, 1 << 20) == 1
    assert mapsplit.auto_tasks(20_000_000, 1 << 20) == 2
    assert mapsplit.auto_tasks(None, 400 << 20) == 3  # text files: bytes only
    assert mapsplit.auto_tasks(10, 300 << 20) == 2  # wide rows: bytes decide


def test_the_rule_rounds_up_to_whole_waves_of_common_executor_counts():
    assert [mapsplit.whole_waves(k) for k in (1, 2, 3, 4, 5, 7, 8, 9, 33)] == [1, 2, 4, 4, 8, 8, 8, 16, 64]
    # 7 units of bytes (the sort benchmark's 1.07 GB): 8 tasks, so 2 or 4 executors finish together
    frags = [Fragment(f"/d/{i}.bin", "parquet") for i in range(8)]
    sizes = {f.path: 118 << 20 for f in frags}
    assert len(mapsplit.plan_slices(frags, {}, sizes, 8, 10_000)) == 8
    assert len(mapsplit.plan_slices(frags, {}, sizes, 8, 10_000, wanted=7)) == 7  # map_tasks= is taken as given


@pytest.fixture
def small_units(monkeypatch):
    """The rule with units of 1M rows, so these inputs (2.4M rows) are cut in two."""
    monkeypatch.setattr(mapsplit, "MAP_UNIT_ROWS", UNIT_ROWS)


@pytest.mark.parametrize("weights,k", [([1] * 10, 3), ([5, 1, 1, 1, 1, 1, 5], 3), ([0, 0, 9, 0], 2), ([3, 3], 2),
                                       (list(range(40)), 7)])
def test_cuts_are_contiguous_non_empty_and_even(weights, k):
    cuts = mapsplit._cuts(weights, k)
    assert cuts[0] == 0 and cuts[-1] == len(weights) and len(cuts) == k + 1
    assert all(a < b for a, b in zip(cuts, cuts[1:]))
    if weights == [1] * 10:
        assert [b - a for a, b in zip(cuts, cuts[1:])] in ([3, 3, 4], [3, 4, 3], [4, 3, 3])


def test_plan_cuts_files_and_row_groups(inputs, small_units):
    ctx = Context()
    files = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "files", "*.parquet")))
    one = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "one.parquet")))
    small = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "small", "*.parquet")))
    by_files = HashPartitionNode(ctx, files, 4, ["key"])
    assert by_files.npartitions == 2 and by_files._map_slices == [[(0, 2, None)], [(2, 4, None)]]
    by_groups = HashPartitionNode(ctx, one, 4, ["key"])
    assert by_groups.npartitions == 2 and by_groups._map_slices == [[(0, 1, (0, 6))], [(0, 1, (6, 12))]]
    assert HashPartitionNode(ctx, small, 4, ["key"]).npartitions == 1  # too little to cut
    assert HashPartitionNode(ctx, files, 4, ["key"], map_tasks=1).npartitions == 1  # the one task of before
    # at most one per unit: a row group (each of these files holds one)
    assert HashPartitionNode(ctx, files, 4, ["key"], map_tasks=100).npartitions == 4
    assert HashPartitionNode(ctx, one, 4, ["key"], map_tasks=100).npartitions == 12
    # a consumer still sees the bucket count, and reads bucket j of every map task
    assert num_outputs(by_files) == 4
    assert SqlEngineNode(ctx, by_files, "SELECT * FROM {0}").npartitions == 4
    assert bucket_folders(by_files, ["/t0", "/t1"], 3) == [bucket_dir("/t0", 3), bucket_dir("/t1", 3)]
    explained = LogicalPlan(ctx, [by_files, by_groups]).explain()
    assert "2 tasks writing 4 partitions" in explained


def test_nested_and_dimension_keep_their_meaning(inputs):
    ctx = Context()
    small = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "small", "*.parquet")))
    nested = HashPartitionNode(ctx, small, 3, ["key"], nested=True, dimension="kd", map_tasks=3)
    assert nested.npartitions == 3 and num_outputs(nested) == 3
    from mpipipe.logical.datanode import partition_dims

    assert partition_dims(nested) == [("kd", 3)]
    # partition j of a nested partitioning of one input partition: bucket j of each of its map tasks
    assert bucket_folders(nested, ["/a", "/b", "/c"], 2) == [bucket_dir(p, 2) for p in ("/a", "/b", "/c")]


def test_fingerprint_says_how_the_map_side_is_cut(inputs):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "one.parquet")))
    a = HashPartitionNode(ctx, src, 4, ["key"], map_tasks=3, name="a").config_fingerprint()
    b = HashPartitionNode(ctx, src, 4, ["key"], map_tasks=4, name="a2").config_fingerprint()
    assert "|map " in a and a.split("|map ")[1] != b.split("|map ")[1]
    one = HashPartitionNode(ctx, src, 4, ["key"], map_tasks=1, name="one").config_fingerprint()
    assert "|map " not in one


def test_text_files_split_only_with_their_types(inputs, tmp_path):
    ctx = Context()
    typed = DataSourceNode(ctx, CsvDataSet(os.path.join(inputs, "typed", "*.csv"),
                                           schema={"id": "BIGINT", "key": "BIGINT", "val": "DOUBLE"}))
    assert HashPartitionNode(ctx, typed, 2, ["key"], map_tasks=3).npartitions == 3
    untyped = DataSourceNode(ctx, CsvDataSet(os.path.join(inputs, "typed", "*.csv"), header=False))
    assert HashPartitionNode(ctx, untyped, 2, ["column0"]).npartitions == 1
    with pytest.raises(PlanError, match=r"'hash_csv'.*schema="):
        HashPartitionNode(ctx, untyped, 2, ["column0"], map_tasks=3, name="hash_csv")
    with pytest.raises(PlanError, match="map_tasks must be a whole number"):
        HashPartitionNode(ctx, typed, 2, ["key"], map_tasks=0)


def test_nodes_that_need_the_whole_input_keep_one_task(inputs):
    ctx = Context()
    files = DataSourceNode(ctx, ParquetDataSet(os.path.join(inputs, "files", "*.parquet")))

    class ByFile(UserDefinedPartitionNode):
        def partition(self, runtime_ctx, dataset):
            return [dataset] * self.npartitions

    assert ByFile(ctx, files, 2).npartitions == 1  # partition() sees the whole dataset
    # an SQL step over a source keeps smallpond's one partition: its count is the user's to see
    assert SqlEngineNode(ctx, files, "SELECT * FROM {0}").npartitions == 1
    # files whose folder names say their partition are grouped without reading them: nothing to cut
    from mpipipe.logical import LoadPartitionedDataSetNode

    hive = LoadPartitionedDataSetNode(ctx, files, 2, data_partition_column="p", hive_partitioning=True, map_tasks=4)
    assert hive.npartitions == 1
    assert LoadPartitionedDataSetNode(ctx, files, 2, data_partition_column="p", map_tasks=4).npartitions == 4


def test_duckdb_reads_row_group_and_row_range_slices_itself(inputs):
    """A map task's slice of a file is read by DuckDB (row numbers -> row groups), in fragment order, with the
    rows the Arrow reader gives."""
    from mpipipe.data.fragment import Fragment

    one, f0 = os.path.join(inputs, "one.parquet"), os.path.join(inputs, "files", "f0.parquet")
    frags = [Fragment(one, "parquet", (7, 8, 10)), Fragment(f0), Fragment(one, "parquet", None, (5, 300_123)),
             Fragment(one, "parquet", ())]
    con = duckdb.connect()
    try:
        data = PartitionData(frags)
        data.duckdb_source(con, "v")
        view = con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'v'").fetchall()  # not an Arrow table
        assert view and "read_parquet" in view[0][0] and "file_row_number" in view[0][0], view
        got = con.sql("SELECT * FROM v").to_arrow_table()
    finally:
        con.close()
    assert_rows(got, PartitionData(frags).to_arrow(), ordered=True, what="slices")
    assert got.num_rows == 3 * ONE_GROUP + FILE_ROWS + 300_118


# --- real runs -------------------------------------------------------------------------------------

class Run(DataNodesRun):
    """The two runs of tests/pipelines/parallel_map.py, and the map task counts its plan had."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tasks: Dict[str, int] = self.report["tasks"]

    def all(self, node: str, order: str = "") -> pa.Table:  # type: ignore[override]
        return read(self.nodes[node], order)


def invoke(platform: str, *args: str, timeout: float = 240) -> Any:
    args = (*args, "--map-unit-rows", str(UNIT_ROWS))
    if platform == "local":
        return python(SCRIPT, *args, "--num-executors", "2", timeout=timeout)
    return mpiexec(3, SCRIPT, *args, timeout=timeout)


def needs_mpi(platform: str) -> None:
    if platform != "local" and not os.path.exists(os.path.join(BIN, "mpiexec")):
        pytest.skip("the virtualenv has no mpiexec (pip install 'mpipipe[mpi]')")


@pytest.fixture(scope="module", params=["local", "mpi"])
def run(request, inputs, tmp_path_factory) -> Run:
    needs_mpi(request.param)
    base = tmp_path_factory.mktemp(f"parallel_map_{request.param}")
    out_dir, data_root = str(base / "out"), str(base / "jobs")
    args = ["--input-dir", inputs, "--out-dir", out_dir, "--data-root", data_root]
    reports, done = [], []
    for _ in range(2):
        d = invoke(request.param, *args)
        assert d.returncode == 0, \
            f"{request.param} run failed (exit {d.returncode})\nstdout:\n{d.stdout}\nstderr:\n{d.stderr}"
        with open(os.path.join(out_dir, "outputs.json")) as f:
            reports.append(json.load(f))
        done.append(d)
    return Run(request.param, out_dir, data_root, done[0], done[1], reports[0], reports[1])


MAP_TASKS = {"hash_files": 2, "hash_one": 2, "hash_small3": 3, "hash_small1": 1, "col_small": 3, "user_small": 2,
             "rand_small": 3, "nested_small": 3, "hash_csv": 2, "load_keyed": 2}


def test_map_task_counts_in_the_plan_the_outputs_and_status(run):
    for node, n in MAP_TASKS.items():
        assert run.tasks[node] == n, f"{node}: {run.tasks[node]} map tasks, expected {n}"
        assert len(run.nodes[node]) == n, node
    status = run_cmd([MPIPIPE, "status", run.report["job_dir"]], check=True, timeout=60).stdout
    for node, n in MAP_TASKS.items():
        assert re.search(rf"\b{node}: {n}/{n} done\b", status), f"{node} {n}/{n} not in:\n{status}"
    # consumers keep the bucket count
    assert run.tasks["agg_files"] == 4 and run.tasks["agg_one"] == 4 and run.tasks["agg_nested"] == 3


def test_group_by_over_cut_sources_equals_duckdb_row_for_row(run, duck):
    for node, view in (("agg_files", "files"), ("agg_one", "one")):
        assert_rows(run.all(node, "key"), sql(duck, AGG.format(src=view)), ordered=True, what=node)
    want = sql(duck, AGG.format(src="small"))
    assert_rows(run.all("agg_small3", "key"), want, ordered=True, what="agg_small3")
    assert_rows(run.all("agg_small1", "key"), want, ordered=True, what="agg_small1")
    assert_rows(run.all("agg_nested", "key"),
                sql(duck, "SELECT key, count(*) AS n FROM small GROUP BY key ORDER BY key"),
                ordered=True, what="agg_nested")
    assert_rows(run.all("agg_csv", "key"),
                sql(duck, "SELECT key, count(*) AS n, sum(val) AS s FROM typed GROUP BY key ORDER BY key"),
                ordered=True, what="agg_csv")


def test_buckets_hold_the_rows_one_task_put_there(run, duck):
    for b in range(3):
        cut, whole = run.bucket("hash_small3", b), run.bucket("hash_small1", b)
        assert_rows(cut, whole, what=f"hash_small bucket {b}")
        assert_rows(cut, sql(duck, f"SELECT *, (hash(key) % 3)::BIGINT AS pcol FROM small WHERE hash(key) % 3 = {b}"),
                    what=f"hash_small3 bucket {b} against DuckDB")
        assert_rows(run.bucket("user_small", b), sql(duck, f"SELECT * FROM small WHERE id % 3 = {b}"),
                    what=f"user_small bucket {b}")
    for b in range(4):
        assert_rows(run.bucket("col_small", b), sql(duck, f"SELECT * FROM small WHERE part = {b}"),
                    what=f"col_small bucket {b}")
    for b in range(3):  # files grouped by the partition they hold, from both map tasks
        assert_rows(run.bucket("load_keyed", b), sql(duck, f"SELECT * FROM keyed WHERE p = {b}"),
                    what=f"load_keyed bucket {b}")
    shuffled = pa.concat_tables([run.bucket("rand_small", b) for b in range(3)])
    assert_rows(shuffled, sql(duck, "SELECT * FROM small"), what="rand_small")


def _size(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+) ?([KMGT]?i?B)", text.strip()).groups()
    return float(number) * {"B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40}[unit]


def test_a_step_of_fewer_tasks_than_executors_gets_more_threads(run):
    with open(os.path.join(run.report["job_dir"], "job.json")) as f:
        hosts = json.load(f)["hosts"]
    first = hosts["1"]
    sharers = sum(1 for d in hosts.values() if d["host_id"] == first["host_id"] and d["pools"] == first["pools"])
    assert sharers == 2  # both executors on this host, sharing its cores
    one = run.all("settings_one").to_pylist()
    three = run.all("settings_three").to_pylist()
    assert len(one) == 1 and len(three) == 3
    assert one[0]["threads"] == max(1, first["cores"])  # one task: the host's cores
    assert {r["threads"] for r in three} == {max(1, first["cores"] // 2)}  # three tasks: a share each
    assert _size(one[0]["mem"]) > 1.5 * _size(three[0]["mem"])


def test_second_run_reuses_every_map_task(run):
    total = run.report["stats"]["ran"]
    assert f"{total} tasks ran" in run.first.stderr
    assert "0 tasks ran" in run.second.stderr, run.second.stderr
    assert f"{total} reused from the journal" in run.second.stderr, run.second.stderr
    assert run.second_report["nodes"] == run.nodes
    counts = ok_counts(run.data_root)
    assert len(counts) == total and set(counts.values()) == {1}, "a task ran twice"


# --- resume after a map task failed ----------------------------------------------------------------

def _pipeline_module() -> Any:
    spec = importlib.util.spec_from_file_location("parallel_map_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("platform", ["local", "mpi"])
def test_a_job_whose_map_task_failed_resumes_with_the_others_from_the_journal(platform, inputs, duck, tmp_path):
    """Map task 2 of 3 fails for good (an injected fault, chosen by seed); the next run of the same job runs it
    and what depends on it, and takes the map tasks that had finished from the journal."""
    needs_mpi(platform)
    from mpipipe.execution import faults
    from mpipipe.execution.journal import task_key

    ctx = Context()
    infos = {i.name: i for i in LogicalPlan(ctx, _pipeline_module().build_resume(ctx, inputs)).infos}
    # the group-by may read a twin of the hash node that aggregates first (mpipipe.logical.partial)
    hashed = next(i for name, i in infos.items() if name.startswith("hash_resume"))
    keys = [task_key(infos["src_small"].fingerprint, 0)] + [task_key(hashed.fingerprint, p) for p in range(3)]
    seed = next(s for s in range(10_000)
                if [faults.parse(f"rate=0.5,kinds=exception,seed={s}").choose(k, 0) is not None for k in keys]
                == [False, False, False, True])
    out_dir, data_root = str(tmp_path / "out"), str(tmp_path / "jobs")
    args = ["--input-dir", inputs, "--out-dir", out_dir, "--data-root", data_root, "--plan", "resume",
            "--job-id", "resume"]
    failed = invoke(platform, *args, "--inject-faults", f"rate=0.5,kinds=exception,seed={seed}", "--max-retries", "0")
    assert failed.returncode != 0, failed.stderr
    assert f"{hashed.name}[2]" in failed.stderr, failed.stderr
    first = ok_counts(data_root)
    assert first[keys[0]] == 1 and first[keys[3]] == 0, first
    finished = [k for k in keys[1:3] if first[k] == 1]
    assert finished, "no map task finished before the job stopped"
    done = invoke(platform, *args)
    assert done.returncode == 0, done.stderr
    counts = ok_counts(data_root)
    assert all(counts[k] == 1 for k in keys), counts  # none ran twice; map task 2 ran now
    with open(os.path.join(out_dir, "outputs.json")) as f:
        report = json.load(f)
    assert report["stats"]["ran"] == (3 - len(finished)) + 3  # the map tasks left, and the three group-by tasks
    got = read(report["nodes"]["agg_resume"], "key")
    assert_rows(got, sql(duck, AGG.format(src="small")), ordered=True, what="agg_resume")


# --- the DataFrame form ----------------------------------------------------------------------------

@pytest.mark.parametrize("platform", ["local", "mpiexec"])
def test_dataframe_repartition_cuts_the_map_side(platform, inputs, duck, tmp_path):
    needs_mpi(platform)
    out, data_root = str(tmp_path / "out"), str(tmp_path / "jobs")
    env = env_for_tests({"SP_DATA_ROOT": data_root, "SP_JOB_ID": "df"})
    d = (mpiexec(3, DF_SCRIPT, inputs, out, str(UNIT_ROWS), env=env, timeout=240) if platform == "mpiexec"
         else python(DF_SCRIPT, inputs, out, str(UNIT_ROWS), env=env, timeout=240))
    assert d.returncode == 0, f"exit {d.returncode}\nstdout:\n{d.stdout}\nstderr:\n{d.stderr}"
    with open(os.path.join(out, "results.json")) as f:
        tasks = json.load(f)["tasks"]
    assert tasks["hashed"] == 2 and tasks["by_col"] == 3 and tasks["shuffled"] == 2
    assert tasks["partitions"] == {"agg_files": 4, "by_col": 4, "shuffled": 3, "agg_csv": 2}

    def result(name: str, order: str = "") -> pa.Table:
        t = pq.read_table(os.path.join(out, f"{name}.parquet"))
        return t.sort_by(order) if order else t

    assert_rows(result("agg_files", "key"), sql(duck, AGG.format(src="files")), ordered=True, what="agg_files")
    assert_rows(result("by_col", "part"),
                sql(duck, "SELECT part, count(*) AS n, sum(id) AS s FROM small GROUP BY part ORDER BY part"),
                ordered=True, what="by_col")
    shuffled = result("shuffled")
    assert sum(shuffled.column("n").to_pylist()) == 4 * FILE_ROWS
    assert sum(shuffled.column("s").to_pylist()) == sql(duck, "SELECT sum(id) AS s FROM one").column(0)[0].as_py()
    assert_rows(result("agg_csv", "key"),
                sql(duck, "SELECT key, count(*) AS n, sum(val) AS s FROM typed GROUP BY key ORDER BY key"),
                ordered=True, what="agg_csv")
    status = run_cmd([MPIPIPE, "status", os.path.join(data_root, "df")], check=True, timeout=60).stdout
    assert re.search(r"\bhash_partition(\.partial)?: 2/2 done\b", status), status
