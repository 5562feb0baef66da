"""A test pipeline whose tasks fail on purpose: square partitions, then sum them.

--mode exception|exit|segv|sigkill  how partition --fail-partition fails
--fail-attempts K                    fail on attempts 0..K-1 only (-1: always)
--sleep S                            each square task sleeps S seconds (for kill tests)
"""
import ctypes
import os
import signal
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def square(task):
    a = task.args
    if task.partition == a["fail_partition"] and (a["fail_attempts"] < 0 or task.attempt < a["fail_attempts"]):
        print(f"about to fail partition {task.partition} with {a['mode']}", flush=True)
        if a["mode"] == "exception":
            raise ValueError(f"bad value in partition {task.partition}")
        if a["mode"] == "exit":
            os._exit(3)
        if a["mode"] == "segv":
            ctypes.string_at(0)
        if a["mode"] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
    if a["sleep"]:
        time.sleep(a["sleep"])
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write(str(task.partition ** 2))
    return task.partition ** 2


def total(task):
    s = 0
    for d in task.input_paths:
        with open(os.path.join(d, "value.txt")) as f:
            s += int(f.read())
    with open(os.path.join(task.output_dir, "total.txt"), "w") as f:
        f.write(str(s))
    return s


def main():
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    driver.add_argument("--mode", default="none", choices=["none", "exception", "exit", "segv", "sigkill"])
    driver.add_argument("--fail-partition", type=int, default=-1)
    driver.add_argument("--fail-attempts", type=int, default=1)
    driver.add_argument("--sleep", type=float, default=0.0)
    args = driver.get_arguments()
    ctx = Context()
    sq = ComputeNode(ctx, square, npartitions=args["npartitions"], args=dict(args))
    tot = ComputeNode(ctx, total, inputs=[sq], npartitions=1)
    result = driver.run(LogicalPlan(ctx, tot))
    if result is not None:
        print(f"total={result.values()[0]}")


if __name__ == "__main__":
    main()
