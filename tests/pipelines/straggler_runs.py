"""Two runs in one process with --speculate: the first one's straggler outlives it.

Run 1: `slow`, 4 partitions; partition 0 sleeps --slow seconds in its first copy (not in a speculative
one), so a copy wins and run 1 ends while the first copy still sleeps on its rank. Run 2: `long`, one task of
--long seconds, which starts on that rank too. When the first copy of slow[0] ends, its late result must not
be taken for anything of run 2, and its output must go.

Rank 0 prints one JSON line: {"run1": values, "run2": values, "job_dir": ...}.
"""
import json
import os
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def slow(task):
    if task.partition == 0 and not task.final_output.endswith(".speculative"):
        time.sleep(task.args["slow"])
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write(str(task.partition))
    return task.partition


def long(task):
    time.sleep(task.args["long"])
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write("long")
    return "long"


def main():
    driver = Driver()
    driver.add_argument("--slow", type=float, default=4.0)
    driver.add_argument("--long", type=float, default=2.0)
    args = driver.get_arguments()
    ctx = Context()
    first = ComputeNode(ctx, slow, npartitions=4, args={"slow": args["slow"]})
    run1 = driver.run(LogicalPlan(ctx, first))
    second = ComputeNode(ctx, long, npartitions=1, args={"long": args["long"]})
    run2 = driver.run(LogicalPlan(ctx, second))
    if run2 is not None:
        print(json.dumps({"run1": run1.values(), "run2": run2.values(), "job_dir": run2.job_dir,
                          "stats1": run1.stats, "stats2": run2.stats}, default=str))


if __name__ == "__main__":
    main()
