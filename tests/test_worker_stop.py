"""Stopping workers and executors: all are asked first and waited for together; one that stays is killed."""
import os
import subprocess
import sys

from mpipipe.execution import reap, worker
from mpipipe.execution.worker import WorkerHandle, stop_workers


def _setup(job_dir):
    return {"rank": 1, "size": 2, "host": "h", "job_dir": job_dir, "sys_path": list(sys.path), "node_blobs": []}


def test_workers_are_all_asked_to_stop_before_any_is_waited_for(tmp_path, monkeypatch):
    job_dir = str(tmp_path)
    workers = [WorkerHandle(os.path.join(job_dir, "logs", f"w{i}.log"), _setup(job_dir)) for i in range(3)]
    procs = []
    for w in workers:
        w.start()
        procs.append(w.proc)
    seen = []
    real = reap.wait_all

    def wait_all(ps, timeouts):
        # by the time the first wait starts, every worker has had its stop message and its pipe closed
        seen.append([p.stdin.closed for p in procs])
        return real(ps, timeouts)

    monkeypatch.setattr(worker, "wait_all", wait_all)
    stop_workers(workers, [10.0] * 3)
    assert seen == [[True, True, True]]  # one wait, for all of them
    assert [p.returncode for p in procs] == [0, 0, 0]  # each left by itself, none was killed
    assert all(not w.alive and w.slot is None for w in workers)


def test_a_worker_that_does_not_stop_in_time_is_killed_and_the_others_leave_by_themselves(tmp_path):
    job_dir = str(tmp_path)
    good = WorkerHandle(os.path.join(job_dir, "logs", "good.log"), _setup(job_dir))
    good.start()
    stuck = WorkerHandle(os.path.join(job_dir, "logs", "stuck.log"), _setup(job_dir))
    stuck.start()
    stuck.proc.kill()  # in its place, a process that reads nothing and ignores SIGTERM
    stuck.proc.wait()
    stuck.proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                   "signal.SIG_IGN); time.sleep(60)"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  start_new_session=True)
    procs = [good.proc, stuck.proc]
    stop_workers([good, stuck], [10.0, 0.3])
    assert procs[0].returncode == 0 and procs[1].returncode == -9
    assert not good.alive and not stuck.alive


def test_wait_all_reaps_what_exits_and_returns_what_outlives_its_own_timeout():
    quick = [subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({d})"], start_new_session=True)
             for d in (0.05, 0.2)]
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        late = reap.wait_all(quick + [slow], [30.0, 30.0, 0.2])
        assert late == [slow] and slow.poll() is None
        assert [p.returncode for p in quick] == [0, 0]
    finally:
        slow.kill()
        slow.wait()
    assert reap.wait_all([], 1.0) == []


def test_wait_all_without_pidfds_polls(monkeypatch):
    monkeypatch.setattr(reap, "_pidfd", lambda proc: -1)
    procs = [subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True) for _ in range(2)]
    assert reap.wait_all(procs, 30.0) == []
    assert [p.returncode for p in procs] == [0, 0]
