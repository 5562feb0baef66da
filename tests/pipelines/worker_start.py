"""How an executor rank's first worker was started, and what it inherited, reported by the tasks themselves.

--before NAME   what the script does before it imports mpipipe: "nothing", "mpi" (loads mpi4py.MPI, which
                starts MPI), "thread" (a thread runs), "module" (mpipipe is imported by a module of the script,
                worker_start_lib, which defines the task function after that import)
--marks DIR     each process that runs its exit handlers leaves a file there (set before mpipipe loads)
"""
import atexit
import os
import signal
import sys

before = sys.argv[sys.argv.index("--before") + 1] if "--before" in sys.argv else "nothing"
marks = sys.argv[sys.argv.index("--marks") + 1]
atexit.register(lambda: open(os.path.join(marks, f"exit-{os.getpid()}"), "w").close())
signal.signal(signal.SIGUSR1, lambda *_: None)
if before == "mpi":
    from mpi4py import MPI  # noqa: F401
elif before == "thread":
    import threading

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
if before == "module":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from worker_start_lib import how_started  # noqa: E402
else:
    def how_started(task):
        from worker_start_lib import describe

        return describe(task)

from mpipipe import ComputeNode, Context, Driver, LogicalPlan  # noqa: E402


def main():
    driver = Driver()
    driver.add_argument("--before", default="nothing")
    driver.add_argument("--marks")
    driver.get_arguments()
    ctx = Context()
    node = ComputeNode(ctx, how_started, npartitions=3, name="how")
    result = driver.run(LogicalPlan(ctx, node))
    if result is not None:
        if before == "thread":
            stop.set()
        for v in result.values():
            print("WORKER", v)


if __name__ == "__main__":
    main()
