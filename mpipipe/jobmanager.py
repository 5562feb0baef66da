"""The JobManager: one frozen config, one platform, then launch the world or join it.

In the launching process (outside the world) it starts the world and exits with
its code. Inside, rank 0 prepares the job directory and runs the scheduler;
every other rank runs the executor loop and exits when told.

A script may call run() several times (a lazy DataFrame runs one plan per
action). Rank 0 keeps its world open between runs in a `Runtime`: the same
executors, job directory, lock and journal serve every run, also after a run
whose tasks failed; the world is closed at process exit, or as soon as it
breaks (a rank lost, a protocol error) or a run is interrupted.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

import mpipipe
from mpipipe.config import JobConfig
from mpipipe.errors import ConfigError, JobInterrupted, JournalError, MpipipeError, PlatformError
from mpipipe.execution import protocol as P
from mpipipe.execution.executor import Executor
from mpipipe.execution.osutil import RankLogHandler, leave_hung_up_terminal
from mpipipe.execution.service import world_survives
from mpipipe.execution.transport import PeerLost
from mpipipe.execution.worker import start_early
from mpipipe.console import ensure_terminal, error_line, world_rank
from mpipipe.jobdir import JobLock, default_job_id, prepare_job_dir, remove_stale_staging
from mpipipe.logical.plan import LogicalPlan, NodeInfo
from mpipipe.logical.shuffles import choose_transports, shuffle_exchange
from mpipipe.pickling import pickle_nodes
from mpipipe.platform import registry
from mpipipe.platform.base import Platform, World, relaunch_argv

if TYPE_CHECKING:
    from mpipipe.execution.scheduler import Scheduler

log = logging.getLogger("mpipipe")


def _load_scheduler() -> None:
    """The scheduler and journal are rank 0's alone: executor ranks never import them (about 20 ms each at
    start-up, while rank 0 waits for them), and rank 0 loads them while the executor ranks start."""
    import mpipipe.execution.journal  # noqa: F401
    import mpipipe.execution.scheduler  # noqa: F401


@dataclass
class JobResult:
    """What driver.run() returns on rank 0: where things went and how it went."""

    job_id: str
    job_dir: str
    stats: Dict[str, Any]
    nodes: Dict[str, Sequence[Dict[str, Any]]]  # per node, its records in partition order (made when read)
    roots: List[str]

    def outputs(self, node: Optional[str] = None) -> List[str]:
        """Output paths of `node` (default: the plan's roots), in partition order."""
        names = [node] if node else self.roots
        return [r["o"] for n in names for r in self.nodes[n] if r.get("o")]

    def values(self, node: Optional[str] = None) -> List[Any]:
        """Values returned by the tasks of `node` (default: the roots), in partition order. A value too large for
        the journal is read from its file in the job directory (see execution.task.VALUE_INLINE_BYTES)."""
        from mpipipe.execution.task import read_value

        names = [node] if node else self.roots
        return [read_value(self.job_dir, r["vf"]) if r.get("vf") else r.get("v") for n in names for r in self.nodes[n]]


def _rank_log(job_dir: str, name: str, level: str) -> logging.Handler:
    handler = RankLogHandler(os.path.join(job_dir, "logs", name))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    return handler


def _stop_reason(e: BaseException) -> str:
    """What executors are told when a run ends by an exception (decides how gently workers stop)."""
    return "interrupted" if isinstance(e, KeyboardInterrupt) or getattr(e, "exit_code", 0) == 130 else "failed"


def _platform_key(platform: Platform) -> str:
    """Subclasses share a name ("local") but not a world: key worlds by class."""
    cls = type(platform)
    return f"{cls.__module__}:{cls.__qualname__}"


class Runtime:
    """Rank 0's open world for one job, kept between the run() calls of one process.

    The first run connects, locks the job directory and says hello; every run
    then ships only the nodes the executors have not seen (their workers keep
    nodes by id) and schedules. The lock is held until the world closes, so
    no other process takes the job directory between two runs of this one.
    """

    def __init__(self, key: Tuple[str, str], platform: Platform, world: World, job_id: str, job_dir: str) -> None:
        self.key = key
        self.platform = platform
        self.world = world
        self.job_id = job_id
        self.job_dir = job_dir
        self.hosts: Dict[int, Dict[str, Any]] = {}
        self.sent: Set[int] = set()  # node ids the executors have
        self.infos: Dict[int, NodeInfo] = {}  # every node run so far, for job.json
        self.runs = 0
        self.started = time.time()
        # connect() started these executors, so it can start new ones; executors that came
        # with the launcher (mpiexec) leave at STOP and never come back to this process
        self.reopenable = bool(world.handles)
        self.closed = False
        self.debug = False
        self._lock: Optional[JobLock] = None
        self._handler: Optional[logging.Handler] = None
        self.live: Optional[Any] = None  # execution.service.LiveRun, made by the first module submitted

    def open(self, config: JobConfig, reason: str) -> None:
        """Lock the job directory, start the rank-0 log, and greet the executors (no plan yet)."""
        self.debug = config.debug
        lock = JobLock(self.job_dir)
        lock.acquire()
        self._lock = lock
        remove_stale_staging(self.job_dir)
        self._handler = _rank_log(self.job_dir, "rank-0.log", config.log_level)
        ensure_terminal()  # before the level of the rank logs is set on "mpipipe": the terminal keeps the user's
        log.addHandler(self._handler)
        log.setLevel(config.log_level)
        log.info("job %s on %s (%s), %d executor(s)", self.job_id, self.platform.name, reason, self.world.num_executors)
        setup = {"job_dir": self.job_dir, "job_id": self.job_id, "sys_path": list(sys.path),
                 "workers_per_executor": config.workers_per_executor, "faults": config.inject_faults}
        if self.world.transport.peer_buffers:  # an MPI world: its ranks may move shuffles' buckets themselves
            setup["shuffle"] = {"budget": config.shuffle_memory, "spill_dir": config.shuffle_spill_dir,
                                "world": f"{os.getpid()}"}
        self.hosts = P.scheduler_hello(self.world.transport, setup, config.hello_timeout)
        log.info("executors ready: %s", {r: h["host"] for r, h in sorted(self.hosts.items())})

    def ship(self, plan: LogicalPlan) -> int:
        """Send the plan's nodes that no earlier run sent; returns how many went."""
        return self.ship_nodes(plan.nodes, plan.infos)

    def ship_nodes(self, nodes: List[Any], infos: List[NodeInfo]) -> int:
        new = [n for n in nodes if n.id not in self.sent]
        if new:
            P.scheduler_nodes(self.world.transport, [pickle_nodes(new)], {n.id: n.name for n in new},
                              shuffle_exchange(new))
            self.sent.update(n.id for n in new)
        self.infos.update((i.id, i) for i in infos)
        return len(new)

    def close(self, reason: str) -> None:
        """STOP the executors, leave the world, drop the lock; a later run() opens a new world."""
        if self.closed:
            return
        if self.live is not None:
            self.live.stop()  # its pump thread must be gone before rank 0 says goodbye
        self.closed = True
        if _RUNTIMES.get(self.key) is self:
            del _RUNTIMES[self.key]
        if not self.reopenable:
            why = {"done": "", "failed": " after a run failed",
                   "interrupted": " after a run was interrupted"}.get(reason, "")
            _SPENT[self.key[0]] = (
                f"this process's {self.platform.name} world was closed{why} and its executor ranks have left; "
                "run the script again (the journal keeps what finished)"
            )
        try:
            P.scheduler_goodbye(self.world.transport, reason)
        finally:
            try:
                self.platform.disconnect(self.world)
            finally:
                if self._handler is not None:
                    log.removeHandler(self._handler)
                    self._handler.close()
                if self._lock is not None:
                    self._lock.release()


_RUNTIMES: Dict[Tuple[str, str], Runtime] = {}  # (platform class, job dir) -> its open world
_SPENT: Dict[str, str] = {}  # platform class -> why this process cannot make its world again
_JOURNALED: Set[str] = set()  # job dirs this process has run: --fresh never wipes them again
_EXIT_HOOK = False
_SERVED = False  # this process was an executor rank whose world has ended


def shutdown(reason: str = "done") -> None:
    """Close every world this process keeps open (at exit this happens by itself)."""
    for rt in list(_RUNTIMES.values()):
        rt.close(reason)
    from mpipipe.platform.local import discard_early

    discard_early()  # executors started early that no run took


def _close_at_exit() -> None:
    """Close the worlds at exit, and before an uncaught exception's hook (the Driver's may os._exit)."""
    global _EXIT_HOOK
    if not _EXIT_HOOK:
        atexit.register(shutdown)
        _EXIT_HOOK = True
    if getattr(sys.excepthook, "_mpipipe_shutdown", False):
        return
    previous = sys.excepthook

    def hook(etype, value, tb):  # type: ignore[no-untyped-def]
        peers = any(not rt.reopenable and not rt.debug for rt in _RUNTIMES.values())
        shutdown("interrupted" if issubclass(etype, KeyboardInterrupt) else "failed")
        if peers and isinstance(value, MpipipeError):
            # the Driver's one line, without its os._exit: an MPI launcher kills every rank, and
            # reports a signal, when one leaves with an error before the others are gone (exit code 1)
            error_line(str(value))
            return
        previous(etype, value, tb)

    hook._mpipipe_shutdown = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _launch(platform: Platform) -> NoReturn:
    """Start the world under the platform, wait for it, exit with its code. A closed terminal (SIGHUP) stops
    it as SIGTERM does: the platform's handler asks the world to stop, rank 0 journals, the exit code is 130."""
    if threading.current_thread() is threading.main_thread():
        def hangup(_signum: int, _frame: Any) -> None:
            leave_hung_up_terminal()
            os.kill(os.getpid(), signal.SIGTERM)  # whatever SIGTERM does now (the platform's wait sets it)

        signal.signal(signal.SIGHUP, hangup)
    handles = platform.start_job(relaunch_argv())
    raise SystemExit(platform.wait_job(handles))


class JobManager:
    def __init__(self, config: JobConfig, user_args: Optional[Dict[str, Any]] = None) -> None:
        self.config = config
        self.user_args = dict(user_args or {})
        self.job_id = config.job_id or default_job_id(self.user_args)

    def platform(self) -> "tuple[Platform, str]":
        cls, reason = registry.choose(self.config)
        return cls(self.config), reason

    def run(self, plan: LogicalPlan, steps: Optional[Any] = None) -> Optional[JobResult]:
        """Run the plan; `steps` (mpipipe.launchers.plan_steps.StepLaunchers, made by the entry points from
        a node name -> launcher mapping) runs some nodes' tasks on their launchers instead of the world's
        executors."""
        if steps is not None:
            steps.check(plan.nodes)  # a wrong mapping fails before any world starts
        platform, reason = self.platform()
        if self.config.dry_run:
            self._dry_run(plan, platform, reason)
            return None
        if not platform.in_world():
            _launch(platform)
        return self._run_plan(self.runtime(platform, reason), plan, steps)

    def runtime(self, platform: Optional[Platform] = None, reason: str = "") -> Runtime:
        """Rank 0's open world for this job (opened on first use). Outside a world this launches the script
        under the platform and exits with its code; executor ranks serve here and exit."""
        if platform is None:
            platform, reason = self.platform()
        if not platform.in_world():
            _launch(platform)
        key = (_platform_key(platform), os.path.abspath(os.path.join(self.config.data_root, self.job_id)))
        rt = _RUNTIMES.get(key) or self._open(key, platform, reason)
        _close_at_exit()  # the world closes at exit, or before an uncaught error's hook
        return rt

    def live(self, rt: Runtime) -> Any:
        """The live run of this world: nodes submitted from any thread run while others run."""
        if rt.live is None:
            from mpipipe.execution.service import LiveRun

            written = [0.0]

            def ship(nodes: List[Any], infos: List[NodeInfo]) -> None:
                rt.ship_nodes(nodes, infos)
                if time.monotonic() - written[0] >= 1.0:  # job.json lists every node: not once per submission
                    written[0] = time.monotonic()
                    self._write_job_file(rt)

            def external(launchers: Dict[int, Any], nodes: List[Any], results: Any) -> Dict[int, Any]:
                """Nodes that a submission maps to a launcher: the plan steps' hand-over, keyed by name."""
                from mpipipe.launchers.plan_steps import check_launchers, external_steps

                by_name = {n.name: launchers[n.id] for n in nodes if n.id in launchers}
                check_launchers(by_name, nodes)
                return external_steps(by_name, nodes, rt.job_dir, results)

            rt.live = LiveRun(lambda: self._scheduler(rt, [], [], []), ship, lambda e: rt.close(_stop_reason(e)),
                              after_run=lambda: self._write_job_file(rt), external=external)
            self._stop_live_on_signals()
        return rt.live

    def _stop_live_on_signals(self) -> None:
        """A live run is driven from the script's own code (asyncio, futures): SIGTERM or a closed terminal
        (SIGHUP) must stop it as Ctrl-C does (the run journaled as interrupted, one line, exit 130), not kill
        the process mid-run. Only where the script left those signals alone, and from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        job_id = self.job_id

        def stop(signum: int, _frame: Any) -> None:
            if signum == signal.SIGHUP:
                leave_hung_up_terminal()
            raise JobInterrupted(f"job {job_id} stopped by {signal.Signals(signum).name}; finished runs are "
                                 "journaled (and module results cached): run the same command again to resume")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, stop)

    def _scheduler(self, rt: Runtime, nodes: List[Any], infos: List[NodeInfo], roots: List[int],
                   pinned: Optional[Set[int]] = None) -> Scheduler:
        from mpipipe.execution.journal import Journal
        from mpipipe.execution.scheduler import Scheduler, SchedulerOptions

        fresh = self.config.fresh and rt.key[1] not in _JOURNALED  # never wipe what this process journaled
        _JOURNALED.add(rt.key[1])
        options = SchedulerOptions(
            job_id=self.job_id, job_dir=rt.job_dir, platform=rt.platform.name, max_retries=self.config.max_retries,
            fail_fast=self.config.fail_fast, fresh=fresh, workers_per_executor=self.config.workers_per_executor,
            progress_interval=self.config.progress_interval, speculate=self.config.speculate,
            allow_changes=self.config.allow_changes)
        return Scheduler(
            rt.world.transport, infos, roots, options, Journal(rt.job_dir),
            resources={n.id: n.resources for n in nodes if getattr(n, "resources", None) is not None},
            hosts=self._hosts(rt.hosts), group_sizes={n.id: n.group_size for n in nodes if n.group_size > 1},
            pinned=pinned, senders={n.id for n in nodes if getattr(n, "shuffle_transport", "files") == "mpi"})

    def _hosts(self, probed: Dict[int, Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
        """What each executor rank offers: its probe, with the configuration's overrides applied."""
        from mpipipe.execution.hostprobe import apply_override, parse_overrides

        overrides = parse_overrides(self.config.hosts) if self.config.hosts else {}
        unknown = sorted(set(overrides) - set(probed))
        if unknown:
            raise ConfigError(f"--hosts names rank(s) {unknown}, but the executors are ranks "
                              f"1..{len(probed)}")
        return {r: apply_override(d, overrides[r]) if r in overrides else d for r, d in probed.items()}

    def _dry_run(self, plan: LogicalPlan, platform: Platform, reason: str) -> None:
        job_dir = os.path.join(self.config.data_root, self.job_id)
        print(plan.explain())
        print(f"platform: {platform.name} ({reason})")
        if not platform.in_world():
            print("would launch: " + " ".join(platform.launch_command(relaunch_argv())))
        print(f"job directory: {job_dir}")
        print("dry run: nothing was run")

    def _open(self, key: Tuple[str, str], platform: Platform, reason: str) -> Runtime:
        """Join the world. Executor ranks serve every run of rank 0 here, then exit; rank 0 returns its Runtime."""
        global _SERVED
        if _SERVED:
            raise SystemExit(0)  # a script that caught our SystemExit must not wait for a world that is gone
        if key[0] in _SPENT:
            raise PlatformError(_SPENT[key[0]])
        for other in _RUNTIMES.values():
            if other.key[0] == key[0] and not other.reopenable:
                raise PlatformError(
                    f"this process already runs job {other.job_id} in its {platform.name} world, whose executor "
                    "ranks serve one job; use the same --job-id and --data-root for every run() of the script"
                )
        rank = world_rank()
        if rank is not None and rank > 0:
            start_early(self.config.workers_per_executor)  # an executor rank: its workers start while MPI starts
        else:
            _load_scheduler()
        world = platform.connect()
        if world.rank != 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when the world stops
            try:
                Executor(world.transport, hello_timeout=max(600.0, self.config.hello_timeout)).run()
            finally:
                _SERVED = True
                platform.disconnect(world)
            raise SystemExit(0)  # user code after run() runs on rank 0 only
        rt: Optional[Runtime] = None
        try:
            rt = Runtime(key, platform, world, self.job_id, prepare_job_dir(self.config, self.job_id))
            rt.open(self.config, reason)
        except BaseException as e:
            if rt is not None:
                rt.close(_stop_reason(e))
            else:
                P.scheduler_goodbye(world.transport, _stop_reason(e))
                platform.disconnect(world)
            raise
        _RUNTIMES[key] = rt
        return rt

    def _run_plan(self, rt: Runtime, plan: LogicalPlan, steps: Optional[Any] = None) -> JobResult:
        """One run on the open world. A run that failed (tasks failed for good, a plan refused) leaves the world
        open for the next run; a broken world (a rank died, a protocol error) or an interrupt closes it."""
        _close_at_exit()  # again each run: a Driver made since may have put its own hook in front
        if rt.live is not None:
            rt.live.wait_idle()  # modules submitted before this plan finish first: one scheduler per world
        scheduler: Optional[Scheduler] = None
        try:
            rt.runs += 1
            log.setLevel(self.config.log_level)
            # which shuffles move over MPI is known now that the world is: before the nodes travel
            pinned = choose_transports(plan, self.config.shuffle, rt.world.transport.peer_buffers,
                                       steps.launchers if steps is not None else ())
            try:
                shipped = rt.ship(plan)
            except PeerLost as e:
                raise PlatformError(f"executor rank {e.rank} died between runs; "
                                    "run the same command again to resume") from e
            log.info("run %d of this process: %d node(s), %d sent to the executors", rt.runs, len(plan.nodes), shipped)
            self._write_job_file(rt)
            scheduler = self._scheduler(rt, plan.nodes, plan.infos, [n.id for n in plan.roots], pinned)
            if steps is not None:
                scheduler.hand_over(steps.submitters(plan.nodes, rt.job_dir, scheduler.handover.results))
            out = scheduler.run()
        except BaseException as e:
            if not world_survives(e, scheduler):
                rt.close(_stop_reason(e))
            raise
        return JobResult(self.job_id, rt.job_dir, out["stats"], out["nodes"], [n.name for n in plan.roots])

    def _write_job_file(self, rt: Runtime) -> None:
        """job.json lists every node this process has run, so `mpipipe status` sees all of its runs."""
        info = {
            "job_id": self.job_id, "mpipipe": mpipipe.__version__, "argv": sys.argv, "platform": rt.platform.name,
            "executors": rt.world.num_executors, "started": rt.started, "runs": rt.runs, "host": socket.gethostname(),
            "hosts": {str(r): d for r, d in sorted(self._hosts(rt.hosts).items())},
            "nodes": [{"id": i.id, "name": i.name, "kind": i.kind, "npartitions": i.npartitions,
                       "inputs": list(i.inputs), "pointwise": i.pointwise, "fingerprint": i.fingerprint}
                      for _, i in sorted(rt.infos.items())],
        }
        from mpipipe.ownership import write_private_file

        path = os.path.join(rt.job_dir, "job.json")
        try:
            write_private_file(path, json.dumps(info, indent=1).encode())
        except OSError as e:
            raise JournalError(f"cannot write {path}: {e.strerror}; free some space or choose another "
                               "--data-root") from None


def start_executors_early(config: JobConfig) -> None:
    """Start the job's local executors while the script builds its plan (LocalPlatform.start_early), from
    mpipipe.init() and a Driver's flags; nothing for other platforms, a dry run, a notebook (its first action
    may come much later), or with SP_EARLY_START=0."""
    from mpipipe.execution.early import turned_off
    from mpipipe.notebook import in_notebook

    if config.dry_run or turned_off() or in_notebook() or world_rank() is not None or _RUNTIMES:
        return
    try:
        cls, _reason = registry.choose(config)
    except MpipipeError:
        return  # the first run says what is wrong
    start = getattr(cls, "start_early", None)
    if start is not None:
        start(cls(config))


def report_error(e: MpipipeError, debug: bool) -> NoReturn:
    if debug:
        raise e
    error_line(str(e))
    raise SystemExit(e.exit_code)
