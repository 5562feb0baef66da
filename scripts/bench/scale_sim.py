"""Scale of one job at rank 0 alone: a real scheduler and journal driving a simulated world of 1,000 executors.

    python scripts/bench/scale_sim.py                              # 1,000 executors; 100k, 1M and 10M tasks
    BENCH_QUICK=1 python scripts/bench/scale_sim.py                # 20k and 100k tasks
    python scripts/bench/scale_sim.py --executors 1000 --tasks 100000,1000000 --report

The executors are virtual (mpipipe.execution.sim_transport.SimTransport): each
succeeds at every task the moment it is sent, so the figures are what rank 0
can hold — tasks per second and microseconds per task of dispatch, results,
completion and journaling — and its peak memory. One process per size (the
peak resident memory is the process's own).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import peak_rss_mb  # noqa: E402


def one(tasks: int, executors: int, root: str) -> dict:
    from mpipipe.execution.journal import Journal
    from mpipipe.execution.scheduler import Scheduler, SchedulerOptions
    from mpipipe.execution.sim_transport import SimTransport
    from mpipipe.logical.node import ComputeNode, Context, LogicalPlan

    def noop(task):
        return None

    ctx = Context()
    node = ComputeNode(ctx, noop, npartitions=tasks, name="noop")
    plan = LogicalPlan(ctx, node)
    job_dir = os.path.join(root, f"sim-{tasks}-{executors}")
    os.makedirs(os.path.join(job_dir, "logs"), mode=0o700, exist_ok=True)
    t = SimTransport(executors + 1)
    options = SchedulerOptions(job_id="sim", job_dir=job_dir, platform="sim", fresh=True, progress_interval=0)
    t0 = time.perf_counter()
    out = Scheduler(t, plan.infos, [node.id], options, Journal(job_dir)).run()
    wall = time.perf_counter() - t0
    assert out["stats"]["ran"] == tasks, out["stats"]
    return {"tasks": tasks, "executors": executors, "seconds": wall, "tasks_per_s": tasks / wall,
            "us_per_task": wall / tasks * 1e6, "rank0_rss_mb": peak_rss_mb(), "messages": t.sent_messages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    ap.add_argument("--tasks", type=lambda s: [int(float(x)) for x in s.split(",")],
                    default=[20_000, 100_000] if quick else [100_000, 1_000_000, 10_000_000])
    ap.add_argument("--executors", type=int, default=1000)
    ap.add_argument("--report", action="store_true", help="print BENCH_RESULT lines (JSON)")
    ap.add_argument("--out", default=None, help="write the results as JSON here (what scripts/bench/run_all.py reads)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single size in this process
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpipipe-sim-") as root:
        if args.one:
            print("BENCH_RESULT " + json.dumps(one(args.tasks[0], args.executors, root)), flush=True)
            return
        rows = []
        for n in args.tasks:  # each size in a process of its own: its peak memory is its own
            done = subprocess.run([sys.executable, __file__, "--one", "--tasks", str(n), "--executors",
                                   str(args.executors)], capture_output=True, text=True, timeout=3600)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
            if done.returncode != 0 or line is None:
                print(f"{n:,} tasks: failed (exit {done.returncode})\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(line[len("BENCH_RESULT "):])
            print(f"{r['tasks']:>11,} tasks on {r['executors']:,} simulated executors: {r['seconds']:.2f} s, "
                  f"{r['tasks_per_s']:,.0f} tasks/s, {r['us_per_task']:.2f} us/task at rank 0, "
                  f"rank 0 peak {r['rank0_rss_mb']:,.0f} MB, {r['messages']:,} messages")
            rows.append([f"{r['tasks']:,}", f"{r['executors']:,}", f"{r['seconds']:.2f}", f"{r['tasks_per_s']:,.0f}",
                         f"{r['us_per_task']:.2f}", f"{r['rank0_rss_mb']:,.0f}", f"{r['messages']:,}"])
            if args.report:
                print(line, flush=True)
        if args.out:
            import benchlib as B

            B.write_json(args.out, {
                "workload": "scale_sim", "title": f"Rank 0 alone against {args.executors:,} simulated executors",
                "tables": [{"columns": ["tasks", "executors", "seconds", "tasks/s", "us/task at rank 0",
                                        "rank 0 peak MB", "messages"], "rows": rows}],
                "notes": ["executors are virtual (mpipipe.execution.sim_transport): every task succeeds the moment "
                          "it is sent, so this is rank 0's own cost: dispatch, results, completion, journaling"],
                "commands": {"mpipipe": [sys.executable, __file__, "--tasks", ",".join(map(str, args.tasks)),
                                         "--executors", str(args.executors)]}})


if __name__ == "__main__":
    main()
