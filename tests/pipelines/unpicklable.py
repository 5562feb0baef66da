"""A plan whose function uses a module-level lock (cannot be pickled), or a closure over an open file."""
import socket
import threading

from mpipipe import ComputeNode, Context, Driver, LogicalPlan

LOCK = threading.Lock()


def with_lock(task):
    with LOCK:
        return task.partition


def main() -> None:
    driver = Driver()
    driver.add_argument("--what", default="global")
    args = driver.get_arguments()
    ctx = Context()
    if args["what"] == "global":
        fn = with_lock
    else:
        conn = socket.socket()

        def fn(task):
            return conn.fileno() + task.partition
    node = ComputeNode(ctx, fn, npartitions=2, name="uses_" + args["what"])
    print(driver.run(LogicalPlan(ctx, node)).values())


if __name__ == "__main__":
    main()
