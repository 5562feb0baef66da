"""kill -9 of a whole run mid-way, then the same command again: it resumes and re-runs no finished task."""
import os
import signal
import subprocess
import sys

import pytest

from helpers import BIN, FLAKY, env_for_tests, kill_tree, run, wait_for
from journal_tools import job_dir, ok_counts, records
from mpipipe.execution.journal import FAILED, OK, OK_BATCH, kind, read_raw_records


def _finished(data_root):
    try:
        return sum(1 for r in records(data_root) if r.get("s") == "ok")
    except AssertionError:
        return 0


def _kill_mid_way_then_resume(argv, data_root, n):
    proc = subprocess.Popen(argv, env=env_for_tests(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _finished(data_root) >= 6, 120, "some tasks to finish")
    finally:
        # SIGKILL to every process of the run, and wait until they are gone. A kill of the launcher's process
        # group is not that: mpiexec runs in a session of its own (so does each rank under hydra), and the
        # ranks it tears down afterwards could still journal a result after the count below
        kill_tree(proc)
    before = ok_counts(data_root)
    assert 6 <= len(before) < n + 1, "the kill came too late to test a resume"
    done = run(argv, timeout=180, check=True)
    after = ok_counts(data_root)
    assert set(after.values()) == {1}, f"tasks ran twice: {[k for k, c in after.items() if c > 1]}"
    assert len(after) == n + 1
    assert "total=%d" % sum(p * p for p in range(n)) in done.stdout
    reused = int(done.stderr.split(" reused from the journal")[0].split(", ")[-1].replace(",", ""))
    assert reused == len(before)
    return done


def test_kill_9_local_run_resumes_without_rerunning_finished_tasks(data_root):
    n = 30
    argv = [sys.executable, FLAKY, "--data-root", data_root, "-n", str(n), "--sleep", "0.2", "--num-executors", "2"]
    _kill_mid_way_then_resume(argv, data_root, n)


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")), reason="no mpiexec in the virtualenv")
def test_kill_9_mpi_run_resumes_without_rerunning_finished_tasks(data_root):
    n = 30
    argv = [sys.executable, FLAKY, "--data-root", data_root, "-n", str(n), "--sleep", "0.2",
            "--platform", "mpi", "--num-executors", "3"]
    _kill_mid_way_then_resume(argv, data_root, n)


# --- tiny tasks travel as task ranges: a crash or a kill in the middle of one --------------------------------


def _square_oks(recs):
    return {r["p"]: r["a"] for r in recs if kind(r) == OK and r["n"] == "square"}


def test_kill_9_in_the_middle_of_task_ranges_resumes_without_rerunning_journaled_tasks(data_root):
    """Tasks of a few milliseconds go out as ranges of many (one context, no log work per task in the worker):
    a kill -9 of the whole run while ranges are half done resumes with every journaled task reused and the
    rest run once."""
    n = 1000
    argv = [sys.executable, FLAKY, "--data-root", data_root, "-n", str(n), "--sleep", "0.003", "--num-executors", "2"]
    _kill_mid_way_then_resume(argv, data_root, n)
    batches = [r for r in read_raw_records(os.path.join(job_dir(data_root), "journal.log")) if kind(r) == OK_BATCH]
    assert max(len(b["p"]) for b in batches) > 1, "the tasks did not travel as ranges"


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")), reason="no mpiexec in the virtualenv")
def test_kill_9_in_the_middle_of_task_ranges_of_an_mpi_run_resumes(data_root):
    n = 1000
    argv = [sys.executable, FLAKY, "--data-root", data_root, "-n", str(n), "--sleep", "0.003",
            "--platform", "mpi", "--num-executors", "3"]
    _kill_mid_way_then_resume(argv, data_root, n)


@pytest.mark.parametrize("platform", ["local", pytest.param("mpi", marks=[
    pytest.mark.mpi, pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")),
                                        reason="no mpiexec in the virtualenv")])])
