"""Several run() calls in one process (one plan per action): one world, one job directory, one journal."""
import glob
import os
import signal
import subprocess
import sys

import pytest

from helpers import BIN, REPO, env_for_tests, kill_group, mpiexec, python, run, wait_for
from journal_tools import job_dir, ok_counts, records

TWO_RUNS = os.path.join(REPO, "tests", "pipelines", "two_runs.py")

HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))


def run_lines(stdout):
    """label -> the rest of its line, for the `runN ...` lines the script prints."""
    return {line.split()[0]: line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith("run")}


def check_three_runs(done, data_root, executors):
    """Run 2 reuses run 1's tasks from the journal; every task ran once; all runs shared one world."""
    assert done.returncode == 0, done.stderr
    assert run_lines(done.stdout) == {
        "run1": "ran=4 cached=0 values=[0, 1, 4, 9]",
        "run2": "ran=1 cached=4 values=[14]",
        "run3": "ran=3 cached=0 values=[0, 1, 8]",  # cube, not square: node ids differ across Contexts
    }
    assert done.stdout.count("script end") == 1  # user code after run() runs on rank 0 only
    counts = ok_counts(data_root)
    assert len(counts) == 4 + 1 + 3 and set(counts.values()) == {1}
    recs = records(data_root)
    starts = [r for r in recs if r.get("type") == "run"]
    assert len(starts) == 3 and len({r["pid"] for r in starts}) == 1
    assert [r["status"] for r in recs if r.get("type") == "end"] == ["succeeded"] * 3
    assert {r["r"] for r in recs if r.get("s") == "ok"} <= set(range(1, executors + 1))
    with open(os.path.join(job_dir(data_root), "logs", "rank-0.log")) as f:
        log = f.read()
    assert log.count("executors ready") == 1  # one hello: the world stayed open between runs
    assert "run 3 of this process: 1 node(s), 1 sent" in log
    assert "run 2 of this process: 2 node(s), 1 sent" in log  # A's node was not sent again


def check_second_run_fails(done):
    assert done.returncode == 1, done.stderr
    assert "run1" in done.stdout and "run2" not in done.stdout and "script end" not in done.stdout
    assert ("mpipipe: error: task total[0] failed after 1 attempt(s): ValueError: the second run fails on purpose"
            in done.stderr)


# --- node ids ----------------------------------------------------------------------------------------------


def test_two_contexts_in_one_process_give_distinct_increasing_node_ids():
    # a fresh interpreter, so the exact ids are known (and this process's counter is left alone)
    code = (
        "from mpipipe import ComputeNode, Context, LogicalPlan\n"
        "f = lambda task: None\n"
        "c1, c2 = Context(), Context()\n"
        "a = ComputeNode(c1, f, name='a'); b = ComputeNode(c2, f, name='b')\n"
        "c = ComputeNode(c2, f, inputs=[b], name='c')\n"
        "print([a.id, b.id, c.id])\n"
        "print(LogicalPlan(c2, c).explain())\n"
    )
    done = run([sys.executable, "-c", code], timeout=60, check=True)
    ids, *plan = done.stdout.splitlines()
    assert ids == "[0, 1, 2]"
    assert "  c: compute '<lambda>'; 1 partition; inputs: b" in plan


# --- local platform ----------------------------------------------------------------------------------------


def test_three_runs_in_one_local_process(data_root):
    done = python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", timeout=120)
    check_three_runs(done, data_root, 2)
    assert done.stderr.count("succeeded in") == 3


def test_a_second_process_reuses_every_run(data_root):
    python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", timeout=120, check=True)
    again = python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", timeout=120, check=True)
    assert run_lines(again.stdout) == {
        "run1": "ran=0 cached=4 values=[0, 1, 4, 9]",
        "run2": "ran=0 cached=5 values=[14]",
        "run3": "ran=0 cached=3 values=[0, 1, 8]",
    }


def test_fresh_wipes_before_the_first_run_only(data_root):
    python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", timeout=120, check=True)
    fresh = python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", "--fresh", timeout=120, check=True)
    lines = run_lines(fresh.stdout)
    assert lines["run1"].startswith("ran=4 cached=0")  # the earlier process's journal was moved aside
    assert lines["run2"].startswith("ran=1 cached=4")  # but not what run 1 of this process journaled
    assert len(glob.glob(os.path.join(job_dir(data_root), "journal.log.*.old"))) == 1


def test_failing_second_run_local(data_root):
    done = python(TWO_RUNS, "--data-root", data_root, "--num-executors", "2", "--fail-second", "--max-retries", "0",
                  timeout=120)
    check_second_run_fails(done)
    assert [r["status"] for r in records(data_root) if r.get("type") == "end"] == ["succeeded", "failed"]


