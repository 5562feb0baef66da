"""Runs in one process after failed ones: a plan whose task raises, then one whose task returns a value JSON
cannot hold (a set), each failing for good and caught; then a plan whose tasks return numpy scalars.

Each failed run prints `<label> failed <exit code>`; the last prints `numbers <JSON>`: the values read back
and their Python type names.
"""
import json

import numpy as np

from mpipipe import ComputeNode, Context, Driver, LogicalPlan

NUMBERS = [np.float64(1.5), np.int64(3), np.bool_(True), np.array(2.5), {"mean": np.float32(0.25), "n": [np.int8(2)]}]


def boom(task):
    raise ValueError("boom on purpose")


def a_set(task):
    return {1, 2}


def numbers(task):
    return NUMBERS[task.partition]


def failing(driver, label, fn):
    """Run a plan that fails for good; the Driver reports it and raises SystemExit, which is caught here."""
    ctx = Context()
    try:
        driver.run(LogicalPlan(ctx, ComputeNode(ctx, fn, name=label)))
    except SystemExit as e:
        if not e.code:
            raise  # an executor rank whose world has ended
        print(f"{label} failed {e.code}", flush=True)


def main():
    driver = Driver()
    driver.get_arguments()
    failing(driver, "boom", boom)
    failing(driver, "a_set", a_set)
    ctx = Context()
    result = driver.run(LogicalPlan(ctx, ComputeNode(ctx, numbers, npartitions=len(NUMBERS), name="numbers")))
    values = result.values()
    print("numbers " + json.dumps({"values": values, "types": [type(v).__name__ for v in values]}), flush=True)


if __name__ == "__main__":
    main()
