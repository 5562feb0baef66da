"""mpipipe.futures.Executor with resources: on the world (placed) and on a non-world launcher (module arrays).
Prints one JSON line."""
import json
import os

import mpipipe
from mpipipe.futures import Executor
from mpipipe.launchers import DirectLauncher, DynamicLauncher


def threads(x):
    return [x, os.environ.get("OMP_NUM_THREADS")]


def boom(x):
    raise ValueError(f"bad {x}")


if __name__ == "__main__":
    mpipipe.Driver().get_arguments()
    out = {}
    ex = Executor(resources={"cpus": 2}, name="two cores").join()
    out["world"] = [f.result() for f in ex.submit_calls([(threads, (i,), {}) for i in range(3)])]
    out["one"] = ex.submit_calls([(threads, (9,), {})], resources="cpu(cores=1)", name="one")[0].result()
    out["plain"] = Executor().submit(threads, 5).result()
    arrays = Executor(DynamicLauncher([DirectLauncher()]), resources={"cpus": 2}, name="arrays")
    out["arrays"] = list(arrays.map(threads, range(3)))
    error = arrays.submit(boom, 4).exception(timeout=60)
    out["error"] = [type(error).__name__, str(error), "boom" in str(error.__cause__)]
    print(json.dumps(out))
