"""Dispatch: 20,000 no-op tasks, each its own task, on mpipipe and on what users would pick instead.

    python scripts/bench/dispatch.py                 # 3 rounds, A B C A B C ...
    BENCH_QUICK=1 python scripts/bench/dispatch.py   # 2,000 tasks, no smallpond
    python scripts/bench/dispatch.py --tools mpi,futures,mpi4py --out /tmp/dispatch.json   # some tools only

Tools (1 scheduler + 3 executors / workers on every one):
  mpipipe under `mpiexec -n 4` and on the local platform with 3 executors
  (scripts/bench/noop_tasks.py: journal and retries on, as always), and
  mpipipe's concurrent.futures face with one submit() per task under `mpiexec -n 4`
  (scripts/bench/alt_tasks.py mpipipe);
  mpi4py.futures.MPIPoolExecutor under `mpiexec -n 4 python -m mpi4py.futures`,
  concurrent.futures.ProcessPoolExecutor(3), Dask LocalCluster(n_workers=3,
  threads_per_worker=1), each with one submit() per task (scripts/bench/alt_tasks.py);
  smallpond's scheduler with 3 executors on 1,000 no-op partitions
  (scripts/bench/smallpond_side.py; fewer tasks: it runs about 11 a second).

Figures: `inner` is measured inside the process, from the first line after
the imports (driver.run() for the mpipipe plan) to the last result; per task =
inner / tasks. The futures rows are timed over the same span on both sides
(scripts/bench/alt_tasks.py): executor creation (spawning or attaching its
ranks; for mpipipe also init() and joining the world) + the submits + the
results; mpi4py.futures' MPI start-up (`python -m mpi4py.futures`, before the
script) is outside that span, mpipipe's (at its first run()) inside it;
neither executor start-up is left out;
`total` is the whole command from outside (interpreter, imports, mpiexec).
For smallpond also the time from its first task starting to its last one
ending (its scheduler takes about a minute to start).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

MPI = "mpipipe (mpiexec -n 4)"
LOCAL = "mpipipe (local, 3 executors)"
FUTURES = "mpipipe futures.Executor submit (mpiexec -n 4)"
MPI4PY = "mpi4py.futures (mpiexec -n 4)"
PPE = "ProcessPoolExecutor(3)"
DASK = "Dask LocalCluster(3 x 1 thread)"
SMALLPOND = "smallpond scheduler (3 executors, {n:,} tasks)"
SMALLPOND_STEADY = "smallpond, first task to last ({n:,} tasks)"
SMALLPOND_FAST = "smallpond, test-harness intervals (3 executors, {n:,} tasks)"
SHORT = {"mpi": MPI, "local": LOCAL, "futures": FUTURES, "mpi4py": MPI4PY, "ppe": PPE, "dask": DASK,
         "smallpond": "smallpond"}  # --tools names


def commands(tasks: int, sp_tasks: int):
    noop = os.path.join(B.HERE, "noop_tasks.py")
    alt = os.path.join(B.HERE, "alt_tasks.py")
    common = ["--tasks", str(tasks), "--fresh", "--data-root", B.WORK, "--progress-interval", "0", "--report"]
    return {
        MPI: ([B.mpiexec(), "-n", "4", B.PYTHON, noop, *common, "--job-id", "dispatch-mpi"], B.bench_env(), 300),
        LOCAL: ([B.PYTHON, noop, *common, "--job-id", "dispatch-local", "--platform", "local", "--num-executors", "3"],
                B.bench_env(), 300),
        FUTURES: ([B.mpiexec(), "-n", "4", B.PYTHON, alt, "mpipipe", "--tasks", str(tasks), "--data-root", B.WORK],
                  B.bench_env(), 300),
        MPI4PY: ([B.mpiexec(), "-n", "4", B.PYTHON, "-m", "mpi4py.futures", alt, "mpi4py", "--tasks", str(tasks)],
                 B.bench_env(), 600),
        PPE: ([B.PYTHON, alt, "ppe", "--tasks", str(tasks), "--workers", "3"], B.bench_env(), 600),
        DASK: ([B.PYTHON, alt, "dask", "--tasks", str(tasks), "--workers", "3"], B.bench_env(), 900),
        "smallpond": ([B.SMALLPOND_PYTHON, os.path.join(B.HERE, "smallpond_side.py"), "noop", "--tasks", str(sp_tasks),
                     "--executors", "3", "--input", "{tiny}", "--work", os.path.join(B.WORK, "smallpond-dispatch")],
                    B.smallpond_env(), 1200),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000 if B.quick() else 20000)
    ap.add_argument("--smallpond-tasks", type=int, default=50 if B.quick() else 1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="the JSON result file")
    ap.add_argument("--tools", default=",".join(SHORT), help=f"which tools, comma-separated: {', '.join(SHORT)}")
    a = ap.parse_args()
    chosen = [t.strip() for t in a.tools.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(SHORT))
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(unknown)}; choose among {', '.join(SHORT)}")
    global SMALLPOND, SMALLPOND_STEADY, SMALLPOND_FAST
    SMALLPOND = SMALLPOND.format(n=a.smallpond_tasks)
    SMALLPOND_FAST = SMALLPOND_FAST.format(n=a.smallpond_tasks)
    SMALLPOND_STEADY = SMALLPOND_STEADY.format(n=a.smallpond_tasks)

    notes = []
    cmds = commands(a.tasks, a.smallpond_tasks)
    cmds[SMALLPOND] = cmds.pop("smallpond")
    tools = [SHORT[t] for t in SHORT if t in chosen and t != "smallpond"]
    skip = B.smallpond_skip_reason() if "smallpond" in chosen else "smallpond: not chosen (--tools)"
    if skip:
        notes.append(skip)
    else:
        tools += [SMALLPOND, SMALLPOND_FAST]
        cmd, env, t = cmds[SMALLPOND]
        cmds[SMALLPOND] = ([c.replace("{tiny}", B.tiny_parquet()) for c in cmd], env, t)
        fast = [c + "-fast" if c.endswith("smallpond-dispatch") else c for c in cmds[SMALLPOND][0]]
        cmds[SMALLPOND_FAST] = (fast + ["--fast"], env, t)
    os.makedirs(B.WORK, exist_ok=True)
    print(f"dispatch: {a.tasks:,} no-op tasks ({a.smallpond_tasks:,} on smallpond), {a.reps} rounds", flush=True)

    def run_one(tool, rep):
        cmd, env, timeout = cmds[tool]
        if tool in (MPI, LOCAL, FUTURES):
            B.clear_job(B.WORK, {MPI: "dispatch-mpi", LOCAL: "dispatch-local", FUTURES: "dispatch-futures"}[tool])
        rec = B.run(cmd, timeout, env=env, label=tool)
        n = rec.get("tasks")
        if rec["status"] == "ok" and rec.get("inner") and n:
            rec["per_task_us"] = rec["inner"] / n * 1e6
            rec["rate"] = n / rec["inner"]
            if tool in (SMALLPOND, SMALLPOND_FAST) and rec.get("first_task") and rec.get("last_task"):
                rec["to_first_task"] = rec["first_task"] - rec["start"]
                rec["steady_per_task_us"] = (rec["last_task"] - rec["first_task"]) / max(1, rec["measured_tasks"]) * 1e6
        return rec

    def show(tool, rec):
        extra = ""
        if rec.get("steady_per_task_us"):
            extra = (f"; first task after {rec['to_first_task']:.1f} s, then "
                     f"{rec['steady_per_task_us'] / 1000:.1f} ms/task")
        return (f"{rec.get('inner', 0):7.2f} s inside, {rec.get('per_task_us', 0):8.1f} us/task, "
                f"{rec.get('rate', 0):8,.0f} tasks/s, command {rec['wall']:.2f} s{extra}")

    runs = B.alternate(tools, a.reps, run_one, show)
    if SMALLPOND in runs:  # its steady state as a row of its own, so it gets its own ratio
        runs[SMALLPOND_STEADY] = [dict(r, per_task_us=r.get("steady_per_task_us"), inner=None, wall=None, rate=None)
                                  for r in runs[SMALLPOND]]
    metrics = [("per_task_us", "per task (us)", "us"), ("rate", "tasks/s", "/s"), ("inner", "inside (s)", "s"),
               ("wall", "command (s)", "s"), ("rank0_rss_mb", "peak RSS, rank 0 / client (MB)", "MB")]
    cmp = B.compare(runs, metrics, [t for t in (MPI, LOCAL, FUTURES) if t in runs], ["per_task_us"])
    if MPI4PY in runs:  # the figure the dispatch goal is stated in: tasks/s, as a multiple of mpi4py.futures'
        base = B.metric(runs[MPI4PY], "rate")
        for tool in (MPI, LOCAL, FUTURES):
            r = B.ratio(B.metric(runs.get(tool, []), "rate"), base) if tool in runs else None
            if r is not None:
                notes.append(f"{tool}: {r:.1f}x the tasks/s of {MPI4PY} (medians, same run)")
    if SMALLPOND in runs:
        first = B.metric(runs[SMALLPOND], "to_first_task")
        notes.append(f"smallpond: its first no-op task started {B.fmt_summary(first)} s after the command "
                     "(scheduler start, then executors found by a probe every 30 s)")
        fast_first = B.metric(runs[SMALLPOND_FAST], "to_first_task")
        notes.append(f"{SMALLPOND_FAST}: its first no-op task started {B.fmt_summary(fast_first)} s after the "
                     "command")
        notes.append(B.SMALLPOND_INTERVALS)
        res_extra = {"smallpond_to_first_task": first, "smallpond_fast_to_first_task": fast_first}
    notes.append("per task = time inside the process / tasks: for the futures rows from the first line after the "
                 "imports through executor creation, submits and results (mpipipe's MPI start-up inside); for the plan "
                 "rows driver.run() start to last result")
    res = {"workload": "dispatch", "title": f"Dispatch: {a.tasks:,} no-op tasks, one submit / partition each",
           "params": {"tasks": a.tasks, "smallpond_tasks": a.smallpond_tasks, "reps": a.reps},
           "runs": runs, "tables": [{"columns": cmp["columns"], "rows": cmp["rows"]}], "ratios": cmp["ratios"],
           "notes": notes, "commands": {t: cmds[t][0] for t in tools}}
    if SMALLPOND in runs:
        res.update(res_extra)
    B.finish(res, a.out)


if __name__ == "__main__":
    main()
