"""Modules on world launchers: arrays in order, the result cache, concurrency of gathered modules, failures,
checkpoints of killed runs."""
import json
import os
import subprocess
import sys
import time

import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python
from mpipipe.execution.journal import read_records

JOB = os.path.join(REPO, "tests", "pipelines", "modules_job.py")
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))


def result_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def journal(data_root):
    recs = []
    for name in os.listdir(data_root):
        path = os.path.join(data_root, name, "journal.log")
        if os.path.exists(path):
            recs.extend(read_records(path))
    return recs


def task_spans(recs, prefix):
    return [(r["t0"], r["t1"]) for r in recs if r.get("s") == "ok" and r["n"].startswith(prefix)]


def args(tmp_path, *extra):
    return ("--data-root", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "cache"), *extra)


def check_array(done, n):
    assert done.returncode == 0, done.stderr
    results = result_line(done.stdout)["results"]
    assert [r["index"] for r in results] == list(range(n))
    assert [r["square"] for r in results] == [(10 * i) ** 2 for i in range(n)]
    return results


@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_array_of_100_on_mpiexec_then_all_cached(tmp_path):
    done = mpiexec(4, JOB, "--platform", "mpi", "--shards", "100", *args(tmp_path), timeout=150)
    results = check_array(done, 100)
    assert len({r["pid"] for r in results}) >= 2  # spread over the executor ranks' workers
    assert "100 run(s), 0 found in the cache, 100 to run on mpi (3 executor(s))" in done.stderr
    ran = [r for r in journal(tmp_path / "jobs") if r.get("s") == "ok"]
    assert len(ran) == 100 and {r["r"] for r in ran} <= {1, 2, 3}

    again = mpiexec(4, JOB, "--platform", "mpi", "--shards", "100", *args(tmp_path), timeout=150)
    assert check_array(again, 100) == results  # the same results, read back from the cache
    assert "100 run(s), all found in the cache" in again.stderr
    assert len([r for r in journal(tmp_path / "jobs") if r.get("s") == "ok"]) == 100  # nothing ran again


@pytest.mark.timeout(120)
def test_array_locally_with_cache_invalidation(tmp_path):
    local = ("--platform", "local", "--num-executors", "2", "--shards", "12")
    first = check_array(python(JOB, *local, *args(tmp_path)), 12)
    # a transient attribute does not change the key
    same = python(JOB, *local, "--verbose", *args(tmp_path))
    assert check_array(same, 12) == first and "12 run(s), all found in the cache" in same.stderr
    # a new version() runs everything again
    bumped = python(JOB, *local, "--version", "2", *args(tmp_path))
    assert "12 run(s), 0 found in the cache, 12 to run" in bumped.stderr
    assert [r["square"] for r in check_array(bumped, 12)] == [r["square"] for r in first]
    # damaged cached results are run again, not trusted
    cached = sorted(os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs if f.endswith(".pkl"))
    assert len(cached) == 24  # 12 runs of each version
    for path in cached:
        with open(path, "wb") as f:
            f.write(b"not a pickle")
    again = python(JOB, *local, *args(tmp_path))
    assert [r["square"] for r in check_array(again, 12)] == [r["square"] for r in first]
    assert "12 run(s), 0 found in the cache, 12 to run" in again.stderr


@pytest.mark.timeout(120)
def test_gathered_modules_run_concurrently(tmp_path):
    # two modules of two 0.6 s runs each, four executors: run side by side, all four runs overlap;
    # one after the other, no run of one overlaps a run of the other
    done = python(JOB, "--platform", "local", "--num-executors", "4", "--mode", "gather", "--shards", "2",
                  "--sleep", "0.6", *args(tmp_path))
    assert done.returncode == 0, done.stderr
    out = result_line(done.stdout)
    assert [r["square"] for r in out["left"]] == [0, 100] == [r["square"] for r in out["right"]]
    recs = journal(tmp_path / "jobs")
    left, right = task_spans(recs, "square-left"), task_spans(recs, "square-right")
    assert len(left) == len(right) == 2
    assert min(s for s, _ in left) < max(e for _, e in right)
    assert min(s for s, _ in right) < max(e for _, e in left)
    overlapping = sum(1 for s1, e1 in left for s2, e2 in right if s1 < e2 and s2 < e1)
    assert overlapping == 4, (left, right)
    # one scheduler run served both
    assert len([r for r in recs if r.get("type") == "run"]) == 1


