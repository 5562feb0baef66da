"""A script that runs several plans in one process, the way a lazy DataFrame runs one per action.

Run 1 (plan A): square each partition.
Run 2 (plan B): A's node again plus a new one that sums it; A's tasks come from the journal.
Run 3 (plan C): a node of a second Context, whose id must not collide with A's on the workers.

--fail-second      the new node of plan B raises, so run 2 fails for good
--slow-second S    the new node of plan B sleeps S seconds first (to interrupt run 2)
--pause S          sleep S seconds between run 1 and run 2 (after printing "between runs")
Each run prints one line: `runN ran=R cached=C values=[...]`.
"""
import os
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def square(task):
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write(str(task.partition ** 2))
    return task.partition ** 2


def total(task):
    time.sleep(task.args["sleep"])
    if task.args["fail"]:
        raise ValueError("the second run fails on purpose")
    return sum(int(open(os.path.join(d, "value.txt")).read()) for d in task.input_paths)


def cube(task):
    return task.partition ** 3


def report(label, result):
    if result is not None:  # None only on a dry run; executor ranks never come back from run()
        print(f"{label} ran={result.stats['ran']} cached={result.stats['cached']} values={result.values()}", flush=True)


def main():
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=4)
    driver.add_argument("--fail-second", action="store_true")
    driver.add_argument("--slow-second", type=float, default=0.0)
    driver.add_argument("--pause", type=float, default=0.0)
    args = driver.get_arguments()

    ctx = Context()
    sq = ComputeNode(ctx, square, npartitions=args["npartitions"])
    report("run1", driver.run(LogicalPlan(ctx, sq)))
    if args["pause"]:
        print("between runs", flush=True)
        time.sleep(args["pause"])

    tot = ComputeNode(ctx, total, inputs=[sq], args={"fail": args["fail_second"], "sleep": args["slow_second"]})
    report("run2", driver.run(LogicalPlan(ctx, tot)))

    other = Context()
    cu = ComputeNode(other, cube, npartitions=3)
    report("run3", driver.run(LogicalPlan(other, cu)))
    print("script end", flush=True)


if __name__ == "__main__":
    main()
