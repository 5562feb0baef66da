"""smallpond programs run unchanged: smallpond's Scheduler(exec_plan) and Executor.create(runtime_ctx, id) run
as separate processes, smallpond's contrib nodes, a node that reads one input twice, smallpond's init()
keywords, and the script that runs smallpond's own tests against mpipipe."""
from __future__ import annotations

import json
import os
import pickle
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, env_for_tests, mpiexec, python, run
from journal_tools import ok_counts
import test_smallpond_api
from test_smallpond_api import env, result_of

urls = test_smallpond_api.urls  # the fixture: three Parquet files of 20 urls on 4 hosts

PIPELINES = os.path.join(REPO, "tests", "pipelines")
CONTRIB = os.path.join(PIPELINES, "smallpond_contrib.py")
FABRIC = os.path.join(PIPELINES, "smallpond_fabric.py")
SCRIPT = os.path.join(REPO, "scripts", "smallpond_tests.py")


ALL_URLS = sorted(f"http://h{j % 4}.com/p{i}_{j}" for i in range(3) for j in range(20))


# --- a node that lists the same input twice -----------------------------------------------------------------

def test_a_node_reading_one_input_twice_is_one_child_of_it(tmp_path):
    from mpipipe.execution.graph import PlanGraph
    from mpipipe.logical.node import NodeInfo

    routed = []
    a = NodeInfo(0, "parts", "partition", 3, (), False, "fa", "")
    join = NodeInfo(1, "join", "sql", 3, (0, 0), True, "fj", "")
    graph = PlanGraph([a, join], str(tmp_path), lambda nid, p, attempt, front: routed.append((nid, p)))
    assert graph.nodes[0].children == [1]
    graph.activate([0])
    graph.expand(10)
    assert routed == [(0, 0), (0, 1), (0, 2)]
    for p in range(3):
        graph.complete(0, p, {"o": f"/out/{p}"})
    assert routed[3:] == [(1, 0), (1, 1), (1, 2)]  # each partition of the join once
    assert graph.input_groups(1, 2) == (("/out/2",), ("/out/2",))  # read as {0} and as {1}


def check_contrib(out, data_root):
    assert out["successful"]
    assert out["self_join"] == ALL_URLS  # every url meets itself once: no partition ran twice into the output
    assert out["copied"] == ALL_URLS and out["streamed"] == ALL_URLS
    counts = ok_counts(data_root)
    assert counts and set(counts.values()) == {1}, counts  # each task finished once


@pytest.mark.timeout(300)
def test_contrib_nodes_and_a_self_join_locally(urls, tmp_path):
    done = python(CONTRIB, "-i", *urls, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2", env=env(),
                  timeout=240)
    check_contrib(result_of(done), str(tmp_path / "jobs"))


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_contrib_nodes_and_a_self_join_under_mpiexec(urls, tmp_path):
    done = mpiexec(3, CONTRIB, "-i", *urls, "--data-root", str(tmp_path / "jobs"), env=env(), timeout=240)
    check_contrib(result_of(done), str(tmp_path / "jobs"))


def test_contrib_module_paths():
    from mpipipe.contrib.copy_table import CopyArrowTable, StreamCopy
    from mpipipe.contrib.log_dataset import LogDataSet, LogDataSetTask
    from mpipipe.logical.node import ArrowComputeNode, ArrowStreamNode, PythonScriptNode

    assert issubclass(CopyArrowTable, ArrowComputeNode) and issubclass(StreamCopy, ArrowStreamNode)
    assert issubclass(LogDataSet, PythonScriptNode) and LogDataSetTask.num_rows == 200


# --- smallpond's scheduler and executors as separate processes ----------------------------------------------

@pytest.mark.timeout(300)
def test_scheduler_and_executors_started_as_smallpond_processes(urls, tmp_path):
    done = python(FABRIC, str(tmp_path / "root"), *urls, env=env(), timeout=240)
    out = result_of(done)
    assert out["exit_codes"] == [0, 0, 0]
    assert out["success"] and not out["same_object"]  # the final state came back through the queue
    assert out["executor_ids"] == ["executor-0", "executor-1"]
    per_host = {}
    for host, n in out["counts"]:
        per_host[host] = per_host.get(host, 0) + n
    assert per_host == {f"h{i}.com": 15 for i in range(4)}
    assert out["hosts_rows"] == 60 and out["outputs_folder"]
    assert "2 executor(s)" in done.stderr  # the executor processes were the job's executors


