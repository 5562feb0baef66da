"""The loop every executor rank runs: take task batches from rank 0, run them in workers, report.

The same code runs over MPI and over local sockets; only the transport differs.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from mpipipe.errors import MpipipeError
from mpipipe.execution import protocol as P
from mpipipe.execution.osutil import RankLogHandler, leave_stop_signals_to_rank0
from mpipipe.execution.shuffle_store import ShuffleStore, rank_store
from mpipipe.execution.task import FAILED, Result, Task, TaskRange, unit_size
from mpipipe.execution.transport import Backoff, PeerLost, Transport
from mpipipe.execution.worker import WorkerHandle, stop_workers, take_early, wait_any
from mpipipe.ownership import PRIVATE_FILE, make_owner_only_dirs

log = logging.getLogger("mpipipe.executor")

MIN_CHUNK = 64  # plain tasks a worker may hold at least


def host_description() -> Dict[str, Any]:
    """What this rank's host offers (cores, memory, accelerators), sent to rank 0 for placement; a `--hosts`
    entry that names this host by its name replaces the probe's figures (rank entries are rank 0's)."""
    from mpipipe.execution.hostprobe import apply_override, host_override, probe

    desc = probe()
    try:
        text = _hosts_option()
        override = host_override(text, desc["host"]) if text else None
    except MpipipeError as e:  # rank 0 reads the same option and stops the job with this error
        log.debug("ignoring --hosts here: %s", e)
        return desc
    return apply_override(desc, override, scope="host") if override is not None else desc


def _hosts_option() -> Optional[str]:
    """The job's --hosts (command line > SP_HOSTS > init()), as the script's own config has it."""
    from mpipipe import context

    job = context.current()
    if "hosts" not in job.command_line and "SP_HOSTS" not in os.environ and "hosts" not in job.init:
        return None
    return job.config().hosts


def _rank_log(folder: str) -> Optional[logging.Handler]:
    """This executor rank's own log (logs/rank-R/executor.log): start, workers that died, stop."""
    try:
        make_owner_only_dirs(folder)
        handler = RankLogHandler(os.path.join(folder, "executor.log"))
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def task_log_path(job_dir: str, node_name: str, partition: int, attempt: int) -> str:
    """Where a failed attempt's log is kept on its own."""
    return os.path.join(job_dir, "logs", "tasks", node_name, f"p{partition}.a{attempt}.log")


def copy_log_range(src: str, start: int, end: Optional[int], dest: str) -> str:
    """Copy one task's part of a worker log into a file of its own."""
    make_owner_only_dirs(os.path.dirname(dest))
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with open(src, "rb") as f, open(fd, "wb") as out:
        f.seek(max(start, 0))
        out.write(f.read() if end is None else f.read(max(0, end - start)))
    return dest


