"""Scale of the scheduler: 1k, 10k, 100k and 1M no-op tasks on mpipipe; per-task cost, rank 0's memory, resume.

    python scripts/bench/scale.py                         # 1k .. 1M, 3 rounds per size
    python scripts/bench/scale.py --max-tasks 10000000    # adds 10M (about 10 minutes and 9-12 GB more)
    BENCH_QUICK=1 python scripts/bench/scale.py           # 1k and 10k

For each size, alternating: mpipipe under `mpiexec -n 4` and on the local
platform with 3 executors (scripts/bench/noop_tasks.py, journal and retries
on), and for the plot the same no-op tasks on ProcessPoolExecutor(3) and
mpi4py.futures (up to 100k) and Dask (up to 10k). Per task = time inside the
process / tasks. Rank 0's peak memory is the peak resident memory of the
scheduler's process, read inside it at the end (VmHWM, the ru_maxrss of its own
address space: see benchlib.peak_rss_mb; for the alternatives: the submitting
process).
At the largest size every fresh mpipipe run under mpiexec is followed by the
same command again (no --fresh): every task comes from the journal; that
resume is timed and measured too. Writes per_task_overhead.svg beside the JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import svgplot  # noqa: E402

MPI = "mpipipe (mpiexec -n 4)"
LOCAL = "mpipipe (local, 3 executors)"
RESUME = "mpipipe (mpiexec -n 4), resume: all tasks from the journal"
MPI4PY = "mpi4py.futures (mpiexec -n 4)"
PPE = "ProcessPoolExecutor(3)"
DASK = "Dask LocalCluster(3 x 1 thread)"
LIMITS = {MPI4PY: 100_000, PPE: 100_000, DASK: 1_000 if B.quick() else 10_000}
ORDER = [MPI, RESUME, LOCAL, MPI4PY, PPE, DASK]


def command(tool: str, n: int, fresh: bool = True):
    noop = os.path.join(B.HERE, "noop_tasks.py")
    alt = os.path.join(B.HERE, "alt_tasks.py")
    common = ["--tasks", str(n), "--data-root", B.WORK, "--progress-interval", "0", "--report"]
    if fresh:
        common.append("--fresh")
    if tool in (MPI, RESUME):
        return [B.mpiexec(), "-n", "4", B.PYTHON, noop, *common, "--job-id", f"scale-mpi-{n}"]
    if tool == LOCAL:
        return [B.PYTHON, noop, *common, "--job-id", f"scale-local-{n}", "--platform", "local", "--num-executors", "3"]
    if tool == MPI4PY:
        return [B.mpiexec(), "-n", "4", B.PYTHON, "-m", "mpi4py.futures", alt, "mpi4py", "--tasks", str(n)]
    return [B.PYTHON, alt, "ppe" if tool == PPE else "dask", "--tasks", str(n), "--workers", "3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[1000, 10000] if B.quick() else [1000, 10000, 100000, 1000000])
    ap.add_argument("--max-tasks", type=int, default=None, help="add sizes x10 up to this (e.g. 10000000)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-alternatives", action="store_true", help="mpipipe only")
    ap.add_argument("--no-local", action="store_true", help="leave out mpipipe's local platform")
    ap.add_argument("--out", help="the JSON result file")
    a = ap.parse_args()
    if os.environ.get("BENCH_SCALE_10M") and not a.max_tasks:
        a.max_tasks = 10_000_000
    sizes = sorted(set(a.sizes))
    while a.max_tasks and sizes[-1] * 10 <= a.max_tasks:
        sizes.append(sizes[-1] * 10)
    biggest = sizes[-1]
    notes = []
    os.makedirs(B.WORK, exist_ok=True)
    print(f"scale: {', '.join(f'{n:,}' for n in sizes)} no-op tasks, {a.reps} rounds per size", flush=True)

    runs = {}  # "tool @ n" -> records
    series = {}  # tool -> {n: key}
    for n in sizes:
        tools = [MPI] + ([] if a.no_local else [LOCAL])
        if not a.no_alternatives:
            tools += [t for t in (MPI4PY, PPE, DASK) if n <= LIMITS[t]]
        if n == biggest:
            tools.insert(1, RESUME)  # right after the fresh run it resumes
        print(f" {n:,} tasks: {', '.join(tools)}", flush=True)
        timeout = max(300, n / 1000)  # at least 1 ms a task: never in any run so far

        def run_one(tool, rep, n=n, timeout=timeout):
            if tool in (MPI, LOCAL):
                B.clear_job(B.WORK, f"scale-{'mpi' if tool == MPI else 'local'}-{n}")
            rec = B.run(command(tool, n, fresh=tool != RESUME), timeout * (20 if tool == DASK else 1), label=tool)
            if rec["status"] == "ok" and rec.get("inner"):
                rec["per_task_us"] = rec["inner"] / n * 1e6
            if tool == RESUME and rec["status"] == "ok" and rec.get("cached") != n:
                rec["status"] = "error"
                rec["error"] = f"expected {n} tasks from the journal, got {rec.get('cached')}"
            return rec

        def show(tool, rec):
            return (f"{rec.get('inner', 0):8.2f} s inside, {rec.get('per_task_us', 0):8.1f} us/task, "
                    f"rank 0 {rec.get('rank0_rss_mb', 0):7.0f} MB, command {rec['wall']:.2f} s")

        got = B.alternate(tools, a.reps, run_one, show)
        for tool, recs in got.items():
            runs[f"{tool} @ {n}"] = recs
            series.setdefault(tool, {})[n] = f"{tool} @ {n}"

    rows = []
    plot_series = []
    stats = {}
    for tool, by_n in sorted(series.items(), key=lambda kv: ORDER.index(kv[0])):
        points = []
        for n, key in sorted(by_n.items()):
            s_us = B.metric(runs[key], "per_task_us")
            s_in = B.metric(runs[key], "inner")
            s_rss = B.metric(runs[key], "rank0_rss_mb")
            s_wall = B.metric(runs[key], "wall")
            stats[key] = {"per_task_us": s_us, "inner": s_in, "rank0_rss_mb": s_rss, "wall": s_wall}
            ok = sum(1 for r in runs[key] if r.get("status") == "ok")
            rows.append([tool, f"{n:,}", B.fmt_summary(s_us, "us"), B.fmt_summary(s_in), B.fmt_summary(s_wall),
                         B.fmt_summary(s_rss, "MB"), f"{ok}/{len(runs[key])}"])
            if s_us and tool != RESUME:
                points.append((n, s_us["median"], s_us["min"], s_us["max"]))
        if points:
            plot_series.append({"name": tool, "points": points})

    ratios = []
    for n in sizes:
        for m in (MPI, LOCAL):
            for alt in (MPI4PY, PPE, DASK):
                r = B.ratio(stats.get(f"{m} @ {n}", {}).get("per_task_us"),
                            stats.get(f"{alt} @ {n}", {}).get("per_task_us"))
                if r is not None:
                    ratios.append({"alternative": alt, "metric": f"per task (us), {n:,} tasks", "key": "per_task_us",
                                   "mpipipe": m, "ratio": float(f"{r:.4g}"), "tasks": n})
    for m in (MPI, LOCAL):
        big = [n for n in sizes if f"{m} @ {n}" in stats and stats[f"{m} @ {n}"]["inner"]]
        if len(big) >= 2:
            n1, n2 = big[-2], big[-1]
            t1, t2 = stats[f"{m} @ {n1}"]["inner"]["median"], stats[f"{m} @ {n2}"]["inner"]["median"]
            r1, r2 = stats[f"{m} @ {n1}"]["rank0_rss_mb"]["median"], stats[f"{m} @ {n2}"]["rank0_rss_mb"]["median"]
            notes.append(f"{m}: marginal cost between {n1:,} and {n2:,} tasks: {(t2 - t1) / (n2 - n1) * 1e6:.1f} us "
                         f"and {(r2 - r1) * 1024 * 1024 / (n2 - n1):,.0f} bytes of rank 0's memory per task")
    if biggest < 10_000_000:
        key = f"{MPI} @ {biggest}"
        if stats.get(key, {}).get("inner") and biggest >= 1_000_000:
            t = stats[key]["inner"]["median"] * 10_000_000 / biggest
            rss = stats[key]["rank0_rss_mb"]["median"] * 10_000_000 / biggest / 1024
            res_key = f"{RESUME} @ {biggest}"
            inner = stats.get(res_key, {}).get("inner")
            tr = (inner["median"] * 10_000_000 / biggest) if inner else 0
            notes.append(f"10M tasks left out of this run (about {t / 60:.0f} min fresh + {tr / 60:.0f} min resume "
                         f"per round, extrapolated, and about {rss:.0f} GiB in rank 0): over the time budget of "
                         "`make bench`; `--max-tasks 10000000` or BENCH_SCALE_10M=1 runs it")
    out = a.out or B.default_out("scale")
    svg = os.path.join(os.path.dirname(os.path.abspath(out)), "per_task_overhead.svg")
    svgplot.write_svg(svg, plot_series, title="Per-task overhead of no-op tasks (median, bars: min–max)",
                      xlabel="tasks in the job", ylabel="time per task (µs), inside the process")
    notes.append(f"plot: {os.path.relpath(svg)}")
    res = {"workload": "scale", "title": "Scale: no-op tasks per job, per-task time and rank 0's peak memory",
           "params": {"sizes": sizes, "reps": a.reps}, "runs": runs,
           "tables": [{"columns": ["tool", "tasks", "per task (us)", "inside (s)", "command (s)",
                                   "peak RSS rank 0 / client (MB)", "runs ok"], "rows": rows}],
           "ratios": ratios, "notes": notes, "plot": plot_series,
           "commands": {t: command(t, biggest if t in (MPI, LOCAL, RESUME) else min(biggest, LIMITS[t]),
                                   fresh=t != RESUME) for t in sorted(series, key=ORDER.index)}}
    B.finish(res, out)


if __name__ == "__main__":
    main()
