"""Whole-run crashes of a data pipeline: SIGKILL of an executor rank, of rank 0, of the launching process, and
SIGTERM, each mid-run, locally and with --platform mpi launched from a plain python. Every process of the run
goes away by itself (within a bound), the same command then resumes, runs no finished task again (each task
key has exactly one "ok" record), and writes the rows of a clean run. A second run of a job that is running
is refused; a lock left by a killed run blocks nothing.

The scenarios run at once in a small background pool (fixture `runs`); every process is started in its own
session with its output in files, waited for with a timeout, and stopped by pid.
"""
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fault_tools import (HAS_MPIEXEC, assert_each_task_once, assert_nothing_half_done, expected_checksum, job_argv,
                         journal, one_error_line, output_checksum, print_keys, run_job, summary_counts,
                         the_job_dir, write_inputs)
from helpers import (descendants, env_for_tests, kill_tree, local_executors, mpi_ranks, pid_alive, run, wait_for,
                     wait_gone)

PARTS = 8
SLEEP = 0.5  # each enrich task: 8 of them on 2 executors keep the job busy for 2 s or more
STOP_BOUND = 15  # seconds a run may take to go away after the signal
MPI_ONLY = {"mpi-executor", "mpi-rank0", "mpi-launcher", "mpi-sigterm", "mpi-busy", "mpiexec-rank0-sigterm"}


def done_of(root, node):
    """Tasks of `node` journaled as finished so far (0 before the job directory exists)."""
    try:
        return sum(1 for r in journal(the_job_dir(root)) if r.get("s") == "ok" and r["n"] == node)
    except (AssertionError, OSError):
        return 0


def enrich_done(root):
    return done_of(root, "enrich")


class Scenario:
    def __init__(self, base, name, inputs, dims, *extra):
        self.name = name
        self.root, self.out = str(base / name / "jobs"), str(base / name / "out")
        platform = ("--platform", "mpi") if name.startswith("mpi-") else ()
        self.argv = job_argv(inputs, dims, self.out, self.root, "--parts", str(PARTS), "--sleep", str(SLEEP),
                             "--num-executors", "2", *platform, *extra, mpi=3 if name.startswith("mpiexec-") else None)
        self.log = str(base / name / "first.log")
        self.facts = {}

    def start(self, until=lambda s: enrich_done(s.root) >= 2, what="two enrich tasks to finish"):
        os.makedirs(os.path.dirname(self.log), exist_ok=True)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.argv, env=env_for_tests(), start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: until(self), 120, f"{self.name}: {what}")
        except BaseException:
            kill_tree(self.proc)
            raise

    def target(self):
        """The pid the scenario signals."""
        kind = self.name
        if kind in ("local-rank0", "local-sigterm", "mpi-launcher", "mpi-sigterm"):
            return self.proc.pid
        ranks = mpi_ranks(self.proc.pid) if kind.startswith("mpi") else local_executors(self.proc.pid)  # mpi-, mpiexec-
        assert len(ranks) == (3 if kind.startswith("mpi") else 2), ranks
        return ranks[0 if "rank0" in kind else 1]

    def hit(self, sig):
        """Send `sig` to the target mid-run; wait until every process of the run is gone."""
        everyone = [self.proc.pid] + descendants(self.proc.pid)
        rank0 = mpi_ranks(self.proc.pid).get(0) if self.name.startswith("mpi") else self.proc.pid
        target = self.target()
        t0 = time.monotonic()
        os.kill(target, sig)
        try:
            self.proc.wait(STOP_BOUND)
            wait_gone(everyone, STOP_BOUND, f"{self.name}: every process of the run to exit")
        except BaseException:
            kill_tree(self.proc)
            raise
        self.facts.update(returncode=self.proc.returncode, stopped_in=time.monotonic() - t0, rank0=rank0)
        with open(self.log) as f:
            self.facts["output"] = f.read()
        job_dir = the_job_dir(self.root)
        self.facts["records"] = journal(job_dir)
        with open(os.path.join(job_dir, "lock")) as f:
            self.facts["lock"] = f.read()

    def rerun(self):
        self.facts["rerun"] = run_job(self.argv, timeout=150)
        self.facts["after"] = journal(the_job_dir(self.root))