class Executor:
    """Runs tasks for rank 0 until told to stop. `workers` worker processes per rank.

    One executor serves every run() of rank 0's process: each run's new nodes
    arrive as NODES before its tasks, and the workers keep all of them.
    """

    def __init__(self, transport: Transport, hello_timeout: float = 600.0, patient: bool = False) -> None:
        self.t = transport
        self.hello_timeout = hello_timeout
        self.patient = patient  # started before the job: the setup may be long in coming
        self.queue: Deque[Any] = deque()  # Task and TaskRange
        self.workers: List[WorkerHandle] = []
        self.setup: Dict[str, Any] = {}
        self.node_names: Dict[int, str] = {}
        self.deadlines: Dict[int, Tuple[float, float, WorkerHandle]] = {}  # worker -> (deadline, limit, worker)
        self.overdue: Dict[int, float] = {}  # workers killed for their time limit -> the limit
        self.store: Optional[ShuffleStore] = None  # this rank's part of MPI shuffles (made when one comes)
        self.exchange: Optional[Any] = None  # mpi_shuffle.BucketExchange

    @staticmethod
    def create(runtime_ctx: Any, exec_id: str) -> Any:
        """smallpond's `Executor.create(runtime_ctx, id)`: an executor process's part in the job that a
        smallpond-style `Scheduler(exec_plan).run()` runs under the same runtime context (execution.roles)."""
        from mpipipe.execution.roles import ExecutorRole

        return ExecutorRole(runtime_ctx, exec_id)

    def run(self) -> None:
        # rank 0 decides when the world stops: a closed terminal (SIGHUP) reaches every process of the job's
        # process group, and mpiexec passes SIGTERM on to every rank; if this rank died of it first, the
        # launcher would kill rank 0 while it journals and says why it stopped. Rank 0 then stops this rank.
        saved = leave_stop_signals_to_rank0()
        try:
            self._serve()
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _serve(self) -> None:
        host = host_description()
        try:
            self.setup = P.executor_hello(self.t, host, self.hello_timeout, self.patient)
        except PeerLost:  # rank 0 left before the job began (a script that failed before its first run)
            stop_workers(take_early(), [1.0])
            self.t.close()
            return
        self.setup.update(rank=self.t.rank, size=self.t.size, host=host["host"])
        self.node_names = dict(self.setup.get("node_names", {}))  # plan code comes in NODES
        self.store = rank_store(self.setup, self.t.rank, self.t.size)
        if self.store is not None:
            self.setup["shuffle_store"] = self.store.spec()  # for the workers
        logs = os.path.join(self.setup["job_dir"], "logs", f"rank-{self.t.rank}")
        handler = _rank_log(logs)
        log.info("rank %d of %d on %s: %s", self.t.rank, self.t.size, host["host"],
                 {k: host[k] for k in ("cores", "memory", "accelerators", "limits") if k in host})
        early = take_early()  # started while this rank joined its world
        for i in range(int(self.setup.get("workers_per_executor", 1))):
            path = os.path.join(logs, f"worker-{i}.log")
            if early:
                w = early.pop(0)
                w.configure(path, self.setup)
            else:
                w = WorkerHandle(path, self.setup)
                w.start()
            self.workers.append(w)
        stop_workers(early, [1.0] * len(early))  # more than the job asked for
        reason = "lost"
        try:
            reason = self._loop()
        except PeerLost:
            log.warning("rank %d: rank 0 went away; stopping", self.t.rank)
        finally:
            # at the end of a job, a task still running is a speculative copy that lost its race: stop it now;
            # a job stopped early gives a running task a moment to save its checkpoint (it got SIGTERM)
            stop_workers(self.workers, [5.0 if not w.inflight else 0.2 if reason == "done" else 2.0
                                        for w in self.workers])
            log.info("rank %d stopped (%s); %d worker restart(s)", self.t.rank, reason,
                     sum(w.restarts for w in self.workers))
            if self.exchange is not None:
                log.info("rank %d %s", self.t.rank, self.exchange.summary())
                self.exchange.close()
            if handler is not None:
                log.removeHandler(handler)
                handler.close()
            self.t.close()

    def _loop(self) -> str:
        backoff = Backoff()
        while True:
            got = self.t.poll()
            exchange = self.exchange
            for src, (kind, payload) in got:
                if kind == P.TASKS:
                    self.queue.extend(payload if exchange is None else exchange.admit(payload))
                elif kind == P.PIECE:  # (it may come before rank 0's NODES that tell of its shuffle)
                    exchange = self._exchange({})
                    exchange.on_piece(src, payload)
                elif kind == P.NODES:
                    self.node_names.update(payload[1])
                    if payload[2]:
                        exchange = self._exchange(payload[2])
                    for w in self.workers:
                        self._ensure_alive(w)
                        w.add_nodes(payload[0])
                elif kind == P.DROP:
                    if exchange is not None:
                        for name in payload:
                            exchange.store.drop_node(name)
                        log.info("rank %d dropped the buckets of %s: their readers are done", self.t.rank,
                                 ", ".join(payload))
                elif kind == P.STOP:
                    return str(payload)
            chunk = self._chunk()
            for w in self.workers:
                self._ensure_alive(w)
                self._feed(w, chunk)
            self._stop_overdue()
            ready = wait_any(self.workers, 0 if got else backoff.next())
            results: List[Any] = []  # Result and OkRun
            for w in ready:
                done, crashed, rest = w.collect(self.node_names)
                if done or crashed is not None:
                    self.deadlines.pop(id(w), None)
                results.extend(self._with_log_files(done))
                if crashed is not None:
                    task, why, start = crashed
                    limit = self.overdue.pop(id(w), None)
                    if limit is not None:
                        why = f"ran past its time limit of {limit:g} s and was stopped"
                    results.append(self._crash_result(w, task, why, start))
                    if exchange is not None:
                        exchange.forget(task)  # it may have published its buckets before it died
                    self.queue.extendleft(reversed(rest))
            moved = False
            if exchange is not None:
                exchange.after(results)
                moved = exchange.progress()
                if moved:
                    self.queue.extend(exchange.release())
                results.extend(exchange.expired())
            if results:
                self.t.send(0, P.results_msg(results))
            if got or results or moved:
                backoff.reset()

    def _exchange(self, shuffles: Dict[str, Any]) -> Any:
        """This rank's part in the MPI shuffles of the nodes that came (made with the first one)."""
        if self.exchange is None:
            if self.store is None:
                raise MpipipeError("rank 0 sent an MPI shuffle to a world whose ranks cannot exchange buckets")
            from mpipipe.execution.mpi_shuffle import BucketExchange

            self.store.prepare()
            self.exchange = BucketExchange(self.t, self.store)
        self.exchange.add_nodes(shuffles)
        return self.exchange

    def _chunk(self) -> int:
        """How many plain tasks a worker may hold: its share of all this rank holds (at least MIN_CHUNK), so
        tiny tasks reach a worker in big batches (it never waits for this loop to wake up) and several
        workers still share them evenly."""
        if not self.queue:
            return MIN_CHUNK
        held = sum(unit_size(u) for u in self.queue) + sum(w.busy for w in self.workers)
        return max(MIN_CHUNK, -(-held // max(1, len(self.workers))))

    def _feed(self, w: WorkerHandle, chunk: int) -> None:
        """Plain tasks go to workers in batches; a placed task (it holds cores, devices, a time limit)
        goes alone to an idle worker, so its limits and environment are its own."""
        if not self.queue or (w.inflight and w.inflight[0].resources):
            return
        head = self.queue[0]
        if head.resources:
            if not w.inflight:
                group = [self.queue.popleft()]  # tasks that share one placement run in turn on this worker
                while head.resources.get("group") and self.queue and self.queue[0].resources and \
                        self.queue[0].resources.get("group") == head.resources["group"]:
                    group.append(self.queue.popleft())
                w.submit(group)
                limit = float(head.resources.get("time") or 0)
                if limit > 0:
                    self.deadlines[id(w)] = (time.monotonic() + limit * len(group), limit, w)
            return
        batch: List[Any] = []
        room = chunk - w.busy
        while self.queue and room > 0 and not self.queue[0].resources:
            unit = self.queue.popleft()
            if type(unit) is TaskRange and unit.count > room:  # the rest waits for this or another worker
                unit, rest = unit.split(room)
                self.queue.appendleft(rest)
            batch.append(unit)
            room -= unit_size(unit)
        if batch:
            w.submit(batch)

    def _stop_overdue(self) -> None:
        """Kill the worker of a task that ran past its time limit; its attempt then fails."""
        if not self.deadlines:
            return
        now = time.monotonic()
        for key, (deadline, limit, w) in list(self.deadlines.items()):
            if now > deadline and w.alive and w.inflight:
                del self.deadlines[key]
                self.overdue[key] = limit
                w.kill()

    def _ensure_alive(self, w: WorkerHandle) -> None:
        """A worker that died (its task already failed) is replaced; the new one gets every node sent so far."""
        if not w.alive:
            log.info("starting a new worker in place of one that died (%s)", w.log_path)
            w.restarts += 1
            w.start()

    def _where(self) -> str:
        return f"rank {self.t.rank} of {self.t.size} on {self.setup['host']}"

    def _with_log_files(self, results: List[Any]) -> List[Any]:
        """Failed attempts get a log file of their own and say where they ran."""
        for res in results:
            if type(res) is Result and res.status == FAILED:
                res.info["where"] = self._where()
                src, start, end = res.info["log"]
                dest = task_log_path(self.setup["job_dir"], str(res.info.get("node_name")),
                                     int(res.info.get("partition", -1)), int(res.info.get("attempt", -1)))
                try:
                    res.info["log"] = (copy_log_range(src, start, end, dest), 0, None)
                except OSError:
                    pass
        return results

    def _crash_result(self, w: WorkerHandle, task: Task, why: str, start: int) -> Result:
        name = self.node_names.get(task.node, str(task.node))
        dest = task_log_path(self.setup["job_dir"], name, task.partition, task.attempt)
        try:
            copy_log_range(w.log_path, start, None, dest)
        except OSError:
            dest = w.log_path
        now = time.time()
        return Result(task.tid, FAILED, {
            "error": f"the worker process running the task {why}",
            "traceback": "", "crash": True, "log": (dest, 0, None), "where": self._where(),
            "t0": now, "t1": now,
        })
