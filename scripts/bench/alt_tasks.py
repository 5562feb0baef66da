"""The alternatives' side of the dispatch, startup and scale benchmarks: N no-op tasks, one submit() each.

    python scripts/bench/alt_tasks.py ppe --tasks 20000 --workers 3            # concurrent.futures.ProcessPoolExecutor
    python scripts/bench/alt_tasks.py dask --tasks 20000 --workers 3           # dask.distributed LocalCluster, 1 thread
    mpiexec -n 4 python -m mpi4py.futures scripts/bench/alt_tasks.py mpi4py --tasks 20000   # MPIPoolExecutor, 3 workers
    mpiexec -n 4 python scripts/bench/alt_tasks.py mpipipe --tasks 20000 --data-root DIR   # mpipipe.futures.Executor

Each task returns the time it ran (time.time()). Prints a BENCH_RESULT line:
`inner` from the first line after the tool's imports to the last result:
every tool timed over the same span, executor creation (its ranks or
processes started or attached, for mpipipe also mpipipe.init() and joining
the world) + the submits + the results. `python -m mpi4py.futures` starts
MPI before the script, so its MPI start-up is outside `inner`; mpipipe starts
MPI at its first run(), inside `inner` (about 0.08 s). `startup`
from creating the pool to the moment it accepted the first submit (the pools
start their processes lazily, so most of their start-up lands in the first
tasks), `submit_only` how long the submit() calls took, `first_task` the
time.time() at which the first task ran, and this process's peak resident
memory (benchlib.peak_rss_mb).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def task(i):
    return time.time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool", choices=["ppe", "mpi4py", "dask", "mpipipe"])
    ap.add_argument("--data-root", default="bench-work", help="mpipipe: where its job directory goes")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=3)
    a = ap.parse_args()
    if a.tool == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        t0 = time.perf_counter()
        with ProcessPoolExecutor(a.workers) as ex:
            t1 = time.perf_counter()
            futures = [ex.submit(task, i) for i in range(a.tasks)]
            t_sub = time.perf_counter()
            stamps = [f.result() for f in futures]
    elif a.tool == "mpi4py":
        from mpi4py.futures import MPIPoolExecutor

        t0 = time.perf_counter()
        with MPIPoolExecutor() as ex:  # under `python -m mpi4py.futures`: the world's other ranks are the workers
            t1 = time.perf_counter()
            futures = [ex.submit(task, i) for i in range(a.tasks)]
            t_sub = time.perf_counter()
            stamps = [f.result() for f in futures]
            workers = ex.num_workers
    elif a.tool == "mpipipe":
        import mpipipe
        from mpipipe.futures import Executor

        t0 = time.perf_counter()
        mpipipe.init(data_root=a.data_root, job_id="dispatch-futures", progress_interval=0)
        ex = Executor()
        ex.launcher.join()  # executor ranks serve from here and exit; journaling and retries are on
        t1 = time.perf_counter()
        futures = [ex.submit(task, i) for i in range(a.tasks)]
        t_sub = time.perf_counter()
        stamps = [f.result() for f in futures]
        workers = ex.launcher.join()[1].world.num_executors
    else:
        import dask
        from dask.distributed import Client, LocalCluster

        dask.config.set({"distributed.worker.daemon": False, "distributed.logging.distributed": "error"})
        t0 = time.perf_counter()
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t1 = time.perf_counter()
            futures = [client.submit(task, i, pure=False) for i in range(a.tasks)]
            t_sub = time.perf_counter()
            stamps = client.gather(futures)
    t2 = time.perf_counter()
    # the harness's helpers load after the timed span (a user's script has none of them), on every tool alike
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchlib import peak_rss_mb

    print("BENCH_RESULT " + json.dumps({
        "inner": t2 - t0, "startup": t1 - t0, "tasks_only": t2 - t1, "submit_only": t_sub - t1, "tasks": a.tasks,
        "workers": workers if a.tool in ("mpi4py", "mpipipe") else a.workers, "first_task": min(stamps),
        "rank0_rss_mb": peak_rss_mb()}), flush=True)


if __name__ == "__main__":
    main()
