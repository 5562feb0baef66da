"""Injected faults (--inject-faults) in a data pipeline: every kind on every first attempt, and a mix of all
kinds, locally and under mpiexec. The job succeeds, the journal holds exactly the failed attempts the fault
plan predicts, and the output's rows are those of a fault-free run. A memory failure on a node that states
its memory is retried with twice the memory.

All runs of this module start at once in a small background pool (fixture `runs`); each is its own process
group with a timeout (helpers.run).
"""
import os
import re
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from fault_tools import (HAS_MPIEXEC, assert_each_task_once, assert_nothing_half_done, expected_checksum, job_argv,
                         journal, output_checksum, print_keys, run_job, summary_counts, the_job_dir, write_inputs)
from mpipipe.execution.faults import KINDS, FaultPlan

MiB = 1 << 20
# how each kind shows in a failed attempt's journal record
SIGNS = {
    "exception": "InjectedFault: injected fault: exception",
    "exit": "exited with code 3",
    "segfault": "killed by SIGSEGV",
    "kill": "killed by SIGKILL",
    "oom": "MemoryError",
}


def kind_of(error):
    found = [k for k, sign in SIGNS.items() if sign in error]
    assert len(found) == 1, error
    return found[0]


def mixed_seed(keys):
    """A seed under which, at rate 0.5, every kind strikes at least one task (sink aside: its key names the
    output folder, which differs between runs)."""
    plain = [k for name, ks in keys.items() if name != "sink" for k in ks]
    for seed in range(1000):
        plan = FaultPlan(0.5, KINDS, seed)
        if {plan.choose(k, 0) for k in plain} >= set(KINDS):
            return seed
    raise AssertionError("no seed strikes with every kind")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    inputs, dims = write_inputs(str(base / "data"))

    def job(name, *extra, mpi=None):
        root, out = str(base / name / "jobs"), str(base / name / "out")
        done = run_job(job_argv(inputs, dims, out, root, *extra, mpi=mpi), check=False)
        return done, root, out

    keys = print_keys(inputs, dims, str(base / "x" / "out"))
    seed = mixed_seed(keys)
    mixed = f"rate=0.5,kinds={'+'.join(KINDS)},seed={seed}"
    pool = ThreadPoolExecutor(4)
    futures = {"clean": pool.submit(job, "clean", "--num-executors", "2")}
    for kind in KINDS:
        extra = ("--duck-oom",) if kind == "oom" else ()
        futures[kind] = pool.submit(job, kind, "--num-executors", "2", "--inject-faults",
                                    f"rate=1,kinds={kind},attempts=1", *extra)
    futures["mixed-local"] = pool.submit(job, "mixed-local", "--num-executors", "2", "--inject-faults", mixed)
    if HAS_MPIEXEC:
        futures["mixed-mpi"] = pool.submit(job, "mixed-mpi", "--inject-faults", mixed, mpi=3)
    try:
        yield {"futures": futures, "inputs": inputs, "dims": dims, "seed": seed}
    finally:
        pool.shutdown(wait=True)


def result(runs, name):
    done, root, out = runs["futures"][name].result()
    assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done, root, out


