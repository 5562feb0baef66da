"""Task isolation: each executor rank runs task bodies in a worker process it owns.

A Python exception, os._exit, a segfault or a SIGKILL in a task body ends at
most that worker; the executor sees which task was running, fails that one
attempt, and starts a fresh worker for the rest.

This module is both sides: `WorkerHandle` lives in the executor, `main()` is
the worker process (`main()`, started with `python -c` so that importing the
package first does not load this module twice, or called in a child forked
from the executor rank before MPI starts: execution/forked.py).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from mpipipe.execution import forked, rangerun
from mpipipe.execution.attempt import (describe_failure, drop_spilled, encode_value,  # noqa: F401  (plan_steps)
                                      maybe_strike, spill)
from mpipipe.execution.framing import FrameReader, _HEADER, read_msg, write_msg
from mpipipe.execution.protocol import W_NODES, W_RUN, W_SETUP, W_STOP
from mpipipe.execution.osutil import (child_env, describe_exit, die_with_parent, exit_without_teardown,
                                      leave_stop_signals_to_rank0)
from mpipipe.execution.rangerun import log_offset as _log_offset
from mpipipe.execution.reap import wait_all
from mpipipe.execution.task import (FAILED, OK, OkRun, Result, Task, TaskContext, TaskRange, remove_staging,
                                   unit_size)
from mpipipe.execution.shuffle_store import local_store
from mpipipe.execution.taskslot import TaskSlot

import pickle


REPORT_SECONDS = 0.005  # a worker holds finished results at most this long before writing them

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "POLARS_MAX_THREADS", "RAYON_NUM_THREADS")


def _apply_resources(resources: Optional[Dict[str, Any]]) -> Dict[str, Optional[str]]:
    """Tell the task's libraries what it was given: thread counts and the devices it may see."""
    if not resources:
        return {}
    changes: Dict[str, str] = {}
    if resources.get("cpus"):
        changes.update((v, str(resources["cpus"])) for v in THREAD_VARIABLES)
    if "devices" in resources:
        changes["CUDA_VISIBLE_DEVICES"] = ",".join(resources["devices"])
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    return saved