@pytest.mark.timeout(300)
def test_a_failed_plan_ends_its_smallpond_processes(urls, tmp_path):
    done = python(FABRIC, str(tmp_path / "root"), *urls, "--fail", env=env(), timeout=240)
    out = result_of(done)
    assert out["exit_codes"] == [0, 0, 0] and out["success"] is False


def test_planner_returns_an_execution_plan_that_pickles_with_lambdas(urls, tmp_path):
    from mpipipe.execution.manager import ExecutionPlan as RunPlan
    from mpipipe.execution.task import ExecutionPlan, RuntimeContext
    from mpipipe.logical.dataset import ParquetDataSet
    from mpipipe.logical.node import ArrowComputeNode, Context, DataSourceNode, LogicalPlan
    from mpipipe.logical.planner import Planner

    ctx = Context()
    node = ArrowComputeNode(ctx, (DataSourceNode(ctx, ParquetDataSet(urls)),), process_func=lambda rc, t: t[0])
    plan = LogicalPlan(ctx, node)
    rc = RuntimeContext(None, None, str(tmp_path))
    exec_plan = Planner(rc).create_exec_plan(plan)
    assert isinstance(exec_plan, ExecutionPlan) and exec_plan.ctx is rc and exec_plan.logical_plan is plan
    assert not exec_plan.successful and exec_plan.final_output is None
    again = pickle.loads(pickle.dumps(exec_plan))  # the plain pickler: a lambda inside travels anyway
    assert [n.name for n in again.logical_plan.nodes] == [n.name for n in plan.nodes]
    assert issubclass(RunPlan, ExecutionPlan)


def test_planner_lets_nested_partitions_line_up_and_refuses_the_rest(tmp_path):
    from mpipipe.logical.dataset import ParquetDataSet
    from mpipipe.logical.node import (ConsolidateNode, Context, DataSourceNode, EvenlyDistributedPartitionNode,
                                      HashPartitionNode, LogicalPlan, SqlEngineNode)
    from mpipipe.logical.planner import Planner

    path = tmp_path / "hosts.parquet"
    pq.write_table(pa.table({"host": [f"h{i % 4}" for i in range(40)], "url": [f"u{i}" for i in range(40)]}), path)
    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet([str(path)]))
    hosts = HashPartitionNode(ctx, (source,), 3, ["host"], data_partition_column="host_partition")
    cells = HashPartitionNode(ctx, (hosts,), 5, ["url"], data_partition_column="url_partition", nested=True)
    per_cell = SqlEngineNode(ctx, (cells,), "select host, count(*) as cnt from {0} group by host")
    per_host = SqlEngineNode(ctx, (ConsolidateNode(ctx, per_cell, ["host_partition"]),),
                             "select host, sum(cnt) as cnt from {0} group by host")
    # host x url cells, host partitions and an unpartitioned source: partition (h, u) reads host partition h
    joined = SqlEngineNode(ctx, (per_cell, per_host, source),
                           "select * from {0} where exists (select * from {1} where {1}.host = {0}.host)")
    Planner().create_exec_plan(LogicalPlan(ctx, joined))

    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet([str(path)]))
    a = EvenlyDistributedPartitionNode(ctx, (source,), 3, dimension="A")
    b = EvenlyDistributedPartitionNode(ctx, (source,), 3, dimension="B")
    with pytest.raises(AssertionError, match="partitioned differently"):
        Planner().create_exec_plan(LogicalPlan(ctx, SqlEngineNode(ctx, (a, b), "select * from {0}, {1}")))


