"""smallpond's scheduler and executors as separate processes: `Scheduler(exec_plan, ...).run()` in one,
`Executor.create(runtime_ctx, id).run()` in each of the others, all given the same RuntimeContext.

smallpond's test fabric (and scripts written like it) start these roles themselves. Here the scheduler's
run() starts rank 0 of an mpipipe job (`python -m mpipipe.execution.role_runner`, which runs the plan
with mpipipe.execution.manager.JobManager), and each executor's run() joins that job as one executor
rank: rank 0 leaves the command that joins it in a meeting folder of the runtime context's job root,
where the executors wait for it. The scheduler then returns what smallpond's does (`success`, `exec_plan`
with the outputs) and passes itself to its state observers.

This module only starts processes: the job itself runs in them, so mpipipe's scheduler and executor
modules can hand their smallpond constructors over to it without importing the job manager.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from typing import Any, Callable, List, Optional

from mpipipe.execution.task import ExecutionPlan, RuntimeContext

MEETING_FOLDER = "mpipipe-roles"
SPEC_FILE = "spec.pickle"  # what rank 0 runs: the plan, the runtime context, the scheduler's options
JOIN_FILE = "executors.json"  # the command an executor runs to join rank 0 (written by rank 0)
RESULT_FILE = "result.pickle"  # the ExecutionPlan of the finished run
DONE_FILE = "done"  # rank 0 has exited: an executor still waiting gives up


def meeting_folder(runtime_ctx: Any) -> str:
    return os.path.join(runtime_ctx.job_root, MEETING_FOLDER)


def child_env(extra: Optional[dict] = None) -> dict:
    """This process's environment, with its import path, so the other process finds the plan's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.abspath(p) for p in sys.path if p] if os.path.exists(p))
    env.update(extra or {})
    return env


def _stop_with_parent() -> None:
    from mpipipe.execution.osutil import die_with_parent

    die_with_parent(signal.SIGTERM)


class StateObserver:
    """smallpond's Scheduler.StateObserver: `callback(scheduler)` is called with the scheduler's state."""

    def __init__(self, callback: Optional[Callable[[Any], Any]] = None) -> None:
        self.enabled = True
        self.callback = callback

    def update(self, sched_state: Any) -> None:
        if self.callback is not None:
            self.callback(sched_state)

    def __repr__(self) -> str:
        return repr(self.callback) if self.callback is not None else super().__repr__()


class SchedulerRole:
    """What smallpond's `Scheduler(exec_plan, ...)` makes: run() runs the plan and returns whether it succeeded.

    max_fail_count becomes the tasks' retries and nonzero_exitcode_as_oom a task setting; the runtime
    context's num_executors, fault_inject_prob, random_seed, output_path, ... are the job's. The other
    options (max_retry_count, prioritize_retry, speculative_exec, stop_executor_on_failure,
    remove_output_root) are accepted with no effect.
    """

    StateObserver = StateObserver

    def __init__(self, exec_plan: Any, max_retry_count: int = 5, max_fail_count: int = 3,
                 prioritize_retry: bool = False, speculative_exec: str = "enable",
                 stop_executor_on_failure: bool = False, nonzero_exitcode_as_oom: bool = False,
                 remove_output_root: bool = False, sched_state_observers: Optional[List[Any]] = None) -> None:
        ctx = exec_plan.ctx if isinstance(exec_plan, ExecutionPlan) else None
        self.ctx: RuntimeContext = ctx if ctx is not None else RuntimeContext()
        self.logical_plan = exec_plan.logical_plan if isinstance(exec_plan, ExecutionPlan) else exec_plan
        self.exec_plan = exec_plan
        self.max_fail_count = max_fail_count
        self.nonzero_exitcode_as_oom = nonzero_exitcode_as_oom
        self.success = False
        self.num_local_running_works = 0
        self.sched_state_observers: List[Any] = list(sched_state_observers or [])
        # a meeting folder left by an earlier run under this job root would send executors to a rank 0 gone
        folder = meeting_folder(self.ctx)
        for name in (JOIN_FILE, DONE_FILE, RESULT_FILE, SPEC_FILE):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass

    def add_state_observer(self, observer: Any) -> None:
        self.sched_state_observers.append(observer)

    def run(self) -> bool:
        from mpipipe.ownership import make_owner_only_dirs, write_private_file
        from mpipipe.pickling import dumps

        folder = meeting_folder(self.ctx)
        make_owner_only_dirs(folder)
        spec = {"plan": self.logical_plan, "runtime_ctx": self.ctx, "max_fail_count": self.max_fail_count,
                "nonzero_exitcode_as_oom": self.nonzero_exitcode_as_oom}
        write_private_file(os.path.join(folder, SPEC_FILE), dumps(spec))
        try:
            # rank 0 stops (and journals) when this process is killed, as when a test over its time limit is
            subprocess.run([sys.executable, "-m", "mpipipe.execution.role_runner", folder], env=child_env(),
                           check=False, preexec_fn=_stop_with_parent)
        finally:
            write_private_file(os.path.join(folder, DONE_FILE), b"")
        result = os.path.join(folder, RESULT_FILE)
        if os.path.exists(result):
            from mpipipe.ownership import check_trusted_file

            check_trusted_file(result, "the result of a run")
            with open(result, "rb") as f:
                self.exec_plan = pickle.load(f)
            self.success = bool(self.exec_plan.successful)
        for observer in list(self.sched_state_observers):
            if observer.enabled:
                observer.update(self)
        return self.success

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["sched_state_observers"] = []  # they hold queues and callbacks of the process that made them
        return state


class ExecutorRole:
    """What smallpond's `Executor.create(runtime_ctx, id)` makes: run() joins the job the scheduler of the same
    runtime context runs, serves it as one executor rank until it ends, and returns whether that went well."""

    def __init__(self, runtime_ctx: Any, exec_id: str, join_timeout: float = 600.0) -> None:
        self.ctx = runtime_ctx
        self.id = exec_id
        self.join_timeout = join_timeout

    def run(self) -> bool:
        folder = meeting_folder(self.ctx)
        join = os.path.join(folder, JOIN_FILE)
        deadline = time.monotonic() + self.join_timeout
        while not os.path.exists(join):
            if os.path.exists(os.path.join(folder, DONE_FILE)) or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        from mpipipe.ownership import check_trusted_file

        check_trusted_file(join, "the address of a job's rank 0")
        with open(join, encoding="utf-8") as f:
            how = json.load(f)
        proc = subprocess.run([sys.executable, how["entrypoint"]] + list(how["args"]), env=child_env(how["envs"]),
                              check=False, preexec_fn=_stop_with_parent)
        return proc.returncode == 0

    def __repr__(self) -> str:
        return f"<Executor {self.id}>"