def test_job_directory_stays_locked_between_runs(data_root):
    args = ["--data-root", data_root, "--num-executors", "1", "--pause", "30"]  # same arguments, same job id
    first = subprocess.Popen([sys.executable, TWO_RUNS, *args], env=env_for_tests(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def run1_ended():
            try:
                return any(r.get("type") == "end" for r in records(data_root))
            except AssertionError:  # no job directory yet
                return False

        wait_for(run1_ended, 60, "the first run to end")
        second = python(TWO_RUNS, *args, timeout=60)
        assert second.returncode == 2
        assert f"is in use by pid {first.pid} " in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None
    finally:
        kill_group(first)


def test_dry_run_prints_every_plan_and_runs_nothing(data_root):
    done = python(TWO_RUNS, "--data-root", data_root, "--dry-run", timeout=60, check=True)
    assert "plan: 1 nodes, 4 tasks" in done.stdout and "plan: 2 nodes, 5 tasks" in done.stdout
    assert "plan: 1 nodes, 3 tasks" in done.stdout
    assert not os.path.exists(data_root)


# --- MPI worlds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_three_runs_inside_mpi_world(n, data_root):
    done = mpiexec(n, TWO_RUNS, "--data-root", data_root, timeout=120)
    check_three_runs(done, data_root, max(1, n - 1))
    assert f"{max(1, n - 1)} executor(s) on mpi" in done.stderr


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_three_runs_with_platform_mpi_launching_the_world(data_root):
    done = python(TWO_RUNS, "--data-root", data_root, "--platform", "mpi", "--num-executors", "2", timeout=120)
    check_three_runs(done, data_root, 2)


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_failing_second_run_inside_mpi_world(data_root):
    done = mpiexec(3, TWO_RUNS, "--data-root", data_root, "--fail-second", "--max-retries", "0", timeout=120)
    check_second_run_fails(done)
    assert " of 3 on " in done.stderr


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_failing_second_run_with_platform_mpi(data_root):
    done = python(TWO_RUNS, "--data-root", data_root, "--platform", "mpi", "--num-executors", "2", "--fail-second",
                  "--max-retries", "0", timeout=120)
    check_second_run_fails(done)


# --- interrupts, and runs after a failed one -------------------------------------------------------------------


def interrupt_second_run(argv, data_root):
    """SIGINT to the script while run 2's task sleeps: it stops with 130, its world and all, without hanging."""
    proc = subprocess.Popen(argv + ["--data-root", data_root, "--slow-second", "60"], env=env_for_tests(),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def second_run_started():
            try:
                return sum(1 for r in records(data_root) if r.get("type") == "run") == 2
            except AssertionError:  # no job directory yet
                return False

        wait_for(second_run_started, 60, "the second run to start")
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 130, err
    assert "run1" in out and "run2" not in out
    assert "interrupted" in err
    assert [r["status"] for r in records(data_root) if r.get("type") == "end"] == ["succeeded", "interrupted"]


def test_ctrl_c_in_the_second_local_run(data_root):
    interrupt_second_run([sys.executable, TWO_RUNS, "--num-executors", "2"], data_root)


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_ctrl_c_in_the_second_run_of_a_launched_mpi_world(data_root):
    interrupt_second_run([sys.executable, TWO_RUNS, "--platform", "mpi", "--num-executors", "2"], data_root)


RETRY_SCRIPT = '''
import sys
from mpipipe import ComputeNode, Context, LogicalPlan, init

def boom(task):
    raise ValueError("boom")

def one(task):
    return 1

session = init(data_root=sys.argv[1], max_retries=0, progress_interval=0)
ctx = Context()
try:
    session.run(LogicalPlan(ctx, ComputeNode(ctx, boom)))
except SystemExit as e:
    if e.code:  # executor ranks leave run() with SystemExit(0) when the world ends
        print(f"first run exited {e.code}", flush=True)
print("second run", session.run(LogicalPlan(ctx, ComputeNode(ctx, one))).values(), flush=True)
'''


def test_a_run_after_a_failed_one_uses_the_same_local_world(tmp_path, data_root):
    """Tasks that failed for good end that run, not the world: the next run has the same executors."""
    script = tmp_path / "retry.py"
    script.write_text(RETRY_SCRIPT)
    done = run([sys.executable, str(script), data_root], env=env_for_tests({"SP_NUM_EXECUTORS": "2"}), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["first run exited 1", "second run [1]"]
    with open(os.path.join(job_dir(data_root), "logs", "rank-0.log")) as f:
        assert f.read().count("executors ready") == 1


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_a_run_after_a_failed_one_in_an_mpi_world_runs_on_the_same_world(tmp_path, data_root):
    script = tmp_path / "retry.py"
    script.write_text(RETRY_SCRIPT)
    done = run([os.path.join(BIN, "mpiexec"), "-n", "3", sys.executable, str(script), data_root], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["first run exited 1", "second run [1]"]


PLAN_ERROR_SCRIPT = '''
import sys
from mpipipe import ComputeNode, Context, Driver, LogicalPlan

def one(task):
    return 1

driver = Driver()
ctx = Context()
print("first run", driver.run(LogicalPlan(ctx, ComputeNode(ctx, one))).values(), flush=True)
ComputeNode(ctx, one, name="not/a/name")  # a PlanError in user code while the world is still open
'''


@pytest.mark.parametrize("where", ["local", "mpiexec"])
def test_a_plan_error_between_runs_is_one_line_and_ends_the_world(where, tmp_path, data_root):
    if where == "mpiexec" and not HAS_MPIEXEC:
        pytest.skip("the virtualenv has no mpiexec")
    script = tmp_path / "plan_error.py"
    script.write_text(PLAN_ERROR_SCRIPT)
    if where == "local":
        done = python(str(script), "--data-root", data_root, "--num-executors", "2", timeout=120)
    else:
        done = mpiexec(3, str(script), "--data-root", data_root, timeout=120)
    assert done.stdout.splitlines() == ["first run [1]"]
    assert "mpipipe: error: node name 'not/a/name' is not usable as a folder name" in done.stderr
    assert "Traceback" not in done.stderr and "BAD TERMINATION" not in done.stdout + done.stderr
    # the Driver exits 2; inside an MPI world a clean exit with an error is 1 (see jobmanager._close_at_exit)
    assert done.returncode == (2 if where == "local" else 1)
