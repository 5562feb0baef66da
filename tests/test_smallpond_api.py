"""smallpond programs run unchanged: its module paths, datasets, node signatures, DataFrame and Session, and a
Platform that overrides only smallpond's start_job; plans run locally and under mpiexec -n 3."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections import OrderedDict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, env_for_tests, mpiexec, python, wait_for

PIPELINES = os.path.join(REPO, "tests", "pipelines")
PLAN = os.path.join(PIPELINES, "smallpond_plan.py")
FRAMES = os.path.join(PIPELINES, "smallpond_frames.py")
NICENESS = os.path.join(PIPELINES, "niceness.py")


def env(**extra):
    return env_for_tests({"PYTHONPATH": os.pathsep.join([REPO, PIPELINES]), **extra})


def result_of(done):
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.loads(lines[0][len("RESULT "):])


@pytest.fixture
def urls(tmp_path):
    """Three Parquet files of 20 urls each (row groups of 6), on 4 hosts."""
    paths = []
    for i in range(3):
        path = tmp_path / f"urls{i}.parquet"
        pq.write_table(pa.table({"url": [f"http://h{j % 4}.com/p{i}_{j}" for j in range(20)]}), path,
                       row_group_size=6)
        paths.append(str(path))
    return paths


# --- 1. module paths: each a real module --------------------------------------------------------------------

SMALLPOND_NAMES = [
    ("mpipipe.execution.driver", "Driver"), ("mpipipe.execution.manager", "JobManager"),
    ("mpipipe.execution.task", "RuntimeContext"), ("mpipipe.execution.task", "JobId"),
    ("mpipipe.execution.task", "PythonScriptTask"), ("mpipipe.execution.task", "StreamOutput"),
    ("mpipipe.execution.task", "PartitionInfo"), ("mpipipe.execution.scheduler", "Scheduler"),
    ("mpipipe.execution.executor", "Executor"), ("mpipipe.logical.node", "SqlEngineNode"),
    ("mpipipe.logical.node", "LogicalPlan"), ("mpipipe.logical.node", "ArrowBatchNode"),
    ("mpipipe.logical.node", "PandasBatchNode"), ("mpipipe.logical.node", "RootNode"),
    ("mpipipe.logical.dataset", "ParquetDataSet"), ("mpipipe.logical.dataset", "SqlQueryDataSet"),
    ("mpipipe.logical.planner", "Planner"), ("mpipipe.logical.udf", "UDFType"), ("mpipipe.platform", "Platform"),
    ("mpipipe.platform", "MPI"), ("mpipipe.io.arrow", "load_from_parquet_files"), ("mpipipe.dataframe", "Session"),
    ("mpipipe.dataframe", "DataFrame"), ("mpipipe.session", "Session"),
]


@pytest.mark.parametrize("module,name", SMALLPOND_NAMES)
def test_smallpond_module_paths_are_real_modules(module, name):
    mod = importlib.import_module(module)
    assert mod.__file__ and mod.__file__.endswith(".py")
    assert hasattr(mod, name)


def test_the_import_graph_stays_one_way():
    done = subprocess.run([sys.executable, "/work/shared/tools/import_cycles.py", "mpipipe"], cwd=REPO,
                          capture_output=True, text=True, timeout=60) \
        if os.path.exists("/work/shared/tools/import_cycles.py") else None
    if done is None:
        pytest.skip("the import-cycle tool is not on this machine")
    assert done.stdout.strip().splitlines()[-1].startswith("0 cycle(s)"), done.stdout


def test_mpi_is_the_mpi_platform():
    from mpipipe.platform import MPI
    from mpipipe.platform.mpi import MpiPlatform

    assert MPI is MpiPlatform


# --- 2. datasets --------------------------------------------------------------------------------------------

def test_parquet_dataset_surface(urls, tmp_path):
    from mpipipe.logical.dataset import ParquetDataSet

    ds = ParquetDataSet([str(tmp_path / "urls*.parquet")])
    assert ds.num_files == 3 and ds.num_rows == 60
    assert ds.resolved_paths == sorted(urls)
    assert ds.to_arrow_table().num_rows == 60
    assert all(b.num_rows <= 8 for b in ds.to_batch_reader(batch_size=8))
    assert sum(b.num_rows for b in ds.to_batch_reader(batch_size=8)) == 60
    by_files = ParquetDataSet(urls).partition_by_files(2)  # (once rows are counted, smallpond splits by rows)
    assert [p.num_files for p in by_files] == [2, 1] and sum(p.num_rows for p in by_files) == 60
    by_rows = ds.partition_by_rows(7)
    assert sorted(p.num_rows for p in by_rows) == [8, 8, 8, 9, 9, 9, 9]
    assert pa.concat_tables(p.to_arrow_table() for p in by_rows).sort_by("url").equals(
        ds.to_arrow_table().sort_by("url"))
    assert len(ds.partition_by_size(max(1, ds.estimated_data_size // 3))) >= 3
    import duckdb

    assert duckdb.sql(f"select count(*) from {by_rows[3].sql_query_fragment()}").fetchall()[0][0] == 9
    # smallpond's resolution: a plain path is taken as given, without looking at it
    assert ParquetDataSet(["nowhere/a.parquet"] * 3).num_files == 3


def test_csv_schema_means_the_file_has_no_header(tmp_path):
    from mpipipe.logical.dataset import CsvDataSet

    (tmp_path / "a.tsv").write_text("x/1\tYQ==\ny/2\tYg==\n")
    ds = CsvDataSet([str(tmp_path / "*.tsv")], schema=OrderedDict([("urlstr", "varchar"), ("valstr", "varchar")]),
                    delim=r"\t")
    table = ds.to_arrow_table()
    assert table.column_names == ["urlstr", "valstr"] and table.num_rows == 2  # the first line is data
    assert ds.num_rows == 2


def test_in_memory_and_query_datasets():
    import pandas as pd

    from mpipipe.logical.dataset import ArrowTableDataSet, PandasDataSet, SqlQueryDataSet

    assert SqlQueryDataSet("select range as i from range(5)").num_rows == 5
    assert ArrowTableDataSet(pa.table({"a": [1, 2]})).to_arrow_table().num_rows == 2
    df = pd.DataFrame({"a": [1, 2, 3]})
    assert PandasDataSet(df).to_pandas() is df and PandasDataSet(df).num_rows == 3


def test_io_arrow_helpers(urls, tmp_path):
    from mpipipe.io.arrow import (RowRange, build_batch_reader_from_files, cast_columns_to_large_string,
                                  dump_to_parquet_files, load_from_parquet_files)

    table = load_from_parquet_files(urls)
    assert table.num_rows == 60
    rr = RowRange(urls[0], data_size=1, file_num_rows=20, begin=5, end=12)
    assert load_from_parquet_files([rr]).column("url").to_pylist() == [f"http://h{j % 4}.com/p0_{j}"
                                                                        for j in range(5, 12)]
    assert dump_to_parquet_files(cast_columns_to_large_string(table), str(tmp_path / "out"))
    mixed = urls + [str(p) for p in (tmp_path / "out").glob("*.parquet")]
    assert sum(b.num_rows for b in build_batch_reader_from_files(mixed, batch_size=11)) == 120
    with pytest.raises(AssertionError):
        load_from_parquet_files(urls, ["no_such_column"])


# --- 3. node signatures -------------------------------------------------------------------------------------

def test_smallpond_keywords_and_positional_order(urls, tmp_path):
    from mpipipe.logical.dataset import ParquetDataSet
    from mpipipe.logical.node import (ArrowComputeNode, Context, DataSetPartitionNode, DataSinkNode,
                                      DataSourceNode, HashPartitionNode, LogicalPlan, ProjectionNode, SqlEngineNode)

    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(urls))
    parts = DataSetPartitionNode(ctx, (src,), 3, "by_rows", False, partition_by_rows=True, random_shuffle=True,
                                 cpu_limit=1, memory_limit=1 << 30)
    assert parts.dimension == "by_rows" and parts.partition_by == "rows"
    proj = ProjectionNode(ctx, parts, ["url"], ["filename", "file_row_number"])
    assert proj.generated_columns == ["filename", "file_row_number"]
    hashed = HashPartitionNode(ctx, (proj,), 2, ["url"], "bucket", engine_type="arrow", output_name="hashed",
                               parquet_row_group_size=1000, cpu_limit=2, memory_limit=1 << 30)
    assert hashed.name == "hashed" and hashed.partition_column == "bucket" and hashed.resources is None
    sql = SqlEngineNode(ctx, (hashed,), "select * from {0}", materialize_in_memory=True, per_thread_output=False,
                        output_name="sql_out", cpu_limit=1, gpu_limit=0, memory_limit=1 << 30)
    arrow = ArrowComputeNode(ctx, (parts,), process_func=lambda rc, ts: ts[0], use_duckdb_reader=True,
                             output_path=str(tmp_path / "published"))
    sink = DataSinkNode(ctx, (sql,), str(tmp_path / "sink"), manifest_only=True)
    assert sink.type == "manifest"
    LogicalPlan(ctx, [sink, arrow])
    from mpipipe.errors import PlanError

    with pytest.raises(PlanError, match="unknown keyword argument"):
        SqlEngineNode(ctx, (parts,), "select 1", no_such_option=True)


def test_plan_errors_come_where_smallpond_raises_them(urls):
    from mpipipe.errors import PlanError
    from mpipipe.logical.dataset import ParquetDataSet
    from mpipipe.logical.node import (Context, DataSourceNode, EvenlyDistributedPartitionNode, LogicalPlan,
                                      SqlEngineNode)
    from mpipipe.logical.planner import Planner

    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(urls))
    bad = SqlEngineNode(ctx, (src,), "select a,, from {0}")  # building the node does not raise
    with pytest.raises(PlanError, match=r"select a,, from \{0\}"):
        LogicalPlan(ctx, bad)
    a = EvenlyDistributedPartitionNode(ctx, (src,), npartitions=3, dimension="A")
    b = EvenlyDistributedPartitionNode(ctx, (src,), npartitions=3, dimension="B")
    joined = SqlEngineNode(ctx, (a, b), "select * from {0}")
    with pytest.raises(AssertionError):
        Planner().create_exec_plan(LogicalPlan(ctx, joined))
    c = EvenlyDistributedPartitionNode(ctx, (src,), npartitions=6, dimension="A")
    mismatched = LogicalPlan(ctx, SqlEngineNode(ctx, (a, c), "select * from {0}"))  # neither of these raises
    assert "partition(s)" in str(mismatched)  # and printing the plan does not either
    with pytest.raises(AssertionError, match="different partition counts"):
        Planner().create_exec_plan(mismatched)


def test_runtime_context_like_smallpond(tmp_path):
    from datetime import datetime

    from mpipipe.execution.task import JobId, RuntimeContext

    rc = RuntimeContext(JobId.new(), datetime.now(), str(tmp_path), console_log_level="WARNING",
                        secs_executor_probe_interval=0.5)
    rc.initialize("setup")
    assert os.path.isdir(rc.output_root) and rc.output_root.startswith(str(tmp_path))
    assert rc.secs_executor_probe_interval == 0.5 and rc.task is None


# --- 4 and 5: plans, DataFrames and a smallpond-style Platform, locally and under mpiexec -n 3 ---------------

def check_plan_result(out):
    assert out["successful"]
    assert sum(r["cnt"] for r in out["counts"]) == 60
    assert {r["host"] for r in out["counts"]} == {"h0.com", "h1.com", "h2.com", "h3.com"}
    assert len(out["samples"]) == 6 and all(r["cpu_limit"] == 1 for r in out["samples"])
    assert sorted(r["partition"] for r in out["samples"]) == [0, 0, 1, 1, 2, 2]
    assert len(out["streamed"]) == 60 and len(out["framed"]) == 60 and len(out["batched"]) == 120
    assert sorted(r["file_row_number"] for r in out["by_host"]) == sorted(list(range(20)) * 3)
    assert out["count_txt"] == ["1 20 1"] * 3
    assert out["manifest"] >= 1


@pytest.mark.timeout(300)
def test_smallpond_plan_runs_locally(urls, tmp_path):
    done = python(PLAN, "-i", *urls, "--sink", str(tmp_path / "sink"), "--data-root", str(tmp_path / "jobs"),
                  "--num-executors", "2", env=env(), timeout=240)
    check_plan_result(result_of(done))


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_smallpond_plan_runs_under_mpiexec(urls, tmp_path):
    done = mpiexec(3, PLAN, "-i", *urls, "--sink", str(tmp_path / "sink"), "--data-root", str(tmp_path / "jobs"),
                   env=env(), timeout=240)
    check_plan_result(result_of(done))


def check_frames_result(out):
    assert out["by_expression"] == [{"lo": i, "hi": i, "n": 10} for i in range(10)]
    assert out["batch_rows"] == [7] * 8 + [4]  # 60 rows in files of 20 (row groups of 6): batches cross them
    assert "select a,, from {0}" in out["bad_query"]
    assert "partition key 4 is out of range 0-3" in out["out_of_range"]
    assert os.path.isdir(out["output_root"])
    assert out["after_errors"] == 3 and out["after_shutdown"] == 2


@pytest.mark.timeout(300)
def test_smallpond_dataframe_locally(urls, tmp_path):
    done = python(FRAMES, os.path.join(os.path.dirname(urls[0]), "urls*.parquet"), "--after-shutdown", env=env(
        SP_DATA_ROOT=str(tmp_path / "jobs"), SP_NUM_EXECUTORS="2"), timeout=240)
    check_frames_result(result_of(done))


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_smallpond_dataframe_under_mpiexec(urls, tmp_path):
    done = mpiexec(3, FRAMES, os.path.join(os.path.dirname(urls[0]), "urls*.parquet"),
                   env=env(SP_DATA_ROOT=str(tmp_path / "jobs")), timeout=240)
    out = result_of(done)
    assert out["by_expression"] == [{"lo": i, "hi": i, "n": 10} for i in range(10)]
    assert out["batch_rows"] == [7] * 8 + [4]
    assert "select a,, from {0}" in out["bad_query"] and "out of range 0-3" in out["out_of_range"]
    assert out["after_errors"] == 3  # the MPI world stays open after failed runs; shutdown() ends it


def test_handshake_line_leaves_what_follows_for_the_transport():
    """The cause of executors that never answered rank 0's hello: reading the rank line took the first bytes
    of the hello that followed it on the connection."""
    import socket

    from mpipipe.platform.base import _read_line

    a, b = socket.socketpair()
    try:
        a.sendall(b"2 3\nHELLO-FRAME")
        assert _read_line(b) == b"2 3\n"
        assert b.recv(100) == b"HELLO-FRAME"
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_platform_with_only_smallpond_start_job_runs_the_job(how, tmp_path):
    record = tmp_path / "start_job.json"
    extra = {"RECORD_START_JOB_TO": str(record)}
    args = ["--data-root", str(tmp_path / "jobs"), "--num-executors", "2"]
    if how == "flag":
        args += ["--platform", "sp_platforms.popen"]
    else:
        extra["SP_PLATFORM"] = "sp_platforms.popen"
        args += ["--init-platform", "local"]  # init() runs too; SP_PLATFORM wins over it
    done = python(NICENESS, *args, env=env(**extra), timeout=240)
    assert done.returncode == 0, done.stderr
    assert "platform=PopenPlatform" in done.stdout and "niceness=" in done.stdout
    call = json.loads(record.read_text())
    assert call["num_nodes"] == 2 and call["entrypoint"].endswith(os.path.join("execution", "driver.py"))
    assert call["args"][0] == "--connect" and "MPIPIPE_JOB_TOKEN" in call["envs"]
    def gone(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" in f.read().lower()
        except OSError:
            return True

    # the executors it started leave with the job (on a busy machine, a moment after it)
    wait_for(lambda: all(gone(pid) for pid in call["pids"]), 30, "the executors start_job started to exit")


@pytest.mark.timeout(120)
def test_platform_whose_start_job_starts_nothing_is_a_one_line_error(tmp_path):
    done = python(NICENESS, "--data-root", str(tmp_path / "jobs"), "--num-executors", "1", "--platform",
                  "sp_platforms.silent", env=env(SP_HELLO_TIMEOUT="3"), timeout=100)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("mpipipe: error:")]
    assert len(lines) == 1 and "0 of 1 executor(s) connected" in lines[0] and "start_job must run" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_platform_without_hooks_names_the_hook_to_implement(tmp_path):
    done = python(NICENESS, "--data-root", str(tmp_path / "jobs"), "--platform", "sp_platforms.nohooks",
                  env=env(), timeout=100)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("mpipipe: error:")]
    assert "implement start_job(self, num_nodes, entrypoint, args, envs, extra_opts)" in line


EXAMPLE = os.path.join(REPO, "examples", "smallpond_urls.py")


@pytest.mark.timeout(300)
def test_smallpond_style_example_locally(tmp_path):
    done = python(EXAMPLE, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2", env=env(), timeout=240)
    assert done.returncode == 0, done.stderr
    assert "17 hosts, 1000 urls" in done.stdout


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_smallpond_style_example_under_mpiexec(tmp_path):
    done = mpiexec(3, EXAMPLE, "--data-root", str(tmp_path / "jobs"), "-n", "3", env=env(), timeout=240)
    assert done.returncode == 0, done.stderr
    assert "17 hosts, 1000 urls" in done.stdout


MANAGER = os.path.join(PIPELINES, "smallpond_manager.py")


@pytest.mark.timeout(300)
def test_job_manager_runs_plans_and_returns_execution_plans(urls, tmp_path):
    done = python(MANAGER, os.path.join(os.path.dirname(urls[0]), "urls*.parquet"), str(tmp_path / "jobs"),
                  env=env(), timeout=240)
    out = result_of(done)
    assert out["first"] and out["second"] and out["third"] is False  # a failed job is unsuccessful, not raised
    assert sum(out["final_groups"]) == 60 and out["final_groups"] == out["parts_groups"]
    assert [r["n"] for r in out["counts"]] == out["parts_groups"]
    assert [(r["lo"], r["hi"]) for r in out["counts"]] == [(b, b) for b in range(4)]


NESTED = os.path.join(PIPELINES, "smallpond_nested.py")


def check_nested(out):
    assert out["partitions"] == [6, 2, 6]  # host x url cells, hosts, and the cells again for the join
    assert out["per_host"] == [[f"h{i}.com", 15] for i in range(4)]
    by_host = {}
    for host, cnt in out["cells"]:
        by_host[host] = by_host.get(host, 0) + cnt
    assert sorted(by_host.items()) == [(f"h{i}.com", 15) for i in range(4)]
    # every cell row meets its host's total: the join read host partition h in each cell (h, u)
    assert sorted((h, c) for h, c, _ in out["joined"]) == sorted(map(tuple, out["cells"]))
    assert all(total == 15 for _, _, total in out["joined"])


@pytest.mark.timeout(300)
def test_nested_partitions_and_dimensions_locally(urls, tmp_path):
    done = python(NESTED, "-i", *urls, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2", env=env(),
                  timeout=240)
    check_nested(result_of(done))


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_nested_partitions_and_dimensions_under_mpiexec(urls, tmp_path):
    done = mpiexec(3, NESTED, "-i", *urls, "--data-root", str(tmp_path / "jobs"), env=env(), timeout=240)
    check_nested(result_of(done))


PUBLISH = os.path.join(PIPELINES, "smallpond_publish.py")


@pytest.mark.timeout(300)
def test_output_path_and_a_sink_share_a_folder(urls, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):  # a second run (journaled) keeps both too
        done = python(PUBLISH, "-i", *urls, "--out", str(out), "--data-root", str(tmp_path / "jobs"),
                      "--num-executors", "2", env=env(), timeout=240)
        result = result_of(done)
        assert result["published_rows"] == 60 and result["published_files"] == 3
        assert result["sunk"] == [f"shout-{k:06d}.parquet" for k in range(3)]
    theirs = tmp_path / "theirs"  # a folder of the user's is still never written into
    theirs.mkdir()
    (theirs / "mine.txt").write_text("a file of the user's")
    done = python(PUBLISH, "-i", *urls, "--out", str(theirs), "--data-root", str(tmp_path / "jobs2"),
                  "--num-executors", "2", env=env(), timeout=240)
    assert done.returncode != 0 and "was not written by mpipipe" in done.stderr
    assert os.listdir(theirs) == ["mine.txt"]


def test_smallpond_common_utility_and_workqueue_module_paths():
    import importlib

    assert hasattr(importlib.import_module("mpipipe.common"), "InjectedFault")
    assert hasattr(importlib.import_module("mpipipe.utility"), "ConcurrentIter")
    assert hasattr(importlib.import_module("mpipipe.execution.workqueue"), "WorkStatus")