def test_a_worker_killed_in_the_middle_of_a_task_range_fails_only_its_own_task(data_root, platform):
    """Partition 150 kills its worker with SIGKILL in the middle of a range of tiny tasks: the crash is pinned on
    partition 150 (one failed attempt, then a retry that succeeds), the tasks of the range that the worker had
    finished without reporting them run again unnoticed, and every task is journaled as finished once."""
    n = 400
    argv = [sys.executable, FLAKY, "--data-root", data_root, "-n", str(n), "--sleep", "0.001", "--mode", "sigkill",
            "--fail-partition", "150", "--platform", platform, "--num-executors", "2"]
    done = run(argv, timeout=180, check=True)
    assert "total=%d" % sum(p * p for p in range(n)) in done.stdout
    recs = records(data_root)
    assert [(r["n"], r["p"], r["a"]) for r in recs if kind(r) == FAILED] == [("square", 150, 0)]
    assert set(ok_counts(data_root).values()) == {1} and len(ok_counts(data_root)) == n + 1
    oks = _square_oks(recs)
    assert oks[150] == 1 and {a for p, a in oks.items() if p != 150} == {0}
    (crash,) = [r for r in recs if kind(r) == FAILED]
    with open(crash["log"][0]) as f:  # the failed attempt's own log: its marker, then what it printed
        text = f.read()
    assert "--- square[150] attempt 0 ---\nabout to fail partition 150 with sigkill" in text
    batches = [r for r in read_raw_records(os.path.join(job_dir(data_root), "journal.log")) if kind(r) == OK_BATCH]
    assert max(len(b["p"]) for b in batches) > 1, "the tasks did not travel as ranges"


def _crash_at(task):
    """A task body for the worker test below: partition 5 kills its worker, the others print or not."""
    if task.partition == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    if task.partition % 2:
        print(f"odd {task.partition}")
    return task.partition


def test_the_worker_pins_a_crash_in_a_range_on_its_task_and_gives_back_the_rest_as_ranges(tmp_path):
    """The executor's side, with a real worker process: results of a range come back as columns; when the
    worker dies in the middle of a range, its TaskSlot names the task it died in, and the tasks it had not
    reported come back as ranges around that one (the finished ones run again, never journaled twice)."""
    import time

    from mpipipe.execution.task import OkRun, TaskRange
    from mpipipe.execution.worker import WorkerHandle
    from mpipipe.logical.node import ComputeNode, Context
    from mpipipe.pickling import pickle_nodes

    ctx = Context()
    node = ComputeNode(ctx, _crash_at, npartitions=20, name="crashy")
    job_dir = str(tmp_path)
    setup = {"rank": 1, "size": 2, "host": "h", "job_dir": job_dir, "sys_path": list(sys.path),
             "node_blobs": [pickle_nodes([node])]}
    w = WorkerHandle(os.path.join(job_dir, "logs", "w.log"), setup)
    w.start()
    try:
        rng = TaskRange(100, node.id, 0, 20, 0, "fp", (), os.path.join(job_dir, "outputs", "crashy", "part-"), 5)
        w.submit([rng])
        results, crashed = [], None
        deadline = time.monotonic() + 60
        while crashed is None and time.monotonic() < deadline:
            done, crashed, rest = w.collect()
            results += done
            time.sleep(0.01)
        assert crashed is not None, "the worker did not die"
        task, why, start = crashed
        assert (task.partition, task.tid) == (5, 105) and "SIGKILL" in why
        reported = sum(r.count for r in results if type(r) is OkRun)
        assert all(type(r) is OkRun for r in results) and reported <= 5
        assert [(u.first, u.count, u.tid) for u in rest] == [(reported, 5 - reported, 100 + reported),
                                                            (6, 14, 106)][(1 if reported == 5 else 0):]
        with open(w.log_path) as f:
            f.seek(start)
            assert "--- crashy[5] attempt 0 ---" not in f.read()  # it printed nothing: no marker
        with open(w.log_path) as f:
            log = f.read()
        assert "--- crashy[1] attempt 0 ---\nodd 1\n" in log and "crashy[0]" not in log and "crashy[2]" not in log
        # the worker started again runs the rest, from the ranges it was given back
        w.start()
        w.submit(rest)
        got = []
        deadline = time.monotonic() + 60
        while sum(r.count for r in got) < 19 - reported and time.monotonic() < deadline:
            done, crashed, _ = w.collect()
            assert crashed is None
            got += done
            time.sleep(0.01)
        assert [v for r in got for v in r.values] == [p for p in range(reported, 20) if p != 5]
    finally:
        w.stop(timeout=5)