@pytest.mark.timeout(120)
def test_failing_shard_carries_other_results_and_the_failure(tmp_path):
    done = python(JOB, "--platform", "local", "--num-executors", "2", "--mode", "failing", "--shards", "8",
                  "--fail-index", "3", "--max-retries", "1", *args(tmp_path))
    assert done.returncode == 0, done.stderr
    out = result_line(done.stdout)
    assert out["results"][3] is None
    assert [r["square"] for i, r in enumerate(out["results"]) if i != 3] == [(10 * i) ** 2 for i in range(8) if i != 3]
    (failure,) = out["failures"]
    assert failure["index"] == 3 and failure["attempts"] == 2
    assert "ValueError: shard 3 refuses" in failure["error"]
    assert "modules_job.py" in failure["traceback"] and "refuses" in failure["traceback"]
    assert os.path.exists(failure["log"]) and "refuses" in open(failure["log"]).read()
    # the failed run is not cached; the others are
    again = python(JOB, "--platform", "local", "--num-executors", "2", "--shards", "8", *args(tmp_path))
    check_array(again, 8)
    assert "8 run(s), 7 found in the cache, 1 to run" in again.stderr


@pytest.mark.timeout(120)
def test_unhandled_module_failure_is_one_error_with_exit_1(tmp_path):
    done = python(JOB, "--platform", "local", "--num-executors", "2", "--shards", "4", "--fail-index", "2",
                  "--max-retries", "0", *args(tmp_path))
    assert done.returncode == 1
    assert "mpipipe: error: module square-a: 1 of 4 run(s) failed" in done.stderr
    assert "square-a[2] failed after 1 attempt(s): ValueError: shard 2 refuses" in done.stderr


@pytest.mark.timeout(120)
def test_array_by_reference_loads_one_element_per_run(tmp_path):
    done = python(JOB, "--platform", "local", "--num-executors", "2", "--mode", "ref", "--shards", "5",
                  *args(tmp_path))
    assert done.returncode == 0, done.stderr
    assert result_line(done.stdout)["results"] == [sum(range(i, i + 1000)) for i in range(5)]


@pytest.mark.timeout(60)
def test_module_key_is_the_same_in_every_process():
    code = ("import sys; sys.path.insert(0, %r); from modules_job import Square; from mpipipe.module import shards_of;"
            "print([s.key for s in shards_of(Square(3, verbose=%s))[0]])")
    keys = set()
    for seed, verbose in (("1", "False"), ("2", "True")):
        out = subprocess.run([sys.executable, "-c", code % (os.path.dirname(JOB), verbose)], capture_output=True,
                             text=True, timeout=50, env=env_for_tests({"PYTHONHASHSEED": seed}))
        assert out.returncode == 0, out.stderr
        keys.add(out.stdout.strip())
    assert len(keys) == 1  # hash seeds and transient attributes do not change the cache key


@pytest.mark.timeout(180)
def test_modules_example_twice_then_from_a_launcher_file(tmp_path):
    example = os.path.join(REPO, "examples", "modules.py")
    common = ("--num-executors", "2", "--data-root", str(tmp_path / "jobs"), "--out", str(tmp_path / "out"))
    first = python(example, *common, "--shards", "4", "--words", "500")
    assert first.returncode == 0, first.stderr
    assert "4000 words, " in first.stdout
    top = (tmp_path / "out" / "top_words.tsv").read_text()
    second = python(example, *common, "--shards", "4", "--words", "500")
    assert second.returncode == 0 and second.stdout == first.stdout
    assert second.stderr.count("found in the cache") == 4 and "to run" not in second.stderr
    # a launcher described in a TOML file, a value overridden with --set
    conf = tmp_path / "launchers.toml"
    conf.write_text('_target_ = "mpipipe.launchers.DynamicLauncher"\n[[launchers]]\n'
                    '_target_ = "mpipipe.DirectLauncher"\npriority = 1\n')
    third = python(example, *common, "--shards", "4", "--words", "500", "--launchers", str(conf),
                   "--set", "launchers.0.priority=5", "--cache-dir", str(tmp_path / "other-cache"))
    assert third.returncode == 0, third.stderr
    assert third.stdout == first.stdout and "to run on local" in third.stderr
    assert (tmp_path / "out" / "top_words.tsv").read_text() == top
    bad = python(example, *common, "--launchers", str(conf), "--set", "launchers.0.nosuch.x=1")
    assert bad.returncode == 2 and bad.stderr.startswith("mpipipe: error: ") and len(bad.stderr.splitlines()) == 1


