"""A small job for the report tests: five nodes, tasks of varied length, and attempts that fail on purpose.

load (N) -> clean (N, pointwise) -> score (N, pointwise) -> summary (1) <- stats (1) <- load
- clean[3] fails on attempts 0 and 1 with an error full of HTML (<script>, &, quotes); attempt 2 succeeds
- score[7] dies with os._exit(3) on attempt 0; attempt 1 succeeds
REPORT_FAIL_FOR_GOOD=P  score[P] fails on every attempt (the job then fails; summary never runs). An
                        environment variable, not a flag: the job id and the fingerprints stay the same,
                        so a second run without it resumes the job
--scale S               multiplies every task's sleep
"""
import os
import random
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan

HTML_ERROR = "<script>alert(\"pwned\")</script> & 'quotes' <b>not bold</b>"


def _sleep(task, base):
    time.sleep(task.args["scale"] * base * (0.5 + random.Random(f"{task.partition}-{base}").random()))


def _write(task, value):
    with open(os.path.join(task.output_dir, "value.txt"), "w") as f:
        f.write(str(value))
    return value


def _read_all(task):
    total = 0
    for d in task.input_paths:
        with open(os.path.join(d, "value.txt")) as f:
            total += int(f.read())
    return total


def load(task):
    _sleep(task, 0.08)
    return _write(task, task.partition + 1)


def clean(task):
    if task.partition == 3 and task.attempt < 2:
        print(f"clean[3] attempt {task.attempt}: about to fail", flush=True)
        raise RuntimeError(f"{HTML_ERROR} in partition {task.partition}")
    _sleep(task, 0.05)
    return _write(task, _read_all(task) * 2)


def score(task):
    if task.partition == int(os.environ.get("REPORT_FAIL_FOR_GOOD", "-1")):
        raise ValueError(f"score[{task.partition}] cannot be computed")
    if task.partition == 7 and task.attempt == 0:
        os._exit(3)
    _sleep(task, 0.15 if task.partition % 4 == 0 else 0.06)
    return _write(task, _read_all(task) + 1)


def stats(task):
    _sleep(task, 0.1)
    return _write(task, _read_all(task))


def summary(task):
    _sleep(task, 0.05)
    return _write(task, _read_all(task))


def main():
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=12)
    driver.add_argument("--scale", type=float, default=1.0)
    args = driver.get_arguments()
    ctx = Context()
    a = dict(args)
    src = ComputeNode(ctx, load, npartitions=args["npartitions"], args=a, name="load")
    cl = ComputeNode(ctx, clean, inputs=[src], npartitions=args["npartitions"], pointwise=True, args=a, name="clean")
    sc = ComputeNode(ctx, score, inputs=[cl], npartitions=args["npartitions"], pointwise=True, args=a, name="score")
    st = ComputeNode(ctx, stats, inputs=[src], npartitions=1, args=a, name="stats")
    top = ComputeNode(ctx, summary, inputs=[sc, st], npartitions=1, args=a, name="summary")
    result = driver.run(LogicalPlan(ctx, top))
    if result is not None:
        print(f"summary={result.values()[0]}")


if __name__ == "__main__":
    main()
