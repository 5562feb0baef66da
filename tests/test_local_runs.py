"""End-to-end runs on the embedded default (local) platform: real processes, real files."""
import glob
import os

import pytest

from helpers import FLAKY, QUICKSTART, python
from journal_tools import job_dir, ok_counts, records


def word_counts(data_root):
    (path,) = glob.glob(os.path.join(data_root, "*", "outputs", "merge_counts", "part-*", "word_counts.tsv"))
    with open(path) as f:
        return f.read()


def expected_counts(npartitions=8, words=20000):
    """The quickstart's answer computed in this process, with the same generator."""
    import collections
    import random
    import importlib.util

    spec = importlib.util.spec_from_file_location("qs", QUICKSTART)
    qs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qs)
    total = collections.Counter()
    for p in range(npartitions):
        rng = random.Random(p)
        total.update(rng.choice(qs.WORDS) for _ in range(words))
    return "".join(f"{w}\t{n}\n" for w, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def test_quickstart_local_matches_single_process_answer(data_root):
    done = python(QUICKSTART, "--data-root", data_root, "-n", "5", "-w", "3000", check=True)
    assert "counted 15,000 words" in done.stdout
    assert word_counts(data_root) == expected_counts(5, 3000)
    assert "succeeded" in done.stderr and "job directory" in done.stderr


def test_rerun_reuses_every_finished_task_and_fresh_runs_again(data_root):
    python(QUICKSTART, "--data-root", data_root, "-n", "4", "-w", "100", check=True)
    again = python(QUICKSTART, "--data-root", data_root, "-n", "4", "-w", "100", check=True)
    assert "0 tasks ran" in again.stderr and "9 reused" in again.stderr
    assert all(n == 1 for n in ok_counts(data_root).values())
    fresh = python(QUICKSTART, "--data-root", data_root, "-n", "4", "-w", "100", "--fresh", check=True)
    assert "9 tasks ran" in fresh.stderr
    assert glob.glob(os.path.join(job_dir(data_root), "journal.log.*.old"))


def test_user_short_flags_and_input_paths(tmp_path, data_root):
    for i in range(3):
        (tmp_path / f"t{i}.txt").write_text("to be or not to be\n" * (i + 1))
    done = python(QUICKSTART, "--data-root", data_root, "-n", "2", "-i", str(tmp_path / "t*.txt"), check=True)
    assert "counted 36 words" in done.stdout
    assert word_counts(data_root).splitlines()[:2] == ["be\t12", "to\t12"]


def test_missing_input_is_one_line_error(tmp_path, data_root):
    done = python(QUICKSTART, "--data-root", data_root, "-i", str(tmp_path / "nothing*.txt"))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("mpipipe: error: no file matches") or "no file matches" in done.stderr
    assert "Traceback" not in done.stderr


def test_dry_run_prints_plan_and_platform_and_runs_nothing(data_root):
    done = python(QUICKSTART, "--data-root", data_root, "--dry-run", check=True)
    assert "plan: 3 nodes, 17 tasks" in done.stdout
    assert "platform: local" in done.stdout and "auto-detected" in done.stdout
    assert not os.path.exists(data_root)


def test_help_lists_user_and_builtin_flags():
    done = python(QUICKSTART, "--help", check=True)
    for flag in ("--npartitions", "--input_paths", "--platform", "--num-executors", "--job-id", "--data-root",
                 "--max-retries", "--fail-fast", "--fresh", "--dry-run", "--log-level", "--debug"):
        assert flag in done.stdout


@pytest.mark.parametrize("mode", ["exception", "exit", "segv", "sigkill"])
def test_failed_attempt_is_retried_and_job_succeeds(mode, data_root):
    done = python(FLAKY, "--data-root", data_root, "--mode", mode, "--fail-partition", "3", "--fail-attempts", "1",
                  "--num-executors", "2", check=True)
    assert "total=285" in done.stdout
    assert "1 retried" in done.stderr
    recs = records(data_root)
    failed = [r for r in recs if r.get("s") == "failed"]
    assert [(r["n"], r["p"], r["a"]) for r in failed] == [("square", 3, 0)]
    assert os.path.exists(failed[0]["log"][0])


@pytest.mark.parametrize("mode", ["exit", "sigkill"])
def test_a_worker_dying_among_tiny_tasks_fails_only_the_task_it_was_running(mode, data_root):
    # tiny tasks are sent in batches and their results come back in frames of several: the worker dies
    # holding finished results it has not written; those tasks run again, only the one it died in failed
    n, bad = 3000, 2500
    done = python(FLAKY, "--data-root", data_root, "--mode", mode, "--fail-partition", str(bad), "--fail-attempts", "1",
                  "-n", str(n), "--num-executors", "1", check=True)
    assert f"total={sum(p * p for p in range(n))}" in done.stdout
    recs = records(data_root)
    failed = [(r["n"], r["p"], r["a"]) for r in recs if r.get("s") == "failed"]
    assert failed == [("square", bad, 0)]
    ok = [r for r in recs if r.get("s") == "ok" and r["n"] == "square"]
    assert sorted(r["p"] for r in ok) == list(range(n))  # each partition journaled once
    assert {r["p"]: r["a"] for r in ok if r["a"]} == {bad: 1}


@pytest.mark.parametrize("mode,expect", [
    ("exception", "ValueError: bad value in partition 3"),
    ("exit", "exited with code 3"),
    ("segv", "killed by SIGSEGV (segmentation fault)"),
    ("sigkill", "killed by SIGKILL"),
])
def test_permanent_failure_names_node_partition_attempts_rank_and_log(mode, expect, data_root):
    done = python(FLAKY, "--data-root", data_root, "--mode", mode, "--fail-partition", "3", "--fail-attempts", "-1",
                  "--max-retries", "1", "--num-executors", "2")
    assert done.returncode == 1
    err = done.stderr
    assert "task square[3] failed after 2 attempt(s)" in err
    assert expect in err
    assert "attempt 1, rank " in err and " of 3 on " in err
    log_line = [ln for ln in err.splitlines() if ln.startswith("--- log: ")][0]
    log_path = log_line[len("--- log: "):]
    assert os.path.exists(log_path)
    with open(log_path) as f:
        assert "about to fail partition 3" in f.read()
    if mode == "exception":
        assert 'flaky.py", line' in err  # the user's frame, with its traceback
    # the other partitions finished, the sum over all did not run, and nothing looks complete
    assert not glob.glob(os.path.join(job_dir(data_root), "outputs", "total", "part-*"))
    assert not glob.glob(os.path.join(job_dir(data_root), "outputs", "square", "part-00003"))
    assert len(glob.glob(os.path.join(job_dir(data_root), "outputs", "square", "part-*"))) == 9


def test_fail_fast_stops_at_first_permanent_failure(data_root):
    done = python(FLAKY, "--data-root", data_root, "--mode", "exception", "--fail-partition", "0", "--fail-attempts",
                  "-1", "--max-retries", "0", "--fail-fast", "-n", "200", "--sleep", "0.01", "--num-executors", "1")
    assert done.returncode == 1
    assert len(glob.glob(os.path.join(job_dir(data_root), "outputs", "square", "part-*"))) < 199


def test_same_job_directory_twice_at_once_is_refused(data_root):
    import subprocess
    import sys
    from helpers import env_for_tests, kill_group, wait_for

    first = subprocess.Popen([sys.executable, FLAKY, "--data-root", data_root, "-n", "4", "--sleep", "3",
                              "--num-executors", "1"], env=env_for_tests(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: glob.glob(os.path.join(data_root, "*", "journal.log")), 30, "the first run to start")
        second = python(FLAKY, "--data-root", data_root, "-n", "4", "--sleep", "3", "--num-executors", "1")
        assert second.returncode == 2
        assert "is in use by pid" in second.stderr and "Traceback" not in second.stderr
    finally:
        kill_group(first)
