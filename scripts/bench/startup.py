"""Startup: a one-task plan, from the command starting to the task running and to the command's exit.

    python scripts/bench/startup.py                  # 3 rounds, A B C A B C ...
    BENCH_QUICK=1 python scripts/bench/startup.py

The task returns time.time() when it runs; `to first task` is that minus the
time just before the runner started the command; `total` is the command's
wall time. mpipipe on the local platform (3 executors) and under
`mpiexec -n 4`; the same single task on ProcessPoolExecutor(3), Dask
LocalCluster(3 workers) and mpi4py.futures (`mpiexec -n 4 python -m
mpi4py.futures`) through scripts/bench/alt_tasks.py. smallpond's start-up is
reported by the dispatch benchmark (its first task starts about a minute
after the command); --smallpond runs its one-task plan here as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

LOCAL = "mpipipe (local, 3 executors)"
MPI = "mpipipe (mpiexec -n 4)"
PPE = "ProcessPoolExecutor(3)"
DASK = "Dask LocalCluster(3 x 1 thread)"
MPI4PY = "mpi4py.futures (mpiexec -n 4)"
SMALLPOND = "smallpond scheduler (3 executors)"


def stamp(task):
    return time.time()


def pipeline() -> None:
    """The mpipipe side: one ComputeNode with one partition."""
    from mpipipe import ComputeNode, Context, Driver, LogicalPlan

    driver = Driver(description="one-task plan")
    ctx = Context()
    node = ComputeNode(ctx, stamp, npartitions=1, name="stamp")
    t0 = time.perf_counter()
    result = driver.run(LogicalPlan(ctx, node))
    inner = time.perf_counter() - t0
    if result is not None:
        print("BENCH_RESULT " + json.dumps({"first_task": result.values()[0], "inner": inner,
                                            "rank0_rss_mb": B.peak_rss_mb()}),
              flush=True)


def main() -> None:
    if "--pipeline" in sys.argv:
        sys.argv.remove("--pipeline")
        return pipeline()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smallpond", action="store_true", help="also smallpond's one-task plan (about a minute a run)")
    ap.add_argument("--out", help="the JSON result file")
    a = ap.parse_args()

    me = os.path.abspath(__file__)
    alt = os.path.join(B.HERE, "alt_tasks.py")
    common = ["--fresh", "--data-root", B.WORK, "--progress-interval", "0"]
    cmds = {
        LOCAL: [B.PYTHON, me, "--pipeline", *common, "--job-id", "startup-local", "--platform", "local",
                "--num-executors", "3"],
        MPI: [B.mpiexec(), "-n", "4", B.PYTHON, me, "--pipeline", *common, "--job-id", "startup-mpi"],
        PPE: [B.PYTHON, alt, "ppe", "--tasks", "1", "--workers", "3"],
        DASK: [B.PYTHON, alt, "dask", "--tasks", "1", "--workers", "3"],
        MPI4PY: [B.mpiexec(), "-n", "4", B.PYTHON, "-m", "mpi4py.futures", alt, "mpi4py", "--tasks", "1"],
    }
    envs = {t: B.bench_env() for t in cmds}
    tools = list(cmds)
    notes = []
    if a.smallpond:
        problem = B.smallpond_status()
        if problem:
            notes.append(f"smallpond left out: {problem}")
        else:
            cmds[SMALLPOND] = [B.SMALLPOND_PYTHON, os.path.join(B.HERE, "smallpond_side.py"), "noop", "--tasks", "1",
                               "--executors", "3", "--input", B.tiny_parquet(),
                               "--work", os.path.join(B.WORK, "smallpond-startup")]
            envs[SMALLPOND] = B.smallpond_env()
            tools.append(SMALLPOND)
    os.makedirs(B.WORK, exist_ok=True)
    print(f"startup: a one-task plan, {a.reps} rounds", flush=True)

    def run_one(tool, rep):
        if tool in (LOCAL, MPI):
            B.clear_job(B.WORK, "startup-local" if tool == LOCAL else "startup-mpi")
        rec = B.run(cmds[tool], 900 if tool == SMALLPOND else 120, env=envs[tool], label=tool)
        if rec["status"] == "ok" and rec.get("first_task"):
            rec["to_first_task"] = rec["first_task"] - rec["start"]
        return rec

    def show(tool, rec):
        return f"first task after {rec.get('to_first_task', float('nan')):.2f} s, command {rec['wall']:.2f} s"

    runs = B.alternate(tools, a.reps, run_one, show)
    metrics = [("to_first_task", "to first task (s)", "s"), ("wall", "total (s)", "s"),
               ("inner", "inside the script (s)", "s")]
    cmp = B.compare(runs, metrics, [LOCAL, MPI], ["to_first_task", "wall"])
    notes.append("inside the script: from driver.run() / creating the pool to the result (imports and the "
                 "interpreter's start are outside it)")
    res = {"workload": "startup", "title": "Startup: a one-task plan, command start to first task and to exit",
           "params": {"reps": a.reps}, "runs": runs, "tables": [{"columns": cmp["columns"], "rows": cmp["rows"]}],
           "ratios": cmp["ratios"], "notes": notes, "commands": {t: cmds[t] for t in tools}}
    B.finish(res, a.out)


if __name__ == "__main__":
    main()