class _Task:
    def __init__(self, partition, output_dir):
        self.partition, self.output_dir, self.inputs, self.job_dir = partition, str(output_dir), [], ""
        os.makedirs(output_dir)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_split_by_files_takes_its_slice_of_the_listing(urls, tmp_path, shuffle):
    """smallpond's test of 10,000 partitions of a million listed files: each task takes its slice, not a pass
    over the million; the slices are the ones a split of the whole listing makes."""
    from mpipipe.logical.dataset import ParquetDataSet
    from mpipipe.logical.node import Context, DataSetPartitionNode, DataSourceNode
    from mpipipe.steps.partio import PartitionData, folder_fragments

    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet(urls * 3))  # 9 files, each listed 3 times
    split = DataSetPartitionNode(ctx, (source,), 12, random_shuffle=shuffle)
    whole = [PartitionData(list(source._fragments), source.output_schema())]
    taken = []
    for p in range(12):
        fast, slow = _Task(p, tmp_path / f"fast{p}"), _Task(p, tmp_path / f"slow{p}")
        assert split.run_task(fast)["bytes_in"] == sum(os.path.getsize(f.path) for f in
                                                       split.input_data(fast)[0].fragments)
        split.process_partition(slow, whole)
        listed = [f.path for f in folder_fragments(fast.output_dir) if not f.path.startswith(fast.output_dir)]
        assert listed == [f.path for f in folder_fragments(slow.output_dir)
                          if not f.path.startswith(slow.output_dir)]  # an empty partition has a file of its own
        taken += listed
    assert sorted(taken) == sorted(urls * 3)
    assert "_listing_cache" in split.__dict__ and "_listing_cache" not in pickle.loads(pickle.dumps(split)).__dict__


def test_scheduler_with_a_transport_is_mpipipe_s_own():
    from mpipipe.execution.roles import SchedulerRole
    from mpipipe.execution.scheduler import Scheduler

    assert Scheduler.StateObserver is SchedulerRole.StateObserver
    assert not issubclass(SchedulerRole, Scheduler)
    with pytest.raises(TypeError):
        Scheduler()  # neither a transport nor a plan: mpipipe's constructor says what it needs


# --- smallpond's init() keywords ----------------------------------------------------------------------------

INIT = """
import json, mpipipe
sp = mpipipe.init(data_root={root!r}, {keywords})
print("RESULT " + json.dumps({{"job_id": sp.config.job_id, "slurm_job_name": sp.config.slurm_job_name}}))
"""


def init_with(tmp_path, keywords):
    return run([sys.executable, "-c", INIT.format(root=str(tmp_path / "jobs"), keywords=keywords)], env=env(),
               timeout=60)


def test_init_takes_job_name_as_the_job_id(tmp_path):
    done = init_with(tmp_path, "job_name='nightly'")
    assert result_of(done) == {"job_id": "nightly", "slurm_job_name": None}
    assert "WARNING" not in done.stderr
    done = init_with(tmp_path, "job_id='a1', job_name='nightly'")
    assert result_of(done) == {"job_id": "a1", "slurm_job_name": "nightly"}


def test_init_accepts_ray_address_and_says_it_has_no_effect(tmp_path):
    done = init_with(tmp_path, "ray_address='10.0.0.1:6379', job_time=1700000000.0, bind_numa_node=True, "
                               "memory_allocator='jemalloc', _remove_output_root=False, num_executors=2")
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "WARNING" in ln]
    assert len(warnings) == 5, done.stderr
    assert any("ray_address='10.0.0.1:6379'" in w and "has no effect" in w and "Ray" in w for w in warnings)


def test_init_is_quiet_for_smallpond_defaults_and_still_refuses_misspellings(tmp_path):
    done = init_with(tmp_path, "ray_address=None, job_time=None, bind_numa_node=False, _remove_output_root=True")
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    done = init_with(tmp_path, "num_executor=2")
    assert done.returncode != 0 and "unknown option(s) num_executor" in done.stderr


PLATFORM_INIT = """
import json, mpipipe
from mpipipe import ComputeNode, Context, LogicalPlan
sp = mpipipe.init(data_root={root!r}, platform="sp_platforms.popen", num_executors=1, job_id="j1",
                  job_name="nightly", platform_options={{"queue": "fast"}})
result = sp.run(LogicalPlan(sp.ctx, ComputeNode(sp.ctx, lambda task: task.partition, npartitions=2)))
print("RESULT " + json.dumps(sorted(result.values())))
"""


