"""A test pipeline for SLURM requeue and time limits: tasks that sleep, slower on the job's first start.

-n N             tasks of the node `nap`, then one `total` task
--sleep S        each task sleeps S seconds while SLURM_RESTART_COUNT is 0 or unset (the first start)
--sleep-after R  ... and R seconds once SLURM restarted the job
Each task returns the restart count it ran under, so the journal tells which start ran what.
"""
import os
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def nap(task):
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    time.sleep(task.args["sleep"] if restart == 0 else task.args["sleep_after"])
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write(str(task.partition))
    return restart


def total(task):
    s = 0
    for d in task.input_paths:
        with open(os.path.join(d, "value.txt")) as f:
            s += int(f.read())
    return s


def main():
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    driver.add_argument("--sleep", type=float, default=1.0)
    driver.add_argument("--sleep-after", type=float, default=0.05)
    args = driver.get_arguments()
    ctx = Context()
    naps = ComputeNode(ctx, nap, npartitions=args["npartitions"],
                       args={"sleep": args["sleep"], "sleep_after": args["sleep_after"]})
    tot = ComputeNode(ctx, total, inputs=[naps], npartitions=1)
    result = driver.run(LogicalPlan(ctx, tot))
    if result is not None:
        print(f"total {result.values()[0]}")


if __name__ == "__main__":
    main()