def test_fault_free_run_matches_duckdb(runs):
    done, root, out = result(runs, "clean")
    assert output_checksum(out) == expected_checksum(runs["inputs"], runs["dims"])
    recs = journal(the_job_dir(root))
    assert not [r for r in recs if r.get("s") == "failed"]
    assert summary_counts(done.stderr)["retried"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_first_attempt_fails_and_the_job_still_succeeds(kind, runs):
    done, root, out = result(runs, kind)
    job_dir = the_job_dir(root)
    recs = journal(job_dir)
    oks = [r for r in recs if r.get("s") == "ok"]
    failed = [r for r in recs if r.get("s") == "failed"]
    assert_each_task_once(recs)
    tasks = len(oks)
    assert tasks == 23 + (kind == "oom")  # the pipeline's tasks (+ duck_oom)
    # every task failed once, on its first attempt, the way asked, and succeeded on its second
    assert sorted(r["k"] for r in failed) == sorted(r["k"] for r in oks)
    assert {r["a"] for r in failed} == {0} and {r["a"] for r in oks} == {1}
    for r in failed:
        if r["n"] == "duck_oom":  # DuckDB runs out of memory before the injected fault can strike
            assert "OutOfMemoryException" in r["e"], r
        else:
            assert kind_of(r["e"]) == kind, r
        assert r.get("log") and os.path.exists(r["log"][0]), r
    counts = summary_counts(done.stderr)
    assert counts == {"ran": tasks, "reused": 0, "retried": tasks, "failed": 0}
    # the rows are those of the fault-free run
    assert output_checksum(out) == output_checksum(result(runs, "clean")[2])
    assert_nothing_half_done(job_dir, out)
    # only a memory failure asks for more memory next time
    mem = sorted((r["p"], r["v"]["attempt"], r["v"]["memory"]) for r in oks if r["n"] == "mem")
    grown = 512 * MiB if kind == "oom" else 256 * MiB
    assert mem == [(0, 1, grown), (1, 1, grown)]


def test_duckdb_out_of_memory_is_retried_with_twice_the_memory_limit(runs):
    """duck_oom (SqlEngineNode, memory="256MiB") needs more than DuckDB's 256 MB: its second attempt gets twice
    the memory, and DuckDB runs with that limit (the query records it in its output)."""
    _done, root, _out = result(runs, "oom")
    job_dir = the_job_dir(root)
    recs = [r for r in journal(job_dir) if r.get("n") == "duck_oom"]
    assert [(r["a"], r["s"]) for r in recs] == [(0, "failed"), (1, "ok")]
    first_limit = float(re.search(r"/([\d.]+) MiB used", recs[0]["e"]).group(1))
    (row,) = duckdb.sql(f"SELECT n, memory_limit FROM read_parquet('{recs[1]['o']}/*.parquet')").fetchall()
    assert row[0] == 16_000_000
    second_limit = float(row[1].split()[0])
    assert row[1].endswith("MiB") and second_limit == pytest.approx(2 * first_limit, rel=0.01), (first_limit, row)
    with open(os.path.join(job_dir, "logs", "rank-0.log")) as f:
        log = f.read()
    assert "duck_oom[0] ran out of memory: the next attempt asks for cpu(mem=512MiB" in log
    assert "mem[0] ran out of memory: the next attempt asks for cpu(mem=512MiB" in log


def check_mixed(runs, name, ranks):
    done, root, out = result(runs, name)
    job_dir = the_job_dir(root)
    recs = journal(job_dir)
    assert_each_task_once(recs)
    oks = {r["k"]: r for r in recs if r.get("s") == "ok"}
    plan = FaultPlan(0.5, KINDS, runs["seed"])
    predicted = {k: plan.choose(k, 0) for k in oks if plan.choose(k, 0)}
    observed = {r["k"]: kind_of(r["e"]) for r in recs if r.get("s") == "failed"}
    assert observed == predicted  # the same attempts fail the same way on every platform
    assert set(observed.values()) == set(KINDS)
    assert all(oks[k]["a"] == (1 if k in predicted else 0) for k in oks)
    assert summary_counts(done.stderr)["retried"] == len(predicted)
    assert {r["r"] for r in oks.values()} <= set(ranks)
    assert output_checksum(out) == output_checksum(result(runs, "clean")[2])
    assert_nothing_half_done(job_dir, out)


def test_mixed_faults_local(runs):
    check_mixed(runs, "mixed-local", {1, 2})


@pytest.mark.mpi
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_mixed_faults_under_mpiexec(runs):
    check_mixed(runs, "mixed-mpi", {1, 2})


# --- one attempt numbering everywhere --------------------------------------------------------------------

def attempt_numbers_shown(job_dir, node, p):
    """The attempt numbers of node[p] as each place shows them: the journal, the worker logs' markers, the
    failed attempts' log files (name and marker), `mpipipe logs -t`, `mpipipe status` and the report."""
    import glob as globmod

    from helpers import BIN, run

    mpipipe = os.path.join(BIN, "mpipipe")
    recs = [r for r in journal(job_dir) if r.get("n") == node and r.get("p") == p]
    markers = set()
    for path in globmod.glob(os.path.join(job_dir, "logs", "rank-*", "worker-*.log")):
        with open(path) as f:
            markers |= {int(a) for a in re.findall(rf"^--- {node}\[{p}\] attempt (\d+) ---$", f.read(), re.M)}
    files = {}
    for path in globmod.glob(os.path.join(job_dir, "logs", "tasks", node, f"p{p}.a*.log")):
        with open(path) as f:
            inside = re.findall(rf"^--- {node}\[{p}\] attempt (\d+) ---$", f.read(), re.M)
        files[int(re.search(r"\.a(\d+)\.log$", path).group(1))] = [int(a) for a in inside]
    logs_t = run([mpipipe, "logs", job_dir, "-t", f"{node}[{p}]"], check=True, timeout=60).stdout
    got = run([mpipipe, "status", job_dir], timeout=60)
    assert got.returncode in (0, 1), got.stderr  # the job's state: succeeded, or failed
    status = got.stdout
    run([mpipipe, "report", job_dir], check=True, timeout=60)
    with open(os.path.join(job_dir, "report.html")) as f:
        report = f.read()
    return {
        "journal": [(r["a"], r["s"]) for r in recs],
        "markers": sorted(markers),
        "files": files,
        "logs -t": [(int(a), s) for a, s in re.findall(rf"--- {node}\[{p}\] attempt (\d+): (\w+)", logs_t)],
        "status": re.findall(rf"last error \[{p}\] attempt (\d+): .*/p{p}\.a(\d+)\.log\)", status),
        "report": report,
    }


def test_attempt_numbers_agree_everywhere(tmp_path):
    """Attempts are numbered from 0 (task.attempt's numbering) in the failure message, `mpipipe status`, the
    log files' names and markers, `mpipipe logs -t` and the report. square[2] fails twice, then succeeds;
    with no attempt that succeeds it fails for good after three."""
    from helpers import FLAKY, python

    flaky = ("-n", "4", "--mode", "exception", "--fail-partition", "2", "--max-retries", "2", "--num-executors", "2")
    ok_root = str(tmp_path / "recovers")
    python(FLAKY, "--data-root", ok_root, "--fail-attempts", "2", *flaky, check=True)
    shown = attempt_numbers_shown(the_job_dir(ok_root), "square", 2)
    assert shown["journal"] == [(0, "failed"), (1, "failed"), (2, "ok")]
    assert shown["markers"] == [0, 1, 2]
    assert shown["files"] == {0: [0], 1: [1]}  # each failed attempt's own log: p2.aA.log, headed "attempt A"
    assert shown["logs -t"] == [(0, "failed"), (1, "failed"), (2, "ok")]
    assert "ok on attempt&nbsp;2" in shown["report"] and ">attempt 0, 1</div>" in shown["report"]
    assert 'href="logs/tasks/square/p2.a1.log"' in shown["report"]  # the last failed attempt's log

    bad_root = str(tmp_path / "fails")
    done = python(FLAKY, "--data-root", bad_root, "--fail-attempts", "-1", *flaky)
    assert done.returncode == 1, done.stderr
    jd = the_job_dir(bad_root)
    assert "task square[2] failed after 3 attempt(s): ValueError: bad value in partition 2" in done.stderr
    (heading,) = re.findall(r"^--- task square\[2\], attempt (\d+), rank \d of 3 on .* ---$", done.stderr, re.M)
    (logged,) = re.findall(r"^--- log: .*/logs/tasks/square/p2\.a(\d+)\.log$", done.stderr, re.M)
    shown = attempt_numbers_shown(jd, "square", 2)
    assert shown["journal"] == [(0, "failed"), (1, "failed"), (2, "failed")]
    assert (int(heading), int(logged)) == (2, 2)
    assert shown["markers"] == [0, 1, 2] and shown["files"] == {0: [0], 1: [1], 2: [2]}
    assert shown["logs -t"] == [(0, "failed"), (1, "failed"), (2, "failed")]
    assert shown["status"] == [("2", "2")]
    assert ">attempt 0, 1, 2</div>" in shown["report"] and 'href="logs/tasks/square/p2.a2.log"' in shown["report"]
