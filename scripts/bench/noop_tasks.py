"""Dispatch throughput: N no-op tasks, each its own task, journaling and retries on.

    mpiexec -n 4 python scripts/bench/noop_tasks.py --tasks 20000
    python scripts/bench/noop_tasks.py --tasks 20000 --num-executors 3

Prints one line: tasks, wall time of the scheduler run, tasks/s.
"""
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def noop(task):
    return None


def main():
    driver = Driver(description="no-op task throughput")
    driver.add_argument("--tasks", type=int, default=20000)
    args = driver.get_arguments()
    ctx = Context()
    node = ComputeNode(ctx, noop, npartitions=args["tasks"])
    t0 = time.perf_counter()
    result = driver.run(LogicalPlan(ctx, node))
    wall = time.perf_counter() - t0
    if result is not None:
        ran = result.stats["ran"]
        print(f"noop: {args['tasks']} tasks, {ran} ran, {result.stats['executors']} executors, "
              f"{wall:.2f} s, {ran / wall:,.0f} tasks/s")


if __name__ == "__main__":
    main()
