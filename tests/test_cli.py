"""The `mpipipe` command on a real job directory."""
import os

from helpers import FLAKY, python, run, BIN
from journal_tools import job_dir

MPIPIPE = os.path.join(BIN, "mpipipe")


def test_status_of_a_failed_job_shows_counts_and_last_error(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "5", "--mode", "exception", "--fail-partition", "2",
           "--fail-attempts", "-1", "--max-retries", "1", "--num-executors", "2")
    done = run([MPIPIPE, "status", job_dir(data_root)], check=True, timeout=60)
    assert ": failed, 1 run(s)" in done.stdout
    assert "square: 4/5 done, 2 failed attempt(s)" in done.stdout
    assert "total: 0/1 done" in done.stdout
    assert "ValueError: bad value in partition 2" in done.stdout and "p2.a1.log" in done.stdout


def test_status_of_a_finished_job(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "3", "--num-executors", "1", check=True)
    done = run([MPIPIPE, "status", job_dir(data_root)], check=True, timeout=60)
    assert ": succeeded" in done.stdout and "square: 3/3 done, 0 failed" in done.stdout


def test_status_of_a_folder_that_is_no_job(tmp_path):
    done = run([MPIPIPE, "status", str(tmp_path)], timeout=60)
    assert done.returncode != 0 and "is not a job directory" in done.stderr


def test_platforms_and_version():
    done = run([MPIPIPE, "platforms"], check=True, timeout=60)
    assert "local" in done.stdout and "mpi" in done.stdout and "auto-detection picks local" in done.stdout
    assert "0.1.0" in run([MPIPIPE, "--version"], check=True, timeout=60).stdout
