"""kill -9 of a whole run mid-way, then the same command again: it resumes and re-runs no finished task."""
import glob
import os
import signal
import subprocess
import sys

import pytest

from helpers import BIN, FLAKY, env_for_tests, kill_tree, python, run, wait_for
from journal_tools import ok_counts, records


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
