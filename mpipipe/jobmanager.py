"""The JobManager: one frozen config, one platform, then launch the world or join it.

In the launching process (outside the world) it starts the world and exits with
its code. Inside, rank 0 prepares the job directory and runs the scheduler;
every other rank runs the executor loop and exits when told.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import mpipipe
from mpipipe.config import JobConfig
from mpipipe.errors import JournalError, MpipipeError, PlatformError
from mpipipe.execution import protocol as P
from mpipipe.execution.executor import Executor
from mpipipe.execution.journal import Journal
from mpipipe.execution.scheduler import Scheduler
from mpipipe.logical.node import LogicalPlan
from mpipipe.platform import registry
from mpipipe.platform.base import Platform, World, relaunch_argv

log = logging.getLogger("mpipipe")


@dataclass
class JobResult:
    """What driver.run() returns on rank 0: where things went and how it went."""

    job_id: str
    job_dir: str
    stats: Dict[str, Any]
    nodes: Dict[str, List[Dict[str, Any]]]
    roots: List[str]

    def outputs(self, node: Optional[str] = None) -> List[str]:
        """Output paths of `node` (default: the plan's roots), in partition order."""
        names = [node] if node else self.roots
        return [r["o"] for n in names for r in self.nodes[n] if r.get("o")]

    def values(self, node: Optional[str] = None) -> List[Any]:
        """Values returned by the tasks of `node` (default: the roots), in partition order."""
        names = [node] if node else self.roots
        return [r.get("v") for n in names for r in self.nodes[n]]


def default_job_id(user_args: Dict[str, Any]) -> str:
    """Same script and same arguments -> same job id, so re-running a command resumes it."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "interactive"
    stem = os.path.splitext(os.path.basename(script))[0] or "job"
    digest = hashlib.sha1(json.dumps([script, sorted((k, repr(v)) for k, v in user_args.items())]).encode()).hexdigest()
    return f"{stem}-{digest[:8]}"


class JobLock:
    """An exclusive lock on the job directory; the kernel drops it when the holder dies."""

    def __init__(self, job_dir: str) -> None:
        self.path = os.path.join(job_dir, "lock")
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JournalError(
                f"job directory {os.path.dirname(self.path)} is in use by {holder}; wait for that run to end "
                "or choose another --job-id"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_job_dir(config: JobConfig, job_id: str) -> str:
    job_dir = os.path.join(config.data_root, job_id)
    try:
        os.makedirs(config.data_root, exist_ok=True)
        os.makedirs(job_dir, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(job_dir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(job_dir, "outputs"), exist_ok=True)
    except OSError as e:
        raise JournalError(f"cannot create the job directory {job_dir}: {e.strerror}; choose a writable --data-root") from None
    if not os.access(job_dir, os.W_OK):
        raise JournalError(f"job directory {job_dir} is not writable; choose a writable --data-root")
    return job_dir


def _rank_log(job_dir: str, name: str, level: str) -> logging.Handler:
    handler = logging.FileHandler(os.path.join(job_dir, "logs", name))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    return handler


class JobManager:
    def __init__(self, config: JobConfig, user_args: Optional[Dict[str, Any]] = None) -> None:
        self.config = config
        self.user_args = dict(user_args or {})
        self.job_id = config.job_id or default_job_id(self.user_args)

    def platform(self) -> "tuple[Platform, str]":
        cls, reason = registry.choose(self.config)
        return cls(self.config), reason

    def run(self, plan: LogicalPlan) -> Optional[JobResult]:
        platform, reason = self.platform()
        if self.config.dry_run:
            self._dry_run(plan, platform, reason)
            return None
        if not platform.in_world():
            handles = platform.start_job(relaunch_argv())
            raise SystemExit(platform.wait_job(handles))
        world = platform.connect()
        if world.rank != 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when the world stops
            try:
                Executor(world.transport, hello_timeout=max(600.0, self.config.hello_timeout)).run()
            finally:
                platform.disconnect(world)
            raise SystemExit(0)
        return self._run_rank0(plan, platform, world, reason)

    def _dry_run(self, plan: LogicalPlan, platform: Platform, reason: str) -> None:
        job_dir = os.path.join(self.config.data_root, self.job_id)
        print(plan.explain())
        print(f"platform: {platform.name} ({reason})")
        if not platform.in_world():
            print("would launch: " + " ".join(platform.launch_command(relaunch_argv())))
        print(f"job directory: {job_dir}")
        print("dry run: nothing was run")

    def _run_rank0(self, plan: LogicalPlan, platform: Platform, world: World, reason: str) -> JobResult:
        lock: Optional[JobLock] = None
        handler: Optional[logging.Handler] = None
        try:
            job_dir = prepare_job_dir(self.config, self.job_id)
            lock = JobLock(job_dir)
            lock.acquire()
            handler = _rank_log(job_dir, "rank-0.log", self.config.log_level)
            log.addHandler(handler)
            log.setLevel(self.config.log_level)
            log.info("job %s on %s (%s), %d executor(s)", self.job_id, platform.name, reason, world.num_executors)
            self._write_job_file(job_dir, plan, platform, world)
            import cloudpickle

            setup = {"job_dir": job_dir, "job_id": self.job_id, "sys_path": list(sys.path),
                     "node_blobs": [cloudpickle.dumps(plan.nodes)],
                     "node_names": {n.id: n.name for n in plan.nodes},
                     "workers_per_executor": self.config.workers_per_executor}
            hosts = P.scheduler_hello(world.transport, setup, self.config.hello_timeout)
            log.info("executors ready: %s", {r: h["host"] for r, h in sorted(hosts.items())})
            scheduler = Scheduler(
                world.transport, plan.infos, [n.id for n in plan.roots], job_dir=job_dir, job_id=self.job_id,
                journal=Journal(job_dir), max_retries=self.config.max_retries, fail_fast=self.config.fail_fast,
                fresh=self.config.fresh, workers_per_executor=self.config.workers_per_executor,
                platform=platform.name, progress_interval=self.config.progress_interval,
            )
            out = scheduler.run()
            P.scheduler_goodbye(world.transport, "done")
            return JobResult(self.job_id, job_dir, out["stats"], out["nodes"], [n.name for n in plan.roots])
        except BaseException as e:
            reason_word = "interrupted" if isinstance(e, KeyboardInterrupt) or getattr(e, "exit_code", 0) == 130 else "failed"
            P.scheduler_goodbye(world.transport, reason_word)
            raise
        finally:
            platform.disconnect(world)
            if handler is not None:
                log.removeHandler(handler)
                handler.close()
            if lock is not None:
                lock.release()

    def _write_job_file(self, job_dir: str, plan: LogicalPlan, platform: Platform, world: World) -> None:
        info = {
            "job_id": self.job_id, "mpipipe": mpipipe.__version__, "argv": sys.argv, "platform": platform.name,
            "executors": world.num_executors, "started": time.time(), "host": socket.gethostname(),
            "nodes": [{"id": i.id, "name": i.name, "kind": i.kind, "npartitions": i.npartitions,
                       "inputs": list(i.inputs), "pointwise": i.pointwise, "fingerprint": i.fingerprint}
                      for i in plan.infos],
        }
        tmp = os.path.join(job_dir, "job.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1)
        os.replace(tmp, os.path.join(job_dir, "job.json"))


def report_error(e: MpipipeError, debug: bool) -> "NoReturn":  # type: ignore[name-defined]
    if debug:
        raise e
    print(f"mpipipe: error: {e}", file=sys.stderr)
    raise SystemExit(e.exit_code)
