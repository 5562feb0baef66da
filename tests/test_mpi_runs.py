"""Real MPI worlds: mpiexec -n 1, 2 and 4 (the MPICH wheel), and --platform mpi launching one itself."""
import glob
import os
import signal
import subprocess
import sys

import pytest

from helpers import (BIN, FLAKY, QUICKSTART, env_for_tests, kill_group, mpiexec, parent_pid, pid_alive, python,
                     wait_for)
from journal_tools import job_dir, ok_counts, records
from test_local_runs import expected_counts, word_counts

pytestmark = pytest.mark.mpi

if not os.path.exists(os.path.join(BIN, "mpiexec")):
    pytest.skip("the virtualenv has no mpiexec (pip install 'mpipipe[mpi]')", allow_module_level=True)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_quickstart_inside_mpi_world(n, data_root):
    done = mpiexec(n, QUICKSTART, "--data-root", data_root, "-n", "6", "-w", "2000", check=True, timeout=120)
    assert "counted 12,000 words" in done.stdout
    assert done.stdout.count("counted") == 1  # only rank 0 returns from driver.run
    assert word_counts(data_root) == expected_counts(6, 2000)
    executors = max(1, n - 1)
    assert f"{executors} executor(s) on mpi" in done.stderr
    ranks = {r["r"] for r in records(data_root) if r.get("s") == "ok"}
    assert ranks == set(range(1, executors + 1)) if n > 2 else ranks <= {1}


def test_platform_mpi_launches_mpiexec_itself(data_root):
    done = python(QUICKSTART, "--data-root", data_root, "--platform", "mpi", "--num-executors", "4",
                  "-n", "8", "-w", "1000", check=True, timeout=120)
    assert "counted 8,000 words" in done.stdout
    assert "4 executor(s) on mpi" in done.stderr
    assert word_counts(data_root) == expected_counts(8, 1000)


def test_task_failure_exit_code_passes_through_mpiexec_launcher(data_root):
    done = python(FLAKY, "--data-root", data_root, "--platform", "mpi", "--num-executors", "2", "--mode", "segv",
                  "--fail-partition", "1", "--fail-attempts", "-1", "--max-retries", "1", timeout=120)
    assert done.returncode == 1
    assert "task square[1] failed after 2 attempt(s)" in done.stderr
    assert "SIGSEGV" in done.stderr and " of 3 on " in done.stderr


@pytest.mark.parametrize("mode", ["exception", "sigkill"])
def test_retries_under_mpi(mode, data_root):
    done = mpiexec(3, FLAKY, "--data-root", data_root, "--mode", mode, "--fail-partition", "2", check=True, timeout=120)
    assert "total=285" in done.stdout and "1 retried" in done.stderr


def test_world_size_mismatch_is_reported(data_root):
    env = env_for_tests({"MPIPIPE_WORLD_SIZE": "5"})
    done = mpiexec(2, QUICKSTART, "--data-root", data_root, env=env, timeout=60)
    assert done.returncode != 0
    assert "the launcher started a world of 5 ranks" in done.stderr
    assert "Traceback" not in done.stderr


def test_world_too_small_for_num_executors(data_root):
    done = mpiexec(2, QUICKSTART, "--data-root", data_root, "--num-executors", "3", timeout=60)
    assert done.returncode != 0
    assert "found 2 MPI ranks (1 executors), but --num-executors asks for 3" in done.stderr
    assert "mpiexec -n 4" in done.stderr


def test_ctrl_c_on_launcher_stops_the_whole_world(data_root):
    proc = subprocess.Popen([sys.executable, FLAKY, "--data-root", data_root, "--platform", "mpi", "--num-executors",
                             "2", "-n", "40", "--sleep", "2"], env=env_for_tests(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: glob.glob(os.path.join(data_root, "*", "journal.log")), 60, "the job to start")
        ranks = _rank_pids(data_root)
        wait_for(lambda: len(_rank_pids(data_root)) == 3, 30, "three MPI ranks")
        ranks = _rank_pids(data_root)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    wait_for(lambda: not any(pid_alive(p) for p in ranks), 20, "the ranks to exit")
    assert any(r.get("type") == "end" and r["status"] == "interrupted" for r in records(data_root))


def _rank_pids(data_root):
    """Processes whose command line names this test's data root (the MPI ranks, not the workers forked from
    them, which have the same command line and environment in /proc): looked at, never killed."""
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(d, "cmdline"), "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if data_root.encode() in cmd and b"--platform" in cmd and os.path.basename(cmd[0]).startswith(b"python"):
            if int(os.path.basename(d)) != os.getpid():
                pids.append(int(os.path.basename(d)))
    return [p for p in pids if _has_pmi(p) and not _has_pmi(parent_pid(p))]


def _has_pmi(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"PMI_RANK=" in f.read()
    except OSError:
        return False


@pytest.mark.slow
def test_twenty_thousand_noop_tasks_on_four_ranks(data_root):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(repo, "scripts", "bench", "noop_tasks.py")
    done = mpiexec(4, script, "--data-root", data_root, "--tasks", "20000", check=True, timeout=300)
    assert "20000 ran" in done.stdout
    print(done.stdout)
    counts = ok_counts(data_root)
    assert len(counts) == 20000 and set(counts.values()) == {1}


AFTER_FAILED_RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines", "after_failed_runs.py")


@pytest.mark.timeout(150)
def test_failed_runs_leave_the_world_open_and_numpy_scalars_are_numbers(data_root):
    """Under mpiexec -n 3: a plan whose task raises and one whose task returns a set fail for good (caught by the
    script); the world stays open, and the next plan, whose tasks return numpy scalars, succeeds on it."""
    import json

    from mpipipe.execution.journal import kind

    done = mpiexec(3, AFTER_FAILED_RUNS, "--data-root", data_root, "--max-retries", "0", timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["boom failed 1", "a_set failed 1"]
    assert "task a_set[0] failed after 1 attempt(s): the task returned a value that is not JSON-serializable " \
           "(Object of type set is not JSON serializable)" in done.stderr
    numbers = json.loads(lines[2][len("numbers "):])
    assert numbers == {"values": [1.5, 3, True, 2.5, {"mean": 0.25, "n": [2]}],
                       "types": ["float", "int", "bool", "float", "dict"]}
    recs = records(data_root)
    assert [r["status"] for r in recs if kind(r) == "end"] == ["failed", "failed", "succeeded"]
    assert len({r["pid"] for r in recs if kind(r) == "run"}) == 1
    values = {r["p"]: r["v"] for r in recs if kind(r) == "ok" and r["n"] == "numbers"}
    assert values == dict(enumerate(numbers["values"]))
    with open(os.path.join(job_dir(data_root), "logs", "rank-0.log")) as f:
        assert f.read().count("executors ready") == 1  # one world served all three runs