@pytest.mark.timeout(120)
def test_smallpond_style_platform_gets_the_job_name_and_platform_options(tmp_path):
    """smallpond passes init()'s other keywords to start_job as extra_opts; mpipipe passes platform_options."""
    record = tmp_path / "start_job.json"
    done = run([sys.executable, "-c", PLATFORM_INIT.format(root=str(tmp_path / "jobs"))],
               env=env(RECORD_START_JOB_TO=str(record)), timeout=100)
    assert result_of(done) == [0, 1]
    extra = json.loads(record.read_text())["extra_opts"]
    assert extra["queue"] == "fast" and extra["job_id"] == "j1" and extra["job_name"] == "nightly"


# --- the script that runs smallpond's own tests -------------------------------------------------------------

FAKE_CONFTEST = '''import os

import pytest
import ray

import smallpond


@pytest.fixture(scope="session")
def ray_address():
    address = ray.init(address="local", include_dashboard=False).address_info["gcs_address"]
    yield address
    ray.shutdown()


@pytest.fixture
def sp(ray_address, request):
    """A smallpond session for each test"""
    sp = smallpond.init(data_root=os.path.join("tests/runtime", request.node.name), ray_address=ray_address)
    yield sp
    sp.shutdown()
'''

FAKE_TESTS = '''import pytest

from smallpond.common import MB
from smallpond.dataframe import Session


def test_session(sp: Session):
    assert MB == 1 << 20
    assert sp.from_items([1, 2, 3]).count() == 3


def test_wrong():
    assert 1 + 1 == 3


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


def test_over_its_time_limit():
    import subprocess
    import time

    left = subprocess.Popen(["sleep", "300"])
    with open("left_running.pid", "w") as f:
        f.write(str(left.pid))
    time.sleep(300)
'''


@pytest.mark.timeout(300)
def test_smallpond_tests_script_renames_runs_and_summarises(tmp_path):
    checkout = tmp_path / "smallpond"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "examples").mkdir()
    (checkout / "tests" / "__init__.py").write_text("")
    (checkout / "tests" / "conftest.py").write_text(FAKE_CONFTEST)
    (checkout / "tests" / "test_fake.py").write_text(FAKE_TESTS)
    (checkout / "tests" / "test_broken.py").write_text("from smallpond.nowhere import x\n\n\ndef test_a():\n"
                                                       "    pass\n\n\ndef test_b():\n    pass\n")
    work = tmp_path / "work"
    done = run([sys.executable, SCRIPT, str(checkout), "--work", str(work), "--files", "test_fake.py",
                "test_broken.py", "--timeout", "20", "--total-timeout", "240"],
               env=env_for_tests({"SP_NUM_EXECUTORS": "1"}), timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    conftest = (work / "tests" / "conftest.py").read_text()
    assert conftest == FAKE_CONFTEST.replace("import smallpond\n", "import mpipipe\n").replace(
        "smallpond.init(", "mpipipe.init(")  # only the package's name changed; its prose too stays
    summary = (work / "summary.txt").read_text()
    assert "ray: stand-in (not installed)" in summary
    assert "passed 1 of 5 (20.0%); failed 4; skipped 1" in summary, summary
    assert "failed  tests.test_fake::test_wrong  -- assert (1 + 1) == 3" in summary, summary
    assert "tests/test_broken.py (2 tests, not collected)  -- ModuleNotFoundError: No module named " \
           "'mpipipe.nowhere'" in summary, summary
    assert "skipped tests.test_fake::test_skipped  -- not today" in summary
    assert "failed  tests.test_fake::test_over_its_time_limit  -- Failed: Timeout (>20.0s) from pytest-timeout." \
        in summary, summary
    left = int((work / "left_running.pid").read_text())  # what the test left running was stopped after it
    assert not os.path.exists(f"/proc/{left}") or open(f"/proc/{left}/stat").read().split()[2] == "Z"


def test_execute_command_yields_lines_and_raises_on_failure(tmp_path):
    import subprocess

    from mpipipe.utility import execute_command

    (tmp_path / "two.txt").write_text("a\nb\n")
    assert list(execute_command(f"cat {tmp_path / 'two.txt'}")) == ["a", "b"]
    assert list(execute_command("echo one two | tr a-z A-Z", shell=True)) == ["ONE TWO"]
    with pytest.raises(subprocess.CalledProcessError):
        list(execute_command(f"ls {tmp_path / 'missing'}"))
