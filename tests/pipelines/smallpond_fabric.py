"""smallpond's way of running a plan by hand, as its test fabric does: a Scheduler(exec_plan) in one process
and Executor.create(runtime_ctx, id) in others, all given one RuntimeContext; the scheduler's final state
comes back through a multiprocessing queue. Prints what it checks as one JSON line.

    python smallpond_fabric.py ROOT INPUT... [--fail] [--executors N]
"""
import argparse
import json
import os
import queue
from datetime import datetime
from multiprocessing import Manager, Process

from mpipipe.common import DEFAULT_MAX_FAIL_COUNT, DEFAULT_MAX_RETRY_COUNT
from mpipipe.execution.executor import Executor
from mpipipe.execution.scheduler import Scheduler
from mpipipe.execution.task import ExecutionPlan, JobId, RuntimeContext
from mpipipe.logical.dataset import ParquetDataSet
from mpipipe.logical.node import (ArrowComputeNode, Context, DataSetPartitionNode, DataSourceNode, LogicalPlan,
                                  SqlEngineNode)
from mpipipe.logical.planner import Planner


def add_host(runtime_ctx, tables):
    import pyarrow as pa

    t = tables[0]
    runtime_ctx.task.inject_fault()
    return t.append_column("host", pa.array([u.split("/")[2] for u in t.column("url").to_pylist()]))


def always_fails(runtime_ctx, tables):
    raise ValueError("this node always fails")


class SaveState:
    def __init__(self, q):
        self.q = q

    def __call__(self, state):
        if state.num_local_running_works == 0:
            self.q.put(state)
        return True


def run_scheduler(runtime_ctx, scheduler, q):
    runtime_ctx.initialize("scheduler")
    scheduler.add_state_observer(Scheduler.StateObserver(SaveState(q)))
    scheduler.run()


def run_executor(runtime_ctx, executor):
    runtime_ctx.initialize(executor.id)
    executor.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--executors", type=int, default=2)
    args = parser.parse_args()

    ctx = Context()
    parts = DataSetPartitionNode(ctx, (DataSourceNode(ctx, ParquetDataSet(args.inputs)),), 3)
    hosts = ArrowComputeNode(ctx, (parts,), process_func=always_fails if args.fail else add_host,
                             output_name="hosts")
    counts = SqlEngineNode(ctx, (hosts,), "select host, count(*) as n from {0} group by host")
    plan = LogicalPlan(ctx, counts)

    runtime_ctx = RuntimeContext(JobId.new(), datetime.now(), args.root, num_executors=args.executors,
                                 random_seed=123456, fault_inject_prob=0.3, secs_executor_probe_interval=0.1,
                                 console_log_level="WARNING")
    exec_plan = Planner(runtime_ctx).create_exec_plan(plan)
    assert isinstance(exec_plan, ExecutionPlan) and exec_plan.ctx is runtime_ctx
    manager = Manager()
    states = manager.Queue()
    scheduler = Scheduler(exec_plan, max_retry_count=DEFAULT_MAX_RETRY_COUNT, max_fail_count=DEFAULT_MAX_FAIL_COUNT,
                          prioritize_retry=False, speculative_exec="enable", stop_executor_on_failure=False,
                          nonzero_exitcode_as_oom=False)
    executors = [Executor.create(runtime_ctx, f"executor-{i}") for i in range(args.executors)]
    procs = [Process(target=run_scheduler, args=(runtime_ctx, scheduler, states), name="scheduler")]
    procs += [Process(target=run_executor, args=(runtime_ctx, e), name=e.id) for e in executors]
    for p in reversed(procs):  # executors first, as smallpond's fabric starts them
        p.start()
    for i, p in enumerate(procs):
        p.join(timeout=None if i == 0 else 30)
    latest = scheduler
    while True:
        try:
            latest = states.get(block=False)
        except queue.Empty:
            break
    out = {"exit_codes": [p.exitcode for p in procs], "success": latest.success,
           "same_object": latest is scheduler, "executor_ids": [e.id for e in executors]}
    if latest.success:
        result = latest.exec_plan
        out["counts"] = sorted((r["host"], r["n"]) for r in result.final_output.to_arrow_table().to_pylist())
        out["hosts_rows"] = result.get_output("hosts").num_rows
        out["outputs_folder"] = os.path.isdir(os.path.join(result.ctx.output_root, "hosts"))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