def kill_and_resume(base, name, inputs, dims):
    s = Scenario(base, name, inputs, dims)
    s.start()
    s.hit(signal.SIGTERM if name.endswith("sigterm") else signal.SIGKILL)
    s.rerun()
    return s


def second_run_while_running(base, name, inputs, dims):
    hold = str(base / name / "go")  # the first run's enrich tasks wait for this file
    s = Scenario(base, name, inputs, dims, "--hold", hold)
    s.start(lambda s: done_of(s.root, "joined") > 0, "the first run to get going")
    try:
        s.facts["second"] = run_job(s.argv, timeout=90, check=False)
        s.facts["first_alive"] = s.proc.poll() is None
        with open(hold, "w"):
            pass
        s.proc.wait(150)
    finally:
        if s.proc.poll() is None:
            kill_tree(s.proc)
    with open(s.log) as f:
        s.facts["output"] = f.read()
    s.facts["returncode"] = s.proc.returncode
    return s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("crashes")
    inputs, dims = write_inputs(str(base / "data"))
    names = ["local-executor", "local-rank0", "local-sigterm"]
    if HAS_MPIEXEC:
        names += ["mpi-executor", "mpi-rank0", "mpi-launcher", "mpi-sigterm", "mpiexec-rank0-sigterm"]
    pool = ThreadPoolExecutor(4)
    futures = {n: pool.submit(kill_and_resume, base, n, inputs, dims) for n in names}
    if HAS_MPIEXEC:
        futures["mpi-busy"] = pool.submit(second_run_while_running, base, "mpi-busy", inputs, dims)
    keys = print_keys(inputs, dims, str(base / "x"), "--parts", str(PARTS))
    try:
        yield {"futures": futures, "expected": expected_checksum(inputs, dims),
               "tasks": sum(len(k) for k in keys.values())}
    finally:
        pool.shutdown(wait=True)


