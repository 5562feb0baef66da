"""Bad input and a bad environment, each through a real run of tests/pipelines/data_job.py: one error line
(`mpipipe: error: ...`, or argparse's for a flag), a non-zero exit, no traceback unless --debug, and nothing
left that looks like finished output: no sink folder (sinks appear whole or not at all), nothing beside it,
and under outputs/ only what committed tasks wrote.

Read-only and full disks are small tmpfs mounts (this needs root; without it those cases are skipped). Every
case runs at once in a small background pool (fixture `runs`), each command in its own session with a timeout.
"""
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from fault_tools import (HAS_MPIEXEC, assert_nothing_half_done, expected_checksum, job_argv, job_dirs, journal,
                         one_error_line, output_checksum, run_job, summary_counts, write_inputs)
from helpers import env_for_tests, kill_tree, wait_for


def mount_tmpfs(path, size, read_only=False):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return False
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, timeout=30)
    return done.returncode == 0


def unmount(path):
    if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


class Env:
    """The module's inputs and mounts."""

    def __init__(self, base):
        self.base = base
        self.inputs, self.dims = write_inputs(str(base / "small"))
        self.big, _ = write_inputs(str(base / "big"), files=2, rows=100_000, keys=10 ** 9, big_values=True)
        # a dataset with a corrupt file in the middle
        self.corrupt = str(base / "corrupt")
        shutil.copytree(self.inputs, self.corrupt)
        with open(os.path.join(self.corrupt, "f2.parquet"), "r+b") as f:
            f.truncate(1000)
        # a dataset with a FIFO among its files: reading it would wait forever for a writer
        self.fifo = str(base / "fifo")
        shutil.copytree(self.inputs, self.fifo)
        os.mkfifo(os.path.join(self.fifo, "f9.parquet"))
        # a directory where a file is expected
        self.dir_dims = str(base / "dir-dims" / "dims.parquet")
        os.makedirs(self.dir_dims)
        # a regular file where a folder is expected
        self.a_file = str(base / "a-file")
        with open(self.a_file, "w") as f:
            f.write("not a folder\n")
        self.mounts = {}
        for name, size, ro in (("ro", "1m", True), ("full-root", "2m", False), ("full-sink", "2m", False),
                               ("full-journal", "2m", False), ("full-at-start", "1m", False)):
            path = str(base / "mnt" / name)
            if mount_tmpfs(path, size, ro):
                self.mounts[name] = path
        if "full-at-start" in self.mounts:
            os.makedirs(os.path.join(self.mounts["full-at-start"], "jobs"))
            fill(os.path.join(self.mounts["full-at-start"], "filler"))

    def close(self):
        for path in self.mounts.values():
            unmount(path)


def case(env, name, *extra, inputs=None, dims=None, out=None, root=None, mpi=None, timeout=120):
    """One command; returns (Done, data root, sink folder)."""
    root = root or str(env.base / name / "jobs")
    out = out or str(env.base / name / "out")
    argv = job_argv(inputs or env.inputs, dims or env.dims, out, root, *extra, mpi=mpi)
    if not mpi and "--num-executors" not in extra:
        argv += ["--num-executors", "2"]
    return run_job(argv, timeout=timeout, check=False), root, out


