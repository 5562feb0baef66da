"""An executor rank's first worker forked from the rank: only where that is safe, and like a new interpreter."""
import ast
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, run
from test_kill_resume import _crash_at  # partition 5 kills its worker, odd ones print
from mpipipe.execution import forked, reap
from mpipipe.execution.forked import ForkedProcess, fork_process

WORKER_START = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines", "worker_start.py")


def _single_threaded():
    deadline = time.monotonic() + 2.0  # a thread just joined may still be leaving at the OS level
    while forked._threads() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if forked._threads() > 1:
        pytest.skip("this test process runs other threads (a session fixture's server): it must not fork")


def test_fork_is_refused_with_mpi_loaded_a_thread_running_or_a_module_half_imported(monkeypatch):
    _single_threaded()
    assert forked.fork_allowed()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "mpi4py.MPI", types.ModuleType("mpi4py.MPI"))
        assert not forked.fork_allowed()
    half = types.ModuleType("users_module")
    half.__spec__ = types.SimpleNamespace(_initializing=True)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "users_module", half)
        assert not forked.fork_allowed()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not forked.fork_allowed()
    finally:
        stop.set()
        t.join()


def _child_report(kept_fd, other_fd, marker):
    """The body of a forked child: reports on its stdout what it inherited."""
    import atexit

    def seen(fd):
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    report = {"line": os.read(0, 100).decode().strip(), "kept": seen(kept_fd), "other": seen(other_fd),
              "env": os.environ.get("FORK_TEST_VAR"), "usr1": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
              "exit_handlers": atexit._ncallbacks()}
    os.write(1, (repr(report) + "\n").encode())


def test_a_forked_child_talks_through_its_pipes_and_drops_what_it_inherited(tmp_path, monkeypatch):
    _single_threaded()
    marker = str(tmp_path / "exit-handler-ran")
    import atexit

    handler = lambda: open(marker, "w").close()  # noqa: E731
    atexit.register(handler)
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    kept_r, kept_w = os.pipe()
    other_r, other_w = os.pipe()
    try:
        proc = fork_process(lambda: _child_report(kept_r, other_r, marker), keep=(kept_r,),
                            env={"FORK_TEST_VAR": "x", "PATH": os.environ.get("PATH", "")})
        proc.stdin.write(b"hello\n")
        proc.stdin.close()
        out = proc.stdout.read()
        assert proc.wait() == 0 and proc.returncode == 0 and proc.poll() == 0
    finally:
        atexit.unregister(handler)
        signal.signal(signal.SIGUSR1, old)
        for fd in (kept_r, kept_w, other_r, other_w):
            os.close(fd)
    report = ast.literal_eval(out.decode())
    assert report == {"line": "hello", "kept": True, "other": False, "env": "x", "usr1": True,
                      "exit_handlers": 0}
    assert not os.path.exists(marker)


def test_a_forked_child_that_raises_exits_1_with_its_traceback_and_one_killed_reads_like_popen(capfd):
    _single_threaded()

    def fail():
        raise ValueError("boom in the child")

    proc = fork_process(fail)
    assert proc.wait() == 1
    assert "ValueError: boom in the child" in capfd.readouterr().err
    sleeper = fork_process(lambda: time.sleep(60))
    assert sleeper.poll() is None
    assert reap.wait_all([sleeper], 0.1) == [sleeper]  # still running past its timeout
    sleeper.kill()
    assert reap.wait_all([sleeper], 10.0) == [] and sleeper.returncode == -signal.SIGKILL
    sleeper.kill()  # a second kill of a reaped child is a no-op, as with Popen
    slow = fork_process(lambda: time.sleep(60))
    with pytest.raises(subprocess.TimeoutExpired):
        slow.wait(timeout=0.05)
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(timeout=10) == -signal.SIGTERM


