"""--speculate: a straggler (the first copy of enrich[0] sleeps a minute; a speculative copy does not) does
not hold the job up. The job ends long before the slow copy would, its rows are right, the journal names the
speculative copy's output, the slow copy's output is gone, and the summary counts the speculation. Also
two runs in one process, where the first run's slow copy outlives that run.
"""
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fault_tools import (HAS_MPIEXEC, assert_each_task_once, assert_nothing_half_done, expected_checksum, job_argv,
                         journal, output_checksum, run_job, the_job_dir, write_inputs)
from helpers import REPO

SLOW = 60  # seconds the first copy of enrich[0] would take
BOUND = 30  # the whole command must be done well before that
TWO_RUNS = os.path.join(REPO, "tests", "pipelines", "straggler_runs.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("stragglers")
    inputs, dims = write_inputs(str(base / "data"))

    def job(name, *extra, mpi=None):
        root, out, report = str(base / name / "jobs"), str(base / name / "out"), str(base / name / "report.json")
        t0 = time.monotonic()
        done = run_job(job_argv(inputs, dims, out, root, "--speculate", "--slow-first", str(SLOW), "--report",
                                report, *extra, mpi=mpi), timeout=BOUND + 30, check=False)
        return done, time.monotonic() - t0, root, out, report

    def two_runs():
        root = str(base / "two-runs" / "jobs")
        t0 = time.monotonic()
        done = run_job([sys.executable, TWO_RUNS, "--speculate", "--num-executors", "2", "--data-root", root,
                        "--slow", "4", "--long", "2"], timeout=90, check=False)
        return done, time.monotonic() - t0, root

    pool = ThreadPoolExecutor(3)
    futures = {"local": pool.submit(job, "local", "--num-executors", "2"), "two-runs": pool.submit(two_runs)}
    if HAS_MPIEXEC:
        futures["mpi"] = pool.submit(job, "mpi", mpi=3)
    try:
        yield {"futures": futures, "expected": expected_checksum(inputs, dims)}
    finally:
        pool.shutdown(wait=True)


def check_speculation(runs, name):
    done, elapsed, root, out, report = runs["futures"][name].result()
    assert done.returncode == 0, done.stderr
    assert elapsed < BOUND, f"the job waited for its straggler ({elapsed:.1f}s)"
    assert output_checksum(out) == runs["expected"]
    job_dir = the_job_dir(root)
    recs = journal(job_dir)
    assert_each_task_once(recs)
    (first,) = [r for r in recs if r.get("s") == "ok" and r["n"] == "enrich" and r["p"] == 0]
    assert first["o"].endswith("/outputs/enrich/part-00000.speculative")  # the copy won
    assert not os.path.exists(os.path.join(job_dir, "outputs", "enrich", "part-00000"))  # the slow one left nothing
    assert_nothing_half_done(job_dir, out)
    m = re.search(r"speculation: (\d+) copy\(ies\) of straggling tasks started, (\d+) finished first", done.stderr)
    assert m, done.stderr
    started, won = int(m.group(1)), int(m.group(2))
    assert started >= won >= 1
    with open(report) as f:
        stats = json.load(f)["stats"]
    assert (stats["speculated"], stats["speculation_won"]) == (started, won)


def test_straggler_is_overtaken_by_a_speculative_copy_local(runs):
    check_speculation(runs, "local")


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_straggler_is_overtaken_by_a_speculative_copy_under_mpiexec(runs):
    check_speculation(runs, "mpi")


def test_a_slow_copy_that_outlives_its_run_is_not_taken_for_a_task_of_the_next_run(runs):
    done, elapsed, root = runs["futures"]["two-runs"].result()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["run1"] == [0, 1, 2, 3]
    assert out["run2"] == ["long"]
    assert out["stats1"]["speculation_won"] >= 1
    job_dir = out["job_dir"]
    recs = journal(job_dir)
    assert_each_task_once(recs)
    (rec,) = [r for r in recs if r.get("s") == "ok" and r["n"] == "long"]
    assert rec["o"].endswith("/outputs/long/part-00000") and rec["v"] == "long"
    with open(os.path.join(rec["o"], "value.txt")) as f:
        assert f.read() == "long"
    # the first run's slow copies came back during the second run: their outputs are gone
    assert_nothing_half_done(job_dir)
    assert elapsed < 60
