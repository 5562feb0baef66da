"""A test pipeline whose tasks return large values: partition p returns a dict with a string of --mb MiB.

Prints one line per value on rank 0: `value P len=N head=...`, so a test can check that result.values()
gives back what the tasks returned, on the first run and on a resumed one.
"""
from mpipipe import ComputeNode, Context, Driver, LogicalPlan


def make_value(task):
    size = int(task.args["mb"] * (1 << 20))
    return {"partition": task.partition, "blob": chr(ord("a") + task.partition % 26) * size, "small": [1, 2.5, None]}


def main():
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=2)
    driver.add_argument("--mb", type=float, default=4.0)
    args = driver.get_arguments()
    ctx = Context()
    node = ComputeNode(ctx, make_value, npartitions=args["npartitions"], args={"mb": args["mb"]}, name="big")
    result = driver.run(LogicalPlan(ctx, node))
    if result is not None:
        for v in result.values():
            print(f"value {v['partition']} len={len(v['blob'])} head={v['blob'][:3]} small={v['small']}", flush=True)


if __name__ == "__main__":
    main()