def test_a_worker_started_early_by_fork_runs_tasks_logs_and_crashes_like_a_new_one(tmp_path):
    """The executor's side, as after early.begin(): the first worker is forked, takes its log and setup later
    (configure), prints into its log, and a crash is pinned on its task; the one started in its place is a
    new interpreter and runs the rest."""
    _single_threaded()
    from mpipipe.execution.task import OkRun, TaskRange
    from mpipipe.execution.worker import WorkerHandle
    from mpipipe.logical.node import ComputeNode, Context
    from mpipipe.pickling import pickle_nodes

    ctx = Context()
    node = ComputeNode(ctx, _crash_at, npartitions=8, name="crashy")
    job_dir = str(tmp_path)
    setup = {"rank": 1, "size": 2, "host": "h", "job_dir": job_dir, "sys_path": list(sys.path),
             "node_blobs": [pickle_nodes([node])]}
    w = WorkerHandle("", {})
    w.start(fork=True)
    try:
        assert type(w.proc) is ForkedProcess
        w.configure(os.path.join(job_dir, "logs", "w.log"), setup)
        w.submit([TaskRange(100, node.id, 0, 8, 0, "fp", (), os.path.join(job_dir, "outputs", "crashy", "part-"),
                            5)])
        results, crashed, rest = _collect(w, lambda got, crashed: crashed is not None)
        task, why, _start = crashed
        assert (task.partition, "SIGKILL" in why) == (5, True)
        with open(w.log_path) as f:
            assert "--- crashy[1] attempt 0 ---\nodd 1\n" in f.read()
        reported = sum(r.count for r in results if type(r) is OkRun)
        w.start()  # a worker started in place of one that died: a new interpreter
        assert type(w.proc) is subprocess.Popen
        w.submit(rest)
        got, crashed, _ = _collect(w, lambda got, crashed: sum(r.count for r in got) >= 7 - reported)
        assert crashed is None
        assert [v for r in got for v in r.values] == [p for p in range(reported, 8) if p != 5]
        with open(w.log_path) as f:
            assert "--- crashy[7] attempt 0 ---\nodd 7\n" in f.read()
    finally:
        w.stop(timeout=5)


def _collect(w, enough):
    got, crashed, rest = [], None, []
    deadline = time.monotonic() + 60
    while not enough(got, crashed) and time.monotonic() < deadline:
        done, crashed, rest = w.collect()
        got += done
        time.sleep(0.01)
    assert enough(got, crashed), "the worker did not answer in time"
    return got, crashed, rest


needs_mpi = pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")),
                               reason="the virtualenv has no mpiexec (pip install 'mpipipe[mpi]')")


def _workers(data_root, marks, before="nothing", env=None):
    os.makedirs(marks, exist_ok=True)
    done = mpiexec(2, WORKER_START, "--data-root", data_root, "--marks", marks, "--before", before,
                   env=env_for_tests(env), check=True, timeout=120)
    return [ast.literal_eval(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("WORKER")]


@needs_mpi
def test_under_mpiexec_the_first_worker_is_forked_and_inherits_nothing_of_the_rank(data_root, tmp_path):
    marks = str(tmp_path / "marks")
    workers = _workers(data_root, marks)
    assert len(workers) == 3 and len({w["pid"] for w in workers}) == 1  # one executor, its one worker
    assert workers[0] == {"started": "forked", "pid": workers[0]["pid"], "sockets": 0, "mpi_env": [],
                          "sigusr1_default": True}
    assert len(os.listdir(marks)) == 2  # the two ranks ran the script's exit handler, the worker did not
    log = os.path.join(data_root, os.listdir(data_root)[0], "logs", "rank-1", "worker-0.log")
    with open(log) as f:
        text = f.read()
    assert all(f"task {p} in worker {workers[0]['pid']}" in text for p in range(3))


@needs_mpi
@pytest.mark.parametrize("before,env", [("nothing", {"SP_EARLY_START": "0"}), ("mpi", None), ("thread", None),
                                        ("module", None)])
def test_a_new_interpreter_where_a_fork_is_not_safe_or_early_start_is_off(before, env, data_root, tmp_path):
    workers = _workers(data_root, str(tmp_path / "marks"), before, env)
    assert [w["started"] for w in workers] == ["new"] * 3
    assert workers[0]["mpi_env"] == [] and workers[0]["sockets"] == 0


IN_PROCESS = ["test_fork_is_refused_with_mpi_loaded_a_thread_running_or_a_module_half_imported",
              "test_a_forked_child_talks_through_its_pipes_and_drops_what_it_inherited",
              "test_a_forked_child_that_raises_exits_1_with_its_traceback_and_one_killed_reads_like_popen",
              "test_a_worker_started_early_by_fork_runs_tasks_logs_and_crashes_like_a_new_one"]


def test_the_in_process_fork_tests_run_where_they_can_fork():
    """The tests above fork this very process, which they refuse (skip) once an earlier test left a thread
    running in it (a session fixture's server): then they run here, in a pytest process of their own, so a
    full run never leaves them out."""
    if forked._threads() == 1:
        pytest.skip("this process has one thread: the tests above ran in it")
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "240",
                os.path.abspath(__file__), "-k", " or ".join(IN_PROCESS)], timeout=300, cwd=REPO)
    assert done.returncode == 0 and f"{len(IN_PROCESS)} passed" in done.stdout, done.stdout[-3000:]