def check_resumed(runs, s):
    before = s.facts["records"]
    done_before = {r["k"] for r in before if r.get("s") == "ok"}
    enrich_before = sum(1 for r in before if r.get("s") == "ok" and r["n"] == "enrich")
    assert 2 <= enrich_before < PARTS, f"the signal came too late to test a resume ({enrich_before} enrich done)"
    rerun = s.facts["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    after = s.facts["after"]
    assert_each_task_once(after)
    assert len({r["k"] for r in after if r.get("s") == "ok"}) == runs["tasks"]
    counts = summary_counts(rerun.stderr)
    # every task journaled before the crash is reused (its output is there), the rest runs once
    assert counts["reused"] == len(done_before)
    assert counts["ran"] == runs["tasks"] - len(done_before)
    assert output_checksum(s.out) == runs["expected"]
    assert_nothing_half_done(the_job_dir(s.root), s.out)


def scenario(runs, name):
    if name in MPI_ONLY and not HAS_MPIEXEC:
        pytest.skip("the virtualenv has no mpiexec")
    return runs["futures"][name].result()


def test_sigkill_of_a_local_executor(runs):
    s = scenario(runs, "local-executor")
    # rank 0 notices, says what to do, and stops the rest
    assert s.facts["returncode"] == 2, s.facts["output"]
    assert "mpipipe: error: executor rank 1 died; the journal keeps what finished, run the same command again to " \
           "resume" in s.facts["output"]
    assert "Traceback" not in s.facts["output"]
    check_resumed(runs, s)


def test_sigkill_of_local_rank0_and_its_lock_blocks_nothing(runs):
    s = scenario(runs, "local-rank0")
    assert s.facts["returncode"] == -signal.SIGKILL
    # the dead run's lock file is still there and names it; the kernel lock went with the process
    assert s.facts["lock"].startswith(f"pid {s.facts['rank0']} on ")
    assert not pid_alive(s.facts["rank0"])
    check_resumed(runs, s)


def check_interrupted(runs, s):
    assert s.facts["returncode"] == 130, s.facts["output"]
    assert s.facts["stopped_in"] < STOP_BOUND
    last = s.facts["records"][-1]
    assert last.get("type") == "end" and last["status"] == "interrupted", last
    assert "interrupted; its journal is saved, run the same command again to resume" in s.facts["output"]
    assert "Traceback" not in s.facts["output"]
    check_resumed(runs, s)


def test_sigterm_of_a_local_run(runs):
    check_interrupted(runs, scenario(runs, "local-sigterm"))


@pytest.mark.mpi
def test_sigkill_of_an_mpi_executor_rank(runs):
    s = scenario(runs, "mpi-executor")
    assert s.facts["returncode"] != 0
    check_resumed(runs, s)


@pytest.mark.mpi
def test_sigkill_of_mpi_rank0(runs):
    s = scenario(runs, "mpi-rank0")
    assert s.facts["returncode"] != 0
    assert s.facts["lock"].startswith(f"pid {s.facts['rank0']} on ")
    check_resumed(runs, s)


@pytest.mark.mpi
def test_sigkill_of_the_process_that_launched_the_mpi_world(runs):
    """mpiexec gets SIGTERM when its parent dies, so the world stops instead of running on unattended."""
    s = scenario(runs, "mpi-launcher")
    assert s.facts["returncode"] == -signal.SIGKILL
    check_resumed(runs, s)


@pytest.mark.mpi
def test_sigterm_of_the_mpi_launcher(runs):
    check_interrupted(runs, scenario(runs, "mpi-sigterm"))


@pytest.mark.mpi
def test_sigterm_of_rank0_inside_an_mpiexec_world(runs):
    """A batch system or an admin signals rank 0 itself: it stops the world, and mpiexec passes on its 130."""
    check_interrupted(runs, scenario(runs, "mpiexec-rank0-sigterm"))


@pytest.mark.mpi
def test_second_run_of_a_running_mpi_job_is_refused(runs):
    s = scenario(runs, "mpi-busy")
    second = s.facts["second"]
    assert s.facts["first_alive"]
    assert second.returncode == 2, second.stderr
    line = one_error_line(second)
    assert f"job directory {the_job_dir(s.root)} is in use by pid " in line and "choose another --job-id" in line
    # the first run was not disturbed
    assert s.facts["returncode"] == 0, s.facts["output"]
    assert output_checksum(s.out) == runs["expected"]
    recs = journal(the_job_dir(s.root))
    assert_each_task_once(recs)
    assert [r["type"] for r in recs if r.get("type")] == ["run", "end"]


# --- SIGHUP: a closed terminal stops the job like SIGTERM ------------------------------------------------

FLAKY_PARTS = 16
FLAKY_TOTAL = sum(p * p for p in range(FLAKY_PARTS))
TAKE_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                 "os.execv(sys.argv[1], sys.argv[1:])")


def flaky_argv(root, *extra):
    from helpers import FLAKY

    return [sys.executable, FLAKY, "--data-root", root, "-n", str(FLAKY_PARTS), "--sleep", "0.5",
            "--num-executors", "2", *extra]


def squares_done(root):
    return done_of(root, "square")


def check_stopped_and_resumed(root, returncode, argv):
    """The run ended with 130 and an "interrupted" end record; the same command resumes, reusing every task
    journaled before, and adds up every square."""
    from fault_tools import run_job

    assert returncode == 130
    before = journal(the_job_dir(root))
    assert before[-1].get("type") == "end" and before[-1]["status"] == "interrupted", before[-1]
    done_before = {r["k"] for r in before if r.get("s") == "ok"}
    assert 3 <= len(done_before) < FLAKY_PARTS, f"the signal came too late to test a resume ({len(done_before)} done)"
    rerun = run_job(argv, timeout=150)
    assert f"total={FLAKY_TOTAL}" in rerun.stdout, rerun.stdout
    counts = summary_counts(rerun.stderr)
    assert counts["reused"] == len(done_before) and counts["ran"] == FLAKY_PARTS + 1 - len(done_before)
    assert_each_task_once(journal(the_job_dir(root)))