def _restore_env(saved: Dict[str, Optional[str]]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def task_marker(node_name: str, task: Task) -> str:
    """The line a worker writes to its log as a task run on its own starts: where its output begins (a task of
    a range writes it only if it writes anything, see rangerun)."""
    return rangerun.marker_line(node_name, task.partition, task.attempt)


class _WorkerState:
    def __init__(self, setup: Dict[str, Any], log_path: str, slot: Optional[TaskSlot] = None) -> None:
        self.setup = setup
        self.log_path = log_path
        self.slot = slot
        self.nodes: Dict[int, Any] = {}
        self.load_error: Optional[str] = None
        self.faults = None
        if setup.get("faults"):
            from mpipipe.execution.faults import parse as parse_faults

            self.faults = parse_faults(setup["faults"])
        for path in reversed(setup.get("sys_path", [])):
            if path not in sys.path:
                sys.path.insert(0, path)
        self.add_nodes(setup.get("node_blobs", []))

    def add_nodes(self, blobs: List[bytes]) -> None:
        import cloudpickle

        for blob in blobs:
            try:
                for node in cloudpickle.loads(blob):
                    self.nodes[node.id] = node
            except Exception:
                self.load_error = (
                    "could not load the plan's code in the worker process (is every module it uses "
                    "importable on this host?)\n" + traceback.format_exc()
                )

    def run(self, task: Task) -> Result:
        status, info, _start = self._execute(task)
        return Result(task.tid, status, info)

    def run_range(self, rng: TaskRange, done: List[Any], flush: Any) -> None:
        """Run every task of a range (rangerun.run_range); consecutive successes are reported as one OkRun
        (columns), anything else as a Result. `flush(done)` is called whenever REPORT_SECONDS have passed."""
        node = self.nodes.get(rng.node)
        if node is None:  # every task fails, one by one, saying why
            for i in range(rng.count):
                done.append(self.run(rng.task(i)))
            return
        rangerun.run_range(rng, node, self.setup, self.log_path, self.faults, self.slot, done, flush,
                           REPORT_SECONDS)

    def _execute(self, task: Task) -> Tuple[str, Dict[str, Any], int]:
        """Run one task: (status, info for its Result, log offset where its output starts)."""
        s = self.setup
        if self.slot is not None:
            self.slot.task_started()
        start = _log_offset()
        t0 = time.time()
        node = self.nodes.get(task.node)
        if node is None:
            return FAILED, {
                "error": f"node {task.node} is unknown in this worker",
                "traceback": self.load_error or "", "log": (self.log_path, start, start), "t0": t0, "t1": t0,
            }, start
        ctx = TaskContext(task, node.name, node.npartitions, s["rank"], s["size"], s["host"], s["job_dir"],
                          getattr(node, "args", None), task.resources)
        if s.get("shuffle_store"):
            ctx.keep_local(local_store(s), getattr(node, "shuffle_transport", "files") == "mpi")
        saved_env = _apply_resources(task.resources)
        if self.slot is not None:
            self.slot.output_at(start)
        os.write(2, (task_marker(node.name, task) + "\n").encode())
        spilled: Optional[str] = None
        info: Dict[str, Any]
        try:
            value = node.run_task(ctx)
            text, value = ("null", None) if value is None else encode_value(value)
            maybe_strike(self.faults, task.key, task.attempt)
            spilled = spill(text, s["job_dir"], node.name, task.partition, task.attempt, s["rank"])
            if spilled is not None:
                value = None
            output = ctx.commit()
            status, info = OK, {"output": output, "value": value}
            if spilled is not None:
                info["value_file"] = spilled
        except BaseException as exc:  # noqa: BLE001  a task body may raise anything, even SystemExit
            ctx.abort()
            drop_spilled(s["job_dir"], spilled)
            tb, failed = describe_failure(exc)
            sys.stderr.write(tb)
            status, info = FAILED, dict(failed, node_name=node.name, partition=task.partition, attempt=task.attempt)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            if saved_env:
                _restore_env(saved_env)
        info["t0"] = t0
        info["t1"] = time.time()
        info["log"] = (self.log_path, start, _log_offset())
        return status, info, start


def _log_to(log_path: str) -> None:
    """What the worker and its tasks print goes to its log file from here on."""
    logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    os.close(logfd)


def _take_on(setup: Dict[str, Any]) -> None:
    """A worker started early takes on its rank's environment and working folder of the moment."""
    if setup.get("env") is not None:
        os.environ.clear()
        os.environ.update(setup["env"])
    try:
        os.chdir(setup.get("cwd") or os.getcwd())
    except OSError:
        pass


def main(args: Optional[List[str]] = None) -> None:
    """The worker process: `args` (else the command line's): its log ("": started early, its log comes with the
    setup) and the descriptor of its TaskSlot; stdin and stdout are its pipes from and to the executor."""
    args = sys.argv[1:] if args is None else args
    log_path = args[0] if args else ""
    slot = TaskSlot.attach(int(args[1])) if len(args) > 1 else None  # which task runs, for the executor
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave_stop_signals_to_rank0()  # a closed terminal or mpiexec's SIGTERM: rank 0 stops the job, then this worker
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    if log_path:
        _log_to(log_path)
    else:
        os.dup2(2, 1)  # nothing may write into the results pipe: until the log, the executor's stderr
    rangerun.watch_streams()  # a task of a range that prints gets its marker first
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import cloudpickle  # noqa: F401  (what loads the plan's code: now, before the first tasks wait for it)

    state: Optional[_WorkerState] = None
    while True:
        try:
            msg = read_msg(proto_in)
        except EOFError:
            exit_without_teardown()  # a task's outputs were committed as it returned: nothing is left
        kind = msg[0]
        if kind == W_SETUP:
            if not log_path:  # started early: the job's log, and the rank's environment and folder as they are
                log_path = msg[2]  # now (the script may have set variables for its tasks since this started)
                _log_to(log_path)
                _take_on(msg[1])
            state = _WorkerState(msg[1], log_path, slot)
        elif kind == W_NODES:
            assert state is not None
            state.add_nodes(msg[1])
        elif kind == W_RUN:
            assert state is not None
            # results go back together: one frame per REPORT_SECONDS, so tiny tasks cost one write and one wake-up
            # of the executor per batch; a slow task's result goes as soon as it ends
            done: List[Any] = []

            def flush(items: List[Any]) -> None:
                write_msg(proto_out, list(items))
                items.clear()

            sent = time.monotonic()
            for unit in msg[1]:
                if type(unit) is TaskRange:
                    state.run_range(unit, done, flush)
                    sent = time.monotonic()
                    continue
                done.append(state.run(unit))
                now = time.monotonic()
                if now - sent >= REPORT_SECONDS:
                    flush(done)
                    sent = now
            if done:
                flush(done)
        elif kind == W_STOP:
            exit_without_teardown()


class WorkerHandle:
    """The executor's end of one worker process: feeds it tasks, collects results, notices death."""

    def __init__(self, log_path: str, setup: Dict[str, Any]) -> None:
        self.log_path = log_path
        self.setup = setup
        self.inflight: Deque[Any] = deque()  # Task or TaskRange, in the order the worker runs them
        self.proc: Optional[Any] = None  # a subprocess.Popen, or a forked.ForkedProcess (start(fork=True))
        self._out = bytearray()
        self._reader = FrameReader()
        self.restarts = 0
        self._reported_to = 0  # log offset where the output of tasks not yet reported begins
        self._extra_blobs: List[bytes] = []
        self.slot: Optional[TaskSlot] = None  # which task the worker runs (shared with it)
        self._finished = 0  # tasks the worker reported since it started

    def start(self, fork: bool = False) -> None:
        """Start the worker process; with no log path yet (started early, before the job's setup is known) it
        waits for configure(). `fork`: fork it from this process if that is safe now (forked.fork_allowed;
        only for a worker started early), else start a new interpreter."""
        if self.slot is not None:
            self.slot.close()
        self.slot, slot_fd = TaskSlot.create()
        self._finished = 0
        argv = [sys.executable, "-c", "from mpipipe.execution.worker import main; main()", self.log_path,
                str(slot_fd)]
        try:
            if fork and not self.log_path and forked.fork_allowed():
                self.proc = forked.fork_process(lambda: main(argv[3:]), keep=(slot_fd,), env=child_env())
            elif not self.log_path:
                self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
                                             close_fds=True, pass_fds=(slot_fd,))
            else:
                os.makedirs(os.path.dirname(self.log_path), mode=0o700, exist_ok=True)
                log = open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
                try:
                    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                                 env=child_env(), close_fds=True, pass_fds=(slot_fd,))
                finally:
                    log.close()
        finally:
            os.close(slot_fd)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._reader = FrameReader()
        self._out = bytearray()
        if self.log_path:
            self._send_setup()

    def configure(self, log_path: str, setup: Dict[str, Any]) -> None:
        """Give a worker started early its log and the job's setup."""
        self.log_path = log_path
        self.setup = setup
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
        self._send_setup()

    def _send_setup(self) -> None:
        try:
            self._reported_to = os.path.getsize(self.log_path)  # the log before this process: not its tasks'
        except OSError:
            self._reported_to = 0
        self._queue((W_SETUP, dict(self.setup, node_blobs=list(self.setup.get("node_blobs", [])) + self._extra_blobs,
                                   env=child_env(), cwd=os.getcwd()), self.log_path))

    def add_nodes(self, blobs: List[bytes]) -> None:
        self._extra_blobs.extend(blobs)
        self._queue((W_NODES, blobs))

    def _queue(self, msg: Any) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self._out += _HEADER.pack(len(data))
        self._out += data
        self.flush()

    def submit(self, units: List[Any]) -> None:
        """Tasks and task ranges, run in this order."""
        self.inflight.extend(units)
        self._queue((W_RUN, units))

    @property
    def busy(self) -> int:
        """How many tasks the worker holds."""
        return sum(unit_size(u) for u in self.inflight)

    def _take(self, n: int) -> Any:
        """Take the first n tasks the worker held (they were reported); returns the first of them."""
        head = self.inflight[0]
        if type(head) is not TaskRange:
            assert n == 1
            return self.inflight.popleft()
        taken, rest = head.split(n)
        assert taken.count == n, "worker answered past a task range"
        if rest is None:
            self.inflight.popleft()
        else:
            self.inflight[0] = rest
        return taken

    def held_tasks(self) -> List[Task]:
        """Every task the worker holds, one by one."""
        out: List[Task] = []
        for u in self.inflight:
            out.extend(u.tasks() if type(u) is TaskRange else [u])
        return out

    def flush(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        while self._out:
            try:
                n = os.write(fd, self._out)
            except BlockingIOError:
                return
            except BrokenPipeError:
                self._out.clear()  # death is noticed when reading
                return
            del self._out[:n]

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def read_fd(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def write_fd(self) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin.fileno()

    def collect(self, node_names: Optional[Dict[int, str]] = None
                ) -> Tuple[List[Any], Optional[Tuple[Task, str, int]], List[Any]]:
        """Results that arrived; if the worker died: (task it was running, why, log offset of its output) and the
        tasks to run again (Tasks and TaskRanges, in order).

        Results come in frames of several, so a worker that dies may have finished tasks it did not report yet.
        Its TaskSlot says which task it was in: the finished ones before it are run again, the one it died in is
        the failed attempt. (`node_names` is not needed any more; kept for callers.)"""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        results: List[Any] = []  # Result and OkRun
        eof = False
        while True:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                eof = True
                break
            for frame in self._reader.feed(data):
                for res in frame:
                    n = res.count if type(res) is OkRun else 1
                    done = self._take(n)
                    self._finished += n
                    assert done.tid == res.tid, "worker answered out of order"
                    results.append(res)
            if len(data) < (1 << 20):
                break
        if results:
            last = results[-1]
            end = last.log_offsets[-1] if type(last) is OkRun else last.info["log"][2]
            if end is not None:
                self._reported_to = end
        if not eof:
            return results, None, []
        code = self.proc.wait()
        self.proc.stdin.close() if self.proc.stdin else None
        self.proc.stdout.close()
        crashed = None
        rest: List[Any] = []
        if self.inflight:
            started, offset = self.slot.read() if self.slot is not None else (0, -1)
            task, rest = self._died_in(started - 1 - self._finished)
            crashed = (task, describe_exit(code), offset if offset >= 0 else self._reported_to)
            self.inflight.clear()
            self._remove_staging([task], self.proc.pid)  # the dead attempt's partial output
        self.proc = None
        return results, crashed, rest

    def _died_in(self, index: int) -> Tuple[Task, List[Any]]:
        """The held task at `index` (the one the dead worker was running; the first one if it died between
        tasks), and the other held units, ranges cut around it."""
        if not 0 <= index < self.busy:
            index = 0
        crashed: Optional[Task] = None
        rest: List[Any] = []
        for unit in self.inflight:
            n = unit_size(unit)
            if crashed is not None or index >= n:
                rest.append(unit)
                index -= n
                continue
            if type(unit) is not TaskRange:
                crashed = unit
                continue
            crashed = unit.task(index)
            if index > 0:
                rest.append(unit._replace(count=index))
            if index + 1 < n:
                rest.append(unit._replace(tid=unit.tid + index + 1, first=unit.first + index + 1,
                                          count=n - index - 1))
        assert crashed is not None
        return crashed, rest

    def _remove_staging(self, tasks: List[Task], pid: int) -> None:
        for task in tasks:
            try:
                remove_staging(task.output, task.attempt, int(self.setup.get("rank", 0)), pid)
            except OSError:
                pass

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def kill(self) -> None:
        """Stop the worker now (a task ran past its time limit); collect() then reports the task."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self, timeout: float = 5.0) -> None:
        stop_workers([self], [timeout])

    def _ask_to_stop(self) -> None:
        """The first half of stopping (see stop_workers): W_STOP, the pipe closed, SIGTERM to a running task."""
        assert self.proc is not None
        try:
            self._queue((W_STOP,))
            self.proc.stdin.close()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        if self.inflight:  # a task still runs: SIGTERM lets it save a checkpoint (modules) before it is killed
            try:
                self.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass

    def _stopped(self, in_time: bool) -> None:
        """The second half: a worker that did not leave in time is killed; its attempts' partial outputs go."""
        assert self.proc is not None
        if not in_time:
            self.proc.kill()
            self.proc.wait()
            self._remove_staging(self.held_tasks(), self.proc.pid)  # attempts stopped mid-way
        self.proc = None
        if self.slot is not None:
            self.slot.close()
            self.slot = None


def stop_workers(workers: List[WorkerHandle], timeouts: List[float]) -> None:
    """Stop workers together: every one is asked first, then all are waited for at once (each up to its own
    timeout, then killed), so N workers take about as long as the slowest one rather than the sum of all."""
    live = [(w, t) for w, t in zip(workers, timeouts) if w.proc is not None]
    for w, _ in live:
        w._ask_to_stop()
    late = wait_all([w.proc for w, _ in live], [t for _, t in live])  # type: ignore[misc]
    for w, _ in live:
        w._stopped(w.proc not in late)


_EARLY: List[WorkerHandle] = []  # workers an executor rank started before it joined its world


def start_early(count: int, fork: bool = False) -> None:
    """Have `count` worker processes started now (those started earlier count), while this executor rank joins
    its world (MPI start-up takes as long as a worker's), so they are ready when the first tasks come; Executor
    takes them (take_early). `fork`: fork them from this process where that is safe (WorkerHandle.start)."""
    for _ in range(count - len(_EARLY)):
        w = WorkerHandle("", {})
        try:
            w.start(fork=fork)
        except OSError:
            return
        _EARLY.append(w)


def take_early() -> List[WorkerHandle]:
    taken = list(_EARLY)
    _EARLY.clear()
    return taken


def wait_any(workers: List[WorkerHandle], timeout: float) -> List[WorkerHandle]:
    """Sleep until a worker has something to say (or can take more bytes), at most `timeout`."""
    rmap = {w.read_fd(): w for w in workers if w.alive and w.inflight}
    wfds = [w.write_fd() for w in workers if w.alive and w.wants_write]
    if not rmap and not wfds:
        time.sleep(timeout)
        return []
    readable, writable, _ = select.select(list(rmap), wfds, [], timeout)
    for w in workers:
        if w.alive and w.wants_write and w.write_fd() in writable:
            w.flush()
    return [rmap[fd] for fd in readable]


if __name__ == "__main__":
    main()
