"""A damaged journal, then the same command again (real runs of tests/pipelines/data_job.py).

A torn last record, a zero-length journal and garbage in the middle are what crashes and bad disks leave:
the run warns, re-runs the tasks whose records are gone and nothing else, and writes the same rows. A
journal written by another version of the plan (a node's code changed, an input file changed) is refused
with one line that offers --fresh and --allow-changes; --allow-changes re-runs only the changed nodes and
what depends on them. The scenarios run at once in a small background pool.
"""
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fault_tools import (assert_each_task_once, assert_nothing_half_done, expected_checksum, job_argv, journal,
                         one_error_line, output_checksum, run_job, summary_counts, write_dims, write_inputs)
from mpipipe.execution.journal import OK, RUN, kind

TASKS = 23


def first_run(base, name, inputs, dims, *extra):
    root, out = str(base / name / "jobs"), str(base / name / "out")
    argv = job_argv(inputs, dims, out, root, "--num-executors", "2", "--job-id", name, *extra)
    run_job(argv)
    job_dir = os.path.join(root, name)
    return argv, job_dir, out


def lines_of(job_dir):
    with open(os.path.join(job_dir, "journal.log"), "rb") as f:
        return f.read().splitlines(keepends=True)


def write_lines(job_dir, lines):
    with open(os.path.join(job_dir, "journal.log"), "wb") as f:
        f.write(b"".join(lines))


def ok_lines(lines):
    return [i for i, line in enumerate(lines) if b'"s":"ok"' in line]


def torn(base, inputs, dims):
    argv, job_dir, out = first_run(base, "torn", inputs, dims)
    lines = lines_of(job_dir)
    last = ok_lines(lines)[-1]
    lost = lines[last]
    write_lines(job_dir, lines[:last] + [lost[: len(lost) // 2]])  # a crash in the middle of a write
    return argv, job_dir, out, [lost], run_job(argv)


def zero_length(base, inputs, dims):
    argv, job_dir, out = first_run(base, "zero", inputs, dims)
    write_lines(job_dir, [])
    return argv, job_dir, out, None, run_job(argv)


def garbage(base, inputs, dims):
    argv, job_dir, out = first_run(base, "garbage", inputs, dims)
    lines = lines_of(job_dir)
    oks = ok_lines(lines)
    hit = oks[len(oks) // 2]
    lost = lines[hit]
    lines[hit] = bytes((b * 7 + 3) % 256 for b in lost[:-1]).replace(b"\n", b"?") + b"\n"  # a bad sector
    lines.insert(oks[2], b"\x00\x01 not a record at all \xff\n")
    write_lines(job_dir, lines)
    return argv, job_dir, out, [lost], run_job(argv)


def changed_code(base, inputs, dims):
    argv, job_dir, out = first_run(base, "code", inputs, dims)
    before = output_checksum(out)
    refused = run_job(argv + ["--variant", "b"], check=False)
    unchanged = output_checksum(out) == before
    allowed = run_job(argv + ["--variant", "b", "--allow-changes"])
    return job_dir, out, refused, unchanged, allowed


def changed_data(base, inputs, dims):
    own = str(base / "data-dims.parquet")
    shutil.copyfile(dims, own)
    argv, job_dir, out = first_run(base, "data", inputs, own)
    time.sleep(0.01)  # a new mtime even on coarse clocks
    write_dims(own, 500, prefix="M")  # other labels: the file's size and time change
    refused = run_job(argv, check=False)
    allowed = run_job(argv + ["--allow-changes"])
    return job_dir, out, refused, own, allowed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("journal")
    inputs, dims = write_inputs(str(base / "input"))
    pool = ThreadPoolExecutor(4)
    futures = {f.__name__: pool.submit(f, base, inputs, dims) for f in (torn, zero_length, garbage, changed_code,
                                                                        changed_data)}
    try:
        yield {"futures": futures, "inputs": inputs, "dims": dims}
    finally:
        pool.shutdown(wait=True)


def check_recovered(runs, name, lost_records, warned):
    argv, job_dir, out, lost, again = runs["futures"][name].result()
    counts = summary_counts(again.stderr)
    if warned:
        assert f"journal.log: skipped {warned} damaged record(s)" in again.stderr
    recs = journal(job_dir)
    assert_each_task_once(recs)
    assert len({r["k"] for r in recs if kind(r) == OK}) == TASKS
    assert counts["ran"] == lost_records and counts["reused"] == TASKS - lost_records
    if lost:  # exactly the tasks whose records were lost ran again
        import json

        keys = {json.loads(line[9:])["k"] for line in lost}
        runs_at = [i for i, r in enumerate(recs) if kind(r) == RUN]
        assert {r["k"] for r in recs[runs_at[-1]:] if kind(r) == OK} == keys
    assert output_checksum(out) == expected_checksum(runs["inputs"], runs["dims"])
    assert_nothing_half_done(job_dir, out)


def test_torn_last_record_is_skipped_and_its_task_runs_again(runs):
    check_recovered(runs, "torn", 1, warned=1)


def test_zero_length_journal_runs_everything_again(runs):
    check_recovered(runs, "zero_length", TASKS, warned=0)


def test_garbage_in_the_middle_is_skipped(runs):
    check_recovered(runs, "garbage", 1, warned=2)


def new_ok_nodes(job_dir):
    recs = journal(job_dir)
    last_run = max(i for i, r in enumerate(recs) if kind(r) == RUN)
    return sorted({r["n"] for r in recs[last_run:] if kind(r) == OK}), recs


def test_changed_code_is_refused_then_allowed(runs):
    job_dir, out, refused, unchanged, allowed = runs["futures"]["changed_code"].result()
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "the plan changed since job code was journaled: node(s) 'enrich', 'sink'" in line
    assert "--fresh" in line and "--allow-changes" in line
    assert unchanged  # the refused run touched nothing
    nodes, recs = new_ok_nodes(job_dir)
    assert nodes == ["enrich", "sink"]  # the changed node and what depends on it
    assert summary_counts(allowed.stderr) == {"ran": 5, "reused": TASKS - 5, "retried": 0, "failed": 0}
    assert output_checksum(out) == expected_checksum(runs["inputs"], runs["dims"], variant="b")
    assert_nothing_half_done(job_dir, out)


def test_changed_input_data_is_refused_then_allowed(runs):
    job_dir, out, refused, dims, allowed = runs["futures"]["changed_data"].result()
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "the plan changed since job data was journaled: node(s) 'dims', 'joined', 'enrich', 'sink'" in line
    assert "(code, options or input data)" in line and "--fresh" in line
    nodes, _recs = new_ok_nodes(job_dir)
    assert nodes == ["dims", "enrich", "joined", "sink"]  # src, split, by_key, groups and mem are reused
    assert summary_counts(allowed.stderr)["ran"] == 1 + 4 + 4 + 1
    assert output_checksum(out) == expected_checksum(runs["inputs"], dims)
    assert_nothing_half_done(job_dir, out)
