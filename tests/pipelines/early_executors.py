"""Local executors started by mpipipe.init(), before the first action: which processes run the tasks.

    python early_executors.py OUT [--set-env] [--driver]

Prints `before: PIDS` (the local executors running right after init()), then runs one action whose tasks
report their executor's pid (their worker's parent) and the variable EARLY_MARK; prints `ran: PIDS MARK`.
--set-env sets EARLY_MARK between init() and the action. --driver: a Driver and a plan instead (the executors
start when the script reads its flags).
"""
import os
import sys
import time

import pyarrow as pa
import pyarrow.parquet  # noqa: F401

import mpipipe


def executors():
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if parent == me and b"mpipipe.execution.local_executor" in argv:
            found.append(int(pid))
    return sorted(found)


def where(table):
    n = table.num_rows
    return pa.table({"executor": [os.getppid()] * n, "mark": [os.environ.get("EARLY_MARK", "")] * n})


def where_plan(runtime_ctx, tables):
    return where(tables[0])


def with_driver(out):
    from mpipipe import Driver
    from mpipipe.logical import ArrowComputeNode, Context, DataSinkNode, DataSourceNode, LogicalPlan, ParquetDataSet

    driver = Driver()
    driver.add_argument("out")
    driver.add_argument("--set-env", action="store_true")
    driver.add_argument("--driver", action="store_true")
    args = driver.get_arguments()
    time.sleep(0.5)
    print("before:", " ".join(map(str, executors())), flush=True)
    os.makedirs(out + "-in", exist_ok=True)
    pa.parquet.write_table(pa.table({"x": list(range(40))}), os.path.join(out + "-in", "x.parquet"))
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([os.path.join(out + "-in", "*.parquet")]))
    node = ArrowComputeNode(ctx, (src,), process_func=where_plan)
    driver.run(LogicalPlan(ctx, DataSinkNode(ctx, (node,), args["out"])))
    table = pa.parquet.read_table(args["out"])
    print("ran:", " ".join(map(str, sorted(set(table.column("executor").to_pylist())))), flush=True)


def main():
    out = sys.argv[1]
    if "--driver" in sys.argv:
        with_driver(out)
        return
    sp = mpipipe.init()
    time.sleep(0.5)  # the script builds its plan
    print("before:", " ".join(map(str, executors())), flush=True)
    if "--set-env" in sys.argv:
        os.environ["EARLY_MARK"] = "set"
    df = sp.from_arrow(pa.table({"x": list(range(40))})).repartition(4, by="x % 4").map_batches(where)
    df.write_parquet(out)
    table = df.to_arrow()
    print("ran:", " ".join(map(str, sorted(set(table.column("executor").to_pylist())))),
          ",".join(sorted(set(table.column("mark").to_pylist()))) or "-", flush=True)


if __name__ == "__main__":
    main()
