"""Each task reports the niceness it ran at; init(platform=...) comes from --init-platform."""
import os

import mpipipe
from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def nice_value(task):
    return os.nice(0)


def main():
    driver = Driver()
    driver.add_argument("--init-platform", default=None)
    args = driver.get_arguments()
    if args["init_platform"]:
        mpipipe.init(platform=args["init_platform"])
    ctx = Context()
    node = ComputeNode(ctx, nice_value, npartitions=3)
    result = driver.run(LogicalPlan(ctx, node))
    if result is not None:
        print("niceness=" + ",".join(str(v) for v in result.values()))
        print(f"executors={result.stats['executors']} platform={result.stats['platform']}")


if __name__ == "__main__":
    main()
