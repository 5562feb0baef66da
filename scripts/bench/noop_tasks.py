"""Dispatch throughput: N no-op tasks, each its own task, journaling and retries on.

    mpiexec -n 4 python scripts/bench/noop_tasks.py --tasks 20000
    python scripts/bench/noop_tasks.py --tasks 20000 --num-executors 3

Prints one line: tasks, wall time of the scheduler run, tasks/s. With
--report (what the benchmark runner passes) it also prints a BENCH_RESULT line
with the same figures and rank 0's peak resident memory (the peak of the
process that ran the scheduler, read inside it after the run; see
benchlib.peak_rss_mb).
"""
import json
import os
import sys
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def noop(task):
    return None


def main():
    driver = Driver(description="no-op task throughput")
    driver.add_argument("--tasks", type=int, default=20000)
    driver.add_argument("--report", action="store_true", help="print a BENCH_RESULT line for scripts/bench/run_all.py")
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
        if args["report"]:
            # the harness's helpers load here, on rank 0 after the run: a user's script has none of them, and
            # importing them at the top would add their start-up to every rank's
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from benchlib import peak_rss_mb

            rss = peak_rss_mb()
            print("BENCH_RESULT " + json.dumps({"inner": wall, "tasks": args["tasks"], "ran": ran,
                                                "cached": result.stats["cached"], "retried": result.stats["retried"],
                                                "executors": result.stats["executors"],
                                                "platform": result.stats["platform"], "rank0_rss_mb": rss}),
                  flush=True)


if __name__ == "__main__":
    main()