@pytest.mark.timeout(120)
def test_world_launcher_on_a_platform_built_from_a_target_mapping(tmp_path):
    spec = json.dumps({"_target_": "mpipipe.platform.local:LocalPlatform", "num_executors": 3})
    done = python(JOB, "--platform-config", spec, "--shards", "6", *args(tmp_path))
    check_array(done, 6)
    assert "6 run(s), 0 found in the cache, 6 to run on local (3 executor(s))" in done.stderr


def test_an_empty_array_returns_an_empty_list_without_a_world(tmp_path, monkeypatch):
    import asyncio

    import mpipipe

    class Nothing(mpipipe.Module):
        def array(self):
            return []

        def run(self, iteration_value=None, iteration_index=0):
            raise AssertionError("never")

    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path))
    assert asyncio.run(mpipipe.WorldLauncher(platform="mpi").schedule(Nothing())) == []
    assert not os.listdir(tmp_path)  # no job directory: no world was joined


# --- checkpoints on world launchers ------------------------------------------------------------------------------

CHECKPOINT_JOB = os.path.join(REPO, "tests", "pipelines", "checkpoint_job.py")


def _starts(trace, index):
    with open(os.path.join(trace, f"{index}.log")) as f:
        return [json.loads(line)["start"] for line in f]


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_kill_9_of_an_executor_rank_then_the_runs_continue_from_their_checkpoints(tmp_path):
    import glob
    import signal

    from helpers import kill_tree, mpi_ranks, run, wait_for

    trace = str(tmp_path / "trace")
    argv = [os.path.join(BIN, "mpiexec"), "-n", "3", sys.executable, CHECKPOINT_JOB, "--platform", "mpi",
            "--data-root", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "cache"), "--trace", trace,
            "--runs", "2", "--steps", "40", "--sleep", "0.2"]
    first_log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(argv, env=env_for_tests(), start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=first_log, stderr=subprocess.STDOUT)
    first_log.close()
    try:
        # both runs (one per executor) saved a checkpoint; then a second or so more of progress
        wait_for(lambda: len(glob.glob(str(tmp_path / "cache" / "**" / "*.checkpoint"), recursive=True)) == 2, 60,
                 f"both runs to save a checkpoint; its output: {tmp_path / 'first.log'}")
        time.sleep(1.0)
        ranks = mpi_ranks(proc.pid)
        assert len(ranks) == 3, ranks
        os.kill(ranks[1], signal.SIGKILL)
        proc.wait(30)  # the world goes away with its executor
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode != 0
    assert [_starts(trace, i) for i in (0, 1)] == [[0], [0]]
    done = run(argv, timeout=120, check=True)  # the same command again
    assert result_line(done.stdout)["results"] == [{"index": i, "steps": 40} for i in range(2)]
    for i in (0, 1):  # each run continued from the step its last checkpoint recorded
        first, second = _starts(trace, i)
        assert first == 0 and 2 <= second < 40, (i, first, second)
    assert "resuming from checkpoint" in open(glob.glob(str(tmp_path / "jobs" / "*" / "logs" / "rank-*" /
                                                            "worker-0.log"))[0]).read()


@pytest.mark.timeout(60)
def test_sigterm_of_a_world_worker_saves_a_checkpoint_and_the_run_goes_on(tmp_path):
    """A world's workers leave SIGTERM to rank 0 (it stops them in order): the run saves a checkpoint and goes on."""
    code = f"""
import os, signal, sys, time
sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
from mpipipe.execution.osutil import leave_stop_signals_to_rank0
from mpipipe.launchers.base import run_shard
from mpipipe.module import shards_of
from test_slurm_launcher import Steps
leave_stop_signals_to_rank0()
module = Steps(30, {str(tmp_path)!r}, sleep=0.05)
run_shard(module, shards_of(module)[0][0], {str(tmp_path / 'result.pkl')!r})
print("finished")
"""
    proc = subprocess.Popen([sys.executable, "-c", code], env=env_for_tests(), start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "0.log"
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, 15)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "finished", err
    assert "checkpoint 1 saved (SIGTERM)" in err
    assert not os.path.exists(tmp_path / "result.pkl.checkpoint")  # the run finished: nothing left to resume
