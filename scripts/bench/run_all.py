"""Every benchmark, one after the other, then one JSON file, one Markdown page and the per-task overhead plot.

    python scripts/bench/run_all.py                  # what `make bench` runs: the full sizes (about 25 minutes)
    BENCH_QUICK=1 python scripts/bench/run_all.py    # small sizes, no smallpond (about 2 minutes)
    python scripts/bench/run_all.py --only dispatch,sort

Each workload script (startup, dispatch, groupby, sort, user_groupby,
user_sort, shuffle_mpi, scale, scale_sim) runs as its own process with a time limit; one
that fails or runs out of time is reported and the others still run. A full
run writes scripts/bench/results/ (results.json, results.md,
per_task_overhead.svg); a quick run writes mpipipe-jobs/bench-results-quick/
instead, so it never replaces the figures of a full run. Generated inputs stay in mpipipe-jobs/bench-data/ for
the next run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

WORKLOADS = ["startup", "dispatch", "groupby", "sort", "user_groupby", "user_sort", "shuffle_mpi", "scale",
             "scale_sim"]
TIMEOUTS = {"startup": 600, "dispatch": 1800, "groupby": 1500, "sort": 1500, "user_groupby": 1500, "user_sort": 1500,
            "shuffle_mpi": 1500,
            "scale": 1800, "scale_sim": 1800}
QUICK_TIMEOUT = 600


def run_live(cmd, timeout):
    """Run with the output going straight to the terminal, in its own process group, with a time limit."""
    proc = subprocess.Popen(cmd, cwd=B.REPO, env=B.bench_env(), start_new_session=True)
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        B._stop_group(proc)
        return proc.returncode, True
    except KeyboardInterrupt:
        B._stop_group(proc)
        raise


def headline(res):
    """The ratios worth a line in the summary: mpipipe under mpiexec against mpi4py.futures, mpipipe on local
    processes against the other local tools; for the scale benchmark only at the largest common size."""
    out = []
    ratios = res.get("ratios", [])
    if res["workload"] == "scale":
        best = {}
        for r in ratios:
            key = (r["mpipipe"], r["alternative"])
            if key not in best or r.get("tasks", 0) > best[key].get("tasks", 0):
                best[key] = r
        ratios = list(best.values())
    for r in ratios:
        mpi_side = "mpiexec" in r["mpipipe"]
        mpi_alt = "mpi4py" in r["alternative"]
        if len({x["mpipipe"] for x in res.get("ratios", [])}) == 1 or mpi_side == mpi_alt:
            out.append(r)
    return out


def markdown(summary) -> str:
    m = summary["machine"]
    lines = [f"# mpipipe benchmarks{' (quick run)' if summary['quick'] else ''}", "",
             f"Run {summary['date']} with `{summary['command']}` in {summary['duration_s'] / 60:.1f} minutes.", "",
             f"Machine: {B.machine_line(m)}.", "",
             "Every tool ran in the same run, alternating (A B C A B C ...); figures are medians with (min–max) "
             "over the rounds. A ratio is mpipipe's median divided by the alternative's: below 1, mpipipe "
             "took less time (or memory).", ""]
    if summary.get("missing"):
        lines += ["Not in this run: " + "; ".join(summary["missing"]), ""]
    rows = []
    for name in WORKLOADS:
        res = summary["workloads"].get(name)
        if not res:
            continue
        for r in headline(res):
            rows.append([name, r["mpipipe"], r["alternative"], r["metric"], B.fmt_ratio(r["ratio"])])
    if rows:
        lines += ["## Ratios at a glance", "", B.markdown_table(["workload"] + B.RATIO_COLUMNS, rows), ""]
    for name in WORKLOADS:
        res = summary["workloads"].get(name)
        if not res:
            continue
        lines += [f"## {res['title']}", ""]
        if res.get("from_earlier_run"):
            lines += [f"(from the run of {res['from_earlier_run']})", ""]
        if res.get("load_average"):
            la = res["load_average"]
            lines += [f"{res.get('duration_s', 0):.0f} s; the machine's 1-minute load average was {la[0]:.1f} before "
                      f"and {la[1]:.1f} after ({m['cores']} cores).", ""]
        for table in res.get("tables", []):
            lines += [B.markdown_table(table["columns"], table["rows"]), ""]
        if res.get("ratios"):
            lines += ["Ratios of the medians:", "", B.markdown_table(B.RATIO_COLUMNS, B.ratio_rows(res["ratios"])), ""]
        if name == "scale" and res.get("plot"):
            lines += ["![per-task overhead against the number of tasks](per_task_overhead.svg)", ""]
        for c in res.get("checks", []):
            lines.append(f"- check: {c}")
        for n in res.get("notes", []):
            if not n.startswith("plot: "):
                lines.append(f"- {n}")
        if res.get("checks") or res.get("notes"):
            lines.append("")
        for section in res.get("sections", []):
            lines += [f"**{section['title'][0].upper()}{section['title'][1:]}**", ""] + section["markdown"]
        cmds = res.get("commands") or {}
        if cmds:
            lines += ["<details><summary>commands</summary>", "", "```"]
            for tool, cmd in cmds.items():
                shown = " ".join(os.path.relpath(c, B.REPO) if os.path.isabs(c) and c.startswith(B.REPO) else c
                                 for c in cmd)
                lines.append(f"# {tool}\n{shown}")
            lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    ap.add_argument("--render", action="store_true", help="only write results.md again from results.json")
    ap.add_argument("--results", help="folder for results.json, results.md and the plot (default: "
                                      "scripts/bench/results, or mpipipe-jobs/bench-results-quick when quick)")
    a = ap.parse_args()
    chosen = [w.strip() for w in a.only.split(",")] if a.only else WORKLOADS
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    results = a.results or (B.QUICK_RESULTS if B.quick() else B.RESULTS)
    os.makedirs(results, exist_ok=True)
    if a.render:
        with open(os.path.join(results, "results.json")) as f:
            summary = json.load(f)
        with open(os.path.join(results, "results.md"), "w") as f:
            f.write(markdown(summary) + "\n")
        print(f"wrote {os.path.relpath(results)}/results.md")
        return
    parts = os.path.join(B.WORK, "results-parts")
    os.makedirs(parts, exist_ok=True)

    t0 = time.perf_counter()
    mach = B.machine()
    print(f"machine: {B.machine_line(mach)}")
    sp = mach.get("smallpond_env") or {}
    if sp.get("error"):
        print(f"smallpond: cannot be used: {sp['error']}")
    print(f"mode: {'quick (BENCH_QUICK=1)' if B.quick() else 'full'}; results go to {os.path.relpath(results)}\n",
          flush=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "quick": B.quick(), "machine": mach,
               "machine_line": B.machine_line(mach),
               "command": ("BENCH_QUICK=1 " if B.quick() else "") + "make bench", "workloads": {}, "missing": []}
    if a.only:  # a partial run replaces only its workloads in an earlier results.json
        summary["command"] = f"python scripts/bench/run_all.py --only {a.only}"
        try:
            with open(os.path.join(results, "results.json")) as f:
                earlier = json.load(f)
            if earlier.get("quick") == B.quick():
                summary["workloads"] = {k: v for k, v in earlier.get("workloads", {}).items() if k not in chosen}
                for k, v in summary["workloads"].items():
                    v.setdefault("from_earlier_run", earlier.get("date"))
        except (OSError, ValueError):
            pass
    for name in chosen:
        part = os.path.join(parts, f"{name}.json")
        if os.path.exists(part):
            os.remove(part)
        if name == "scale":  # its plot goes beside results.json
            part = os.path.join(results, "scale.json")
        timeout = QUICK_TIMEOUT if B.quick() else TIMEOUTS[name]
        print(f"=== {name} " + "=" * 60, flush=True)
        w0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        code, timed_out = run_live([B.PYTHON, os.path.join(B.HERE, f"{name}.py"), "--out", part], timeout)
        took = time.perf_counter() - w0
        load1 = os.getloadavg()[0]
        if timed_out:
            summary["missing"].append(f"{name}: stopped after its time limit of {timeout} s")
        elif code != 0:
            summary["missing"].append(f"{name}: its script failed (exit code {code})")
        if os.path.exists(part):
            with open(part) as f:
                res = json.load(f)
            res["duration_s"] = took
            res["load_average"] = [round(load0, 2), round(load1, 2)]  # 1-minute load average before and after
            summary["workloads"][name] = res
            if name == "scale":
                os.remove(part)  # it is part of results.json
        print(f"=== {name}: {took:.0f} s\n", flush=True)
    first = (summary["workloads"].get("dispatch") or {}).get("smallpond_to_first_task")
    if first and "startup" in summary["workloads"]:
        summary["workloads"]["startup"].setdefault("notes", []).append(
            f"smallpond (from the dispatch benchmark's runs, 3 executors): its first task started "
            f"{B.fmt_summary(first)} s after the command")
    summary["duration_s"] = time.perf_counter() - t0
    B.write_json(os.path.join(results, "results.json"), summary)
    md = markdown(summary)
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(md + "\n")
    print(md.split("## ", 2)[0] + ("## " + md.split("## ", 2)[1] if "## " in md else ""))
    print(f"wrote {os.path.relpath(results)}/results.json, results.md"
          + (", per_task_overhead.svg" if os.path.exists(os.path.join(results, "per_task_overhead.svg")) else "")
          + f" in {summary['duration_s'] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
