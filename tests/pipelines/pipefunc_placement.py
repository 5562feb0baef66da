"""Each function's resources reach its tasks: run on one executor rank of 2 cores with 2 workers, tasks of
`held` (2 cores each) may not overlap anything, tasks of `shared` (1 core each) may run two at a time.
Prints one JSON line: per element its (start, end, OMP_NUM_THREADS, pid)."""
import json
import os
import time

from pipefunc import Pipeline, pipefunc

from mpipipe.pipefunc import MpiExecutor


def interval():
    started = time.time()
    time.sleep(0.3)
    return [started, time.time(), os.environ.get("OMP_NUM_THREADS"), os.getpid()]


@pipefunc(output_name="held", mapspec="x[i] -> held[i]", resources={"cpus": 2}, resources_scope="element")
def held(x):
    return interval()


@pipefunc(output_name="shared", mapspec="x[i] -> shared[i]", resources=lambda kw: {"cpus": 1},
          resources_scope="element")
def shared(x):
    return interval()


@pipefunc(output_name="free", mapspec="x[i] -> free[i]")
def free(x):
    return os.environ.get("OMP_NUM_THREADS")


if __name__ == "__main__":
    executor = MpiExecutor()
    pipeline = Pipeline([held, shared, free])
    result = pipeline.map({"x": range(4)}, executor=executor, show_progress=True, parallel=True)
    print(json.dumps({name: result[name].output.tolist() for name in ("held", "shared", "free")}))