class OnTerminal:
    """A command whose controlling terminal is a pseudo-terminal, in a session of its own. hang_up() closes the
    terminal as closing a terminal window (or losing the ssh connection) does: the kernel sends SIGHUP to every
    process of the terminal's foreground group (here rank 0, its executors and their workers), and the
    terminal answers EIO to every write after that."""

    def __init__(self, argv):
        self.master, slave = os.openpty()
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", TAKE_TERMINAL, *argv], stdin=slave, stdout=slave,
                                         stderr=slave, env=env_for_tests(), start_new_session=True)
        finally:
            os.close(slave)
        self.output = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        """Read what the job prints (a terminal nobody reads fills up and blocks its writers)."""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.output += data

    def hang_up(self):
        self._stop.set()
        self._reader.join(5)
        os.close(self.master)


def test_closing_the_terminal_of_a_local_run_stops_it_cleanly_and_it_resumes(tmp_path):
    root = str(tmp_path / "jobs")
    argv = flaky_argv(root)
    term = OnTerminal(argv)
    try:
        wait_for(lambda: squares_done(root) >= 3, 120, "three squares to finish")
        everyone = [term.proc.pid] + descendants(term.proc.pid)
        assert len(local_executors(term.proc.pid)) == 2
        term.hang_up()
        term.proc.wait(STOP_BOUND)
        wait_gone(everyone, STOP_BOUND, "every process of the run to exit")
    except BaseException:
        kill_tree(term.proc)
        raise
    check_stopped_and_resumed(root, term.proc.returncode, argv)


def signal_and_wait(argv, log_path, until, sig):
    """Start `argv` (its output to `log_path`), send `sig` to it once `until()` holds, wait until every process
    it started is gone; returns (exit code, output)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env_for_tests(), start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(until, 120, "the run to get going")
        everyone = [proc.pid] + descendants(proc.pid)
        os.kill(proc.pid, sig)
        proc.wait(STOP_BOUND)
        wait_gone(everyone, STOP_BOUND, "every process of the run to exit")
    except BaseException:
        kill_tree(proc)
        raise
    with open(log_path) as f:
        return proc.returncode, f.read()


def test_sighup_of_a_local_run_says_it_was_interrupted_like_sigterm(tmp_path):
    root = str(tmp_path / "jobs")
    argv = flaky_argv(root)
    code, output = signal_and_wait(argv, str(tmp_path / "out.log"), lambda: squares_done(root) >= 3, signal.SIGHUP)
    assert "interrupted; its journal is saved, run the same command again to resume" in output, output
    assert "Traceback" not in output
    check_stopped_and_resumed(root, code, argv)


@pytest.mark.mpi
def test_sighup_of_the_process_that_launched_an_mpi_world(tmp_path):
    if not HAS_MPIEXEC:
        pytest.skip("the virtualenv has no mpiexec")
    root = str(tmp_path / "jobs")
    argv = flaky_argv(root, "--platform", "mpi")
    code, output = signal_and_wait(argv, str(tmp_path / "out.log"), lambda: squares_done(root) >= 3, signal.SIGHUP)
    assert "interrupted; its journal is saved, run the same command again to resume" in output, output
    check_stopped_and_resumed(root, code, argv)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_module_run_stopped_by_a_signal_is_journaled_as_interrupted(sig, tmp_path):
    """Modules scheduled from asyncio run in a live run driven from the script's own code: SIGTERM or a closed
    terminal stops it as Ctrl-C does (one line, exit 130, the run journaled as interrupted), and the same
    command then finishes, finding the runs that finished in the result cache."""
    from helpers import REPO

    job = os.path.join(REPO, "tests", "pipelines", "modules_job.py")
    root = str(tmp_path / "jobs")
    argv = [sys.executable, job, "--data-root", root, "--cache-dir", str(tmp_path / "cache"), "--platform", "local",
            "--num-executors", "2", "--shards", "16", "--sleep", "0.5"]

    def some_done():
        try:
            return sum(1 for r in journal(the_job_dir(root)) if r.get("s") == "ok") >= 2
        except (AssertionError, OSError):
            return False

    code, output = signal_and_wait(argv, str(tmp_path / "out.log"), some_done, sig)
    assert code == 130, output
    assert f"stopped by {signal.Signals(sig).name}" in output and "Traceback" not in output, output
    ends = [r for r in journal(the_job_dir(root)) if r.get("type") == "end"]
    assert ends and ends[-1]["status"] == "interrupted", ends
    again = run(argv, timeout=150)
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout.strip().splitlines()[-1])["results"]) == 16