def fill(path):
    """Take every free byte of a file system."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"x" * 65536)
                f.flush()
        except OSError:
            pass


def journal_on_a_full_disk(env):
    """The disk of the job directory fills up while the job runs (another process takes the space)."""
    mnt = env.mounts["full-journal"]
    root, out = os.path.join(mnt, "jobs"), str(env.base / "full-journal" / "out")
    argv = job_argv(env.inputs, env.dims, out, root, "--num-executors", "2", "--sleep", "2")
    log = str(env.base / "full-journal.log")
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=env_for_tests(), start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT)
    filler = os.path.join(mnt, "filler")
    try:
        wait_for(lambda: any(r.get("n") == "joined" for d in job_dirs(root) for r in journal(d)), 90,
                 "the job to reach its slow tasks")
        fill(filler)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    with open(log) as f:
        first = (proc.returncode, f.read())
    os.unlink(filler)
    again = run_job(argv, timeout=120, check=False)
    return first, again, root, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = Env(tmp_path_factory.mktemp("bad"))
    m = env.mounts
    cases = {
        "missing-input": lambda: case(env, "missing-input", inputs="/nonexistent/*.parquet"),
        "directory-for-a-file": lambda: case(env, "directory-for-a-file", dims=env.dir_dims),
        "fifo-input": lambda: case(env, "fifo-input", inputs=env.fifo, timeout=60),
        "corrupt-parquet": lambda: case(env, "corrupt-parquet", "--max-retries", "0", inputs=env.corrupt),
        "bad-sql": lambda: case(env, "bad-sql", "--sql", "SELEC key FROM {0}"),
        "bad-sql-debug": lambda: case(env, "bad-sql-debug", "--sql", "SELEC key FROM {0}", "--debug"),
        "sql-fails-at-run-time": lambda: case(
            env, "sql-fails-at-run-time", "--max-retries", "0",
            "--sql", "SELECT key, count(*) AS n, sum(CAST('x' || val AS BIGINT)) AS total FROM {0} GROUP BY key"),
        "placeholder-without-input": lambda: case(
            env, "placeholder-without-input", "--sql",
            "SELECT key, count(*) AS n, sum(val) AS total FROM {1} GROUP BY key"),
        "unknown-flag": lambda: case(env, "unknown-flag", "--bogus"),
        "bad-platform": lambda: case(env, "bad-platform", "--platform", "nosuch.module:Thing"),
        "bad-requirement": lambda: case(env, "bad-requirement", "--mem-resources", "cpu(cores=2"),
        "unservable-requirement": lambda: case(env, "unservable-requirement", "--mem-resources", "cpu(mem=100TiB)"),
        "data-root-under-a-file": lambda: case(env, "data-root-under-a-file", root=os.path.join(env.a_file, "jobs")),
    }
    if HAS_MPIEXEC:
        cases["world-too-small"] = lambda: case(env, "world-too-small", "--num-executors", "3", mpi=2)
    if "ro" in m:
        cases["read-only-data-root"] = lambda: case(env, "read-only-data-root", root=os.path.join(m["ro"], "jobs"))
        cases["read-only-sink"] = lambda: case(env, "read-only-sink", out=os.path.join(m["ro"], "out"))
    if "full-at-start" in m:
        cases["data-root-full-from-the-start"] = lambda: case(env, "data-root-full-from-the-start",
                                                              root=os.path.join(m["full-at-start"], "jobs"))
    if "full-root" in m:
        cases["full-data-root"] = lambda: case(env, "full-data-root", "--max-retries", "1", inputs=env.big,
                                               root=os.path.join(m["full-root"], "jobs"))
    if "full-sink" in m:
        cases["full-sink"] = lambda: case(env, "full-sink", "--max-retries", "1", inputs=env.big,
                                          out=os.path.join(m["full-sink"], "out"))
    if "full-journal" in m:
        cases["full-journal"] = lambda: journal_on_a_full_disk(env)
    pool = ThreadPoolExecutor(4)
    futures = {name: pool.submit(fn) for name, fn in cases.items()}
    try:
        yield {"futures": futures, "env": env}
    finally:
        pool.shutdown(wait=True)
        env.close()


def outcome(runs, name, returncode):
    if name not in runs["futures"]:
        pytest.skip(f"{name}: cannot mount a tmpfs here (needs root and mount permission)"
                    if name.startswith(("read-only", "full", "data-root-full"))
                    else f"{name}: the virtualenv has no mpiexec")
    done, root, out = runs["futures"][name].result()
    assert done.returncode == returncode, f"{name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert not os.path.exists(out), f"{name}: the sink folder {out} exists"
    for job_dir in job_dirs(root) if os.path.isdir(root) else []:
        assert_nothing_half_done(job_dir, out)
    return done


BUILD_TIME = [  # (case, text of the one error line)
    ("missing-input", "node 'src': input path '/nonexistent/*.parquet' matches no file"),
    ("directory-for-a-file", "dims.parquet' matches no file (a directory is searched for .parquet, .parq, .pq files)"),
    ("fifo-input", "f9.parquet is a named pipe (FIFO); inputs must be regular files"),
    ("bad-sql", "node 'groups': SQL does not parse: Parser Error: syntax error at or near \"SELEC\""),
    ("placeholder-without-input", "node 'groups': the SQL refers to {1} but the node has 1 input(s) ({0}={by_key})"),
    ("bad-platform", "nosuch.module"),
    ("unservable-requirement", "node 'mem' needs cpu(mem=100TiB), which no executor can serve; executors: "),
    ("read-only-data-root", "Read-only file system; choose a writable --data-root"),
    ("read-only-sink", "node 'sink': cannot write to "),
    ("data-root-full-from-the-start", "No space left on device; free some space or choose another --data-root"),
]


@pytest.mark.parametrize("name,text", BUILD_TIME, ids=[c for c, _ in BUILD_TIME])
def test_one_line_error_before_anything_runs(runs, name, text):
    done = outcome(runs, name, 2)
    assert text in one_error_line(done)


def test_data_root_under_a_regular_file(runs):
    line = one_error_line(outcome(runs, "data-root-under-a-file", 2))
    assert "cannot create the job directory" in line and "Not a directory; choose a writable --data-root" in line


def test_bad_requirement_string_shows_where_with_a_caret(runs):
    done = outcome(runs, "bad-requirement", 2)
    line = one_error_line(done)
    assert "node 'mem': resources: expected ',' or ')' in cpu(...) (at position 11)" in line
    lines = done.stderr.splitlines()
    i = lines.index(line)
    assert lines[i + 1].strip() == "cpu(cores=2" and lines[i + 2].strip() == "^"
    assert lines[i + 2].index("^") == lines[i + 1].index("c") + 11


def test_unknown_flag(runs):
    done = outcome(runs, "unknown-flag", 2)
    assert done.stderr.splitlines()[-1].endswith("error: unrecognized arguments: --bogus")
    assert "Traceback" not in done.stderr
    assert not os.path.exists(runs["env"].base / "unknown-flag" / "jobs")


def test_debug_shows_the_traceback(runs):
    done = outcome(runs, "bad-sql-debug", 2)
    assert "Traceback (most recent call last)" in done.stderr and "SQL does not parse" in done.stderr


@pytest.mark.mpi
def test_world_too_small(runs):
    done = outcome(runs, "world-too-small", 2)
    assert "found 2 MPI ranks (1 executors), but --num-executors asks for 3" in done.stderr
    assert "Traceback" not in done.stderr


def task_failure(done, task, text):
    """A task that failed for good: its first line names the task and says why, then where and its log;
    no traceback (the error is in the data or the disk, not in the user's code)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("mpipipe: error: "))
    assert lines[first].startswith(f"mpipipe: error: task {task}"), lines[first]
    assert text in lines[first], lines[first]
    log = next(line for line in lines[first:] if line.startswith("--- log: "))[len("--- log: "):]
    assert os.path.exists(log), log
    return lines[first]


def test_corrupt_parquet_file_in_the_middle_of_a_dataset(runs):
    # every footer of a dataset is read when the plan is built, not only the first file's
    done = outcome(runs, "corrupt-parquet", 2)
    bad = os.path.join(runs["env"].corrupt, "f2.parquet")
    assert f"node 'src': cannot read Parquet file {bad}: " in one_error_line(done)


def test_sql_that_fails_at_run_time_names_the_node_and_gives_duckdbs_message(runs):
    done = outcome(runs, "sql-fails-at-run-time", 1)
    # the aggregate runs first in the hash partition's map tasks (partial aggregation): the line names both
    line = task_failure(done, "by_key.partial[", "ConversionException: in node 'groups''s query, whose aggregates "
                        "run first in this map task: Conversion Error: Could not convert string 'x")
    assert "groups" in line


def test_full_data_root(runs):
    # the disk fills under two executors writing at once: either a task's write fails on every attempt (exit
    # 1), or rank 0's journal line is the write that finds the disk full (exit 2, the job stops to resume later)
    if "full-data-root" in runs["futures"] and runs["futures"]["full-data-root"].result()[0].returncode == 2:
        done = outcome(runs, "full-data-root", 2)
        assert "journal.log: No space left on device; the job stopped, run the same command again to resume" \
            in one_error_line(done)
        return
    done = outcome(runs, "full-data-root", 1)
    line = task_failure(done, "", "No space left on device")
    assert "failed after 2 attempt(s)" in line


def test_full_disk_under_the_sink_folder(runs):
    done = outcome(runs, "full-sink", 1)
    out = os.path.join(runs["env"].mounts["full-sink"], "out")
    task_failure(done, "sink[0]", "No space left on device")
    assert os.listdir(os.path.dirname(out)) == []  # neither the folder nor a half-written copy beside it


def test_journal_on_a_full_disk_stops_the_job_and_the_next_run_resumes(runs):
    if "full-journal" not in runs["futures"]:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    (code, output), again, root, out = runs["futures"]["full-journal"].result()
    assert code == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("mpipipe: error: ")]
    assert len(errors) == 1 and "journal.log: No space left on device; the job stopped, run the same command " \
                               "again to resume" in errors[0], output
    assert output.count("state.json") <= 1  # said once, not every second
    assert again.returncode == 0, again.stderr
    counts = summary_counts(again.stderr)
    assert counts["reused"] > 0 and counts["ran"] + counts["reused"] == 23
    assert output_checksum(out) == expected_checksum(runs["env"].inputs, runs["env"].dims)
