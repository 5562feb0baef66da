"""mpipipe.futures.Executor from plain synchronous code: prints one JSON line."""
import concurrent.futures
import json
import os
import time

import mpipipe
from mpipipe.futures import Executor


def square(x):
    if x == -13:
        raise KeyError("thirteen")
    return x * x


def slow(x):
    time.sleep(0.2)
    return os.getpid()


def die(_x):
    os._exit(3)


if __name__ == "__main__":
    driver = mpipipe.Driver()
    driver.add_argument("--n", type=int, default=50)
    args = driver.get_arguments()
    out = {}
    with Executor() as ex:
        out["map"] = list(ex.map(square, range(args["n"])))
        fut = ex.submit(square, -13)
        exc = fut.exception(timeout=60)
        out["error"] = [type(exc).__name__, str(exc), "square" in str(exc.__cause__)]
        out["big"] = len(ex.submit(bytes, 200_000).result())
        futs = [ex.submit(slow, i) for i in range(6)]
        out["pids"] = len(set(f.result() for f in concurrent.futures.as_completed(futs)))
        crashed = ex.submit(die, 0)
        out["crash"] = type(crashed.exception(timeout=60)).__name__
        out["kwargs"] = ex.submit(int, "ff", base=16).result()
    try:
        ex.submit(square, 1)
    except RuntimeError as e:
        out["after_shutdown"] = str(e)
    print(json.dumps(out))
