"""Data pipelines as users write them (scripts/bench/user/), beside DuckDB alone and Polars: time, peak memory of
the largest process, answers compared row for row, and where mpipipe's time went.

    python scripts/bench/user_groupby.py                  # 20,000,000 rows, 3 rounds
    python scripts/bench/user_sort.py                     # 10,000,000 records of 100 bytes, 3 rounds
    BENCH_QUICK=1 python scripts/bench/user_groupby.py    # 1,000,000 rows
    python scripts/bench/user_groupby.py --launch mpi     # the user scripts under mpiexec -n 3 instead
    python scripts/bench/user_groupby.py --launch mpi --executors 3 --shuffle both
                                        # mpiexec -n 4, each user script with its shuffle in files and over MPI

The user scripts are what a smallpond user would have written with only the
imports changed: no split added by hand, no option tuned. They run as they
are, on the local platform with 2 executors, the job's options given as SP_*
variables (SP_PLATFORM, SP_NUM_EXECUTORS, SP_DATA_ROOT, SP_JOB_ID,
SP_PROGRESS_INTERVAL), as a user could; with --launch mpi under
`mpiexec -n 3` with none of those but the data root and job id.

- group-by (groupby_plan.py, groupby_dataframe.py): DataSourceNode ->
  HashPartitionNode(8, key) -> SqlEngineNode(GROUP BY key), and the same with
  the DataFrame API (read_parquet, repartition(8, hash_by="key"),
  partial_sql, write_parquet). Input: group-by's (groupby.py) files.
- sort (sort_dataframe.py): read_parquet, repartition(8, by=<the key's first
  byte scaled to 0..7>), partial_sort(by="key"), write_parquet. Input:
  sort.py's records (10-byte uniform keys, 90-byte payloads) with random
  filler bytes, which do not compress (1.07 GB for 10,000,000 records).

DuckDB alone (2 threads) and Polars (lazy, 2 threads) run the same work on the
same files, as in groupby.py and sort.py. The tools alternate, every run is
timed from outside, and the peak resident memory of each run's largest process
is read as procmem.py says. Answers are compared with DuckDB's: group-by per
key (count, sum, min); sort row for row (the same key at every position, the
files read in name order) and record for record (the same records as the
input). Under each mpipipe tool: the profile of its median run, from its
journal (jobprofile.py).
"""
from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import groupby as groupby_bench  # noqa: E402
import jobprofile  # noqa: E402
import sort as sort_bench  # noqa: E402

USER = os.path.join(B.HERE, "user")
DUCKDB = "DuckDB alone (1 process, 2 threads)"
POLARS = "Polars lazy (2 threads)"
# the goals: mpipipe's median over DuckDB alone's
GOALS = {"groupby": {"wall": 1.5, "peak_rss_mb": 1.5}, "sort": {"wall": 1.3}}
METRICS = [("wall", "time (s)", "s"), ("peak_rss_mb", "peak RSS, largest process (MiB)", "MB")]


def mpipipe_tools(workload: str, launch: str, executors: int = 2, shuffles: tuple = ("",)) -> Dict[str, tuple]:
    """tool label -> (user script, SP_SHUFFLE or "" for the default)."""
    where = f"mpiexec -n {executors + 1}" if launch == "mpi" else f"local, {executors} executors"
    names = {"groupby": [("plan", "groupby_plan.py"), ("DataFrame", "groupby_dataframe.py")],
             "sort": [("DataFrame", "sort_dataframe.py")]}[workload]
    return {f"mpipipe {api}, user script ({where}{f', {shuffle} shuffle' if shuffle else ''})": (script, shuffle)
            for api, script in names for shuffle in shuffles}


def job_id(script: str) -> str:
    return "user-" + script[:-3].replace("_", "-")


def user_command(script: str, input_dir: str, output: Optional[str], partitions: int, executors: int,
                 work: str, launch: str, shuffle: str = "") -> tuple:
    """(argv, environment) of one user script run."""
    argv = [B.PYTHON, os.path.join(USER, script), "-i", os.path.join(input_dir, "*.parquet"), "-n", str(partitions)]
    if output:
        argv += ["-o", output]
    env = {"SP_DATA_ROOT": work, "SP_JOB_ID": job_id(script), "SP_PROGRESS_INTERVAL": "0"}
    if shuffle:
        env["SP_SHUFFLE"] = shuffle
    if launch == "mpi":
        argv = [B.mpiexec(), "-n", str(executors + 1)] + argv
    else:
        env.update(SP_PLATFORM="local", SP_NUM_EXECUTORS=str(executors))
    return argv, B.bench_env(env)


def output_files(tool: str, out: Dict[str, str], work: str, scripts: Dict[str, str]) -> List[str]:
    """A tool's result files, in the order that holds the answer's order (file name order)."""
    if tool in scripts and scripts[tool][0] == "groupby_plan.py":  # the plan's last node, in its job directory
        pattern = os.path.join(work, job_id(scripts[tool][0]), "outputs", "groupby", "*", "*.parquet")
    elif out[tool].endswith(".parquet"):
        pattern = out[tool]
    else:
        pattern = os.path.join(out[tool], "*.parquet")
    return sorted(glob.glob(pattern), key=B.natural_key)


def sort_check(tool: str, files: List[str], expected: Dict[str, Any], reference: Optional[List[str]],
               rows: int) -> str:
    """A sorted answer: its keys in order, the input's records, and (against DuckDB's files) the same key at
    every position."""
    if not files:
        return f"{tool}: no output files"
    ordered, n = sort_bench.keys_in_order(files)
    same = sort_bench.fingerprint(files) == expected
    row_for_row = None if reference is None else \
        sort_bench.order_fingerprint(files) == sort_bench.order_fingerprint(reference)
    good = ordered and same and n == rows and row_for_row is not False
    parts = [f"{len(files)} file(s)", f"{n:,} records", "keys in order" if ordered else "keys NOT in order",
             "the input's records" if same else "records DIFFER from the input's"]
    if row_for_row is not None:
        parts.append("row for row the same keys as DuckDB's" if row_for_row else "keys DIFFER from DuckDB's order")
    return f"{tool}: " + ", ".join(parts) + (": ok" if good else ": WRONG")


def median_run(recs: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The run whose time is the median of the successful ones (the lower middle one of an even count)."""
    ok = sorted((r for r in recs if r.get("status") == "ok"), key=lambda r: r["wall"])
    return ok[(len(ok) - 1) // 2] if ok else None


def goal_lines(workload: str, ratios: List[Dict[str, Any]]) -> List[str]:
    out = []
    for r in ratios:
        goal = GOALS[workload].get(r["key"])
        if r["alternative"] != DUCKDB or goal is None:
            continue
        verdict = "met" if r["ratio"] <= goal else "not met"
        out.append(f"goal {r['mpipipe']}: {r['metric']} <= {goal}x DuckDB alone's; measured "
                   f"{B.fmt_ratio(r['ratio'])}x: {verdict}")
    return out


def shuffle_lines(scripts: Dict[str, tuple], stats: Dict[str, Any]) -> List[str]:
    """The MPI shuffle's median time over the files shuffle's, per user script run both ways."""
    out = []
    by_script: Dict[str, Dict[str, str]] = {}
    for tool, (script, shuffle) in scripts.items():
        by_script.setdefault(script, {})[shuffle] = tool
    for script, tools in by_script.items():
        if "files" in tools and "mpi" in tools:
            r = B.ratio(stats[tools["mpi"]].get("wall"), stats[tools["files"]].get("wall"))
            if r is not None:
                out.append(f"{script}: MPI shuffle / files shuffle, median time: {B.fmt_ratio(r)}x")
    return out


def main(workload: str, label: str = "") -> None:
    """Run `workload` ("groupby" or "sort"); `label` names its result (default user_<workload>)."""
    rows = {"groupby": (1_000_000, 20_000_000), "sort": (500_000, 10_000_000)}[workload][0 if B.quick() else 1]
    def more(ap: Any) -> None:
        ap.add_argument("--launch", choices=["local", "mpi"], default="local",
                        help="run the user scripts on the local platform (default) or under mpiexec -n EXECUTORS+1")
        ap.add_argument("--shuffle", choices=["default", "files", "mpi", "both"], default="default",
                        help="SP_SHUFFLE of the user scripts; both: each script twice, files and mpi (with --launch "
                             "mpi), and the ratio of the two")

    a = B.data_workload_args(__doc__.splitlines()[0], rows, more)
    launch = a.launch
    shuffles = {"default": ("",), "both": ("files", "mpi")}.get(a.shuffle, (a.shuffle,))
    work = os.path.join(B.WORK, label or f"user-{workload}")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    if workload == "groupby":
        input_dir = os.path.join(B.DATA, f"groupby-{a.rows}rows-{a.files}files")
        groupby_bench.make_input(input_dir, a.rows, a.files)
        what = f"{a.rows:,} rows"
    else:
        input_dir = os.path.join(B.DATA, f"sort-random-{a.rows}rows-{a.files}files")
        sort_bench.write_input(input_dir, a.rows, a.files, random_filler=True)
        what = f"{a.rows:,} records of 100 bytes"
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(input_dir, "*.parquet")))
    print(f"{workload} as users write it: {what} in {a.files} files ({size / 1e6:,.0f} MB) under "
          f"{os.path.relpath(input_dir)} (ready in {time.perf_counter() - t0:.1f} s), {a.reps} rounds", flush=True)

    scripts = mpipipe_tools(workload, launch, a.executors, shuffles)
    timeout = 600 if B.quick() else 1800
    out: Dict[str, str] = {}
    cmds: Dict[str, tuple] = {}
    for tool, (script, shuffle) in scripts.items():
        out[tool] = "" if script == "groupby_plan.py" else os.path.join(work, job_id(script) + "-out")
        cmds[tool] = user_command(script, input_dir, out[tool] or None, a.partitions, a.executors, work, launch,
                                  shuffle)
    bench = os.path.join(B.HERE, f"{workload}.py")
    for tool, engine in ((DUCKDB, "duckdb"), (POLARS, "polars")):
        out[tool] = os.path.join(work, f"{engine}.parquet" if workload == "groupby" else f"{engine}-out")
        cmds[tool] = ([B.PYTHON, bench, "--alone", engine, "--input", input_dir, "--output", out[tool],
                       "--rows", str(a.rows), "--partitions", str(a.partitions), "--executors", str(a.executors)],
                      B.bench_env())
    tools = list(cmds)

    def run_one(tool: str, rep: int) -> Dict[str, Any]:
        if out[tool]:  # not timed: every run writes into nothing
            shutil.rmtree(out[tool], ignore_errors=True)
            if os.path.isfile(out[tool]):
                os.remove(out[tool])
        if tool in scripts:
            B.clear_job(work, job_id(scripts[tool][0]))
        argv, env = cmds[tool]
        rec = B.run(argv, timeout, env=env, label=tool, memory=True)
        if tool in scripts and rec["status"] == "ok":
            rec["profile"] = jobprofile.profile(os.path.join(work, job_id(scripts[tool][0])), rec["start"],
                                                rec["start"] + rec["wall"])
        return rec

    def show(tool: str, rec: Dict[str, Any]) -> str:
        mem = f"{rec['peak_rss_mb']:7,.0f} MiB largest process" if rec.get("peak_rss_mb") else ""
        return f"{rec['wall']:7.2f} s  {mem}"

    runs = B.alternate(tools, a.reps, run_one, show)

    checks = []
    ref = output_files(DUCKDB, out, work, scripts) if runs[DUCKDB][-1].get("status") == "ok" else []
    if workload == "sort":
        fp_path = os.path.join(input_dir, ".fingerprint-v2.json")
        if not os.path.exists(fp_path):
            B.write_json(fp_path, sort_bench.fingerprint(sorted(glob.glob(os.path.join(input_dir, "*.parquet")))))
        with open(fp_path) as f:
            expected = json.load(f)
    for tool in tools:
        if runs[tool][-1].get("status") != "ok":
            checks.append(f"{tool}: its last run failed; nothing to compare")
            continue
        files = output_files(tool, out, work, scripts)
        if workload == "groupby":
            if tool != DUCKDB:
                checks.append(groupby_bench.check_files(tool, files, ref[0]) if ref else
                              f"{tool}: DuckDB's last run failed; nothing to compare with")
        else:
            checks.append(sort_check(tool, files, expected, ref if ref and tool != DUCKDB else None, a.rows))

    cmp = B.compare(runs, METRICS, list(scripts), [k for k, _, _ in METRICS])
    notes = goal_lines(workload, cmp["ratios"]) + shuffle_lines(scripts, cmp["stats"])
    for tool in tools:
        names = collections.Counter(r.get("largest_process") for r in runs[tool] if r.get("largest_process"))
        if names:
            notes.append(f"{tool}: largest process: {names.most_common(1)[0][0]}")
    notes += [
        "peak RSS: the largest of the run's processes (the command and every process it started), the larger of "
        "its rusage when reaped and VmHWM sampled every 0.2 s (scripts/bench/procmem.py)",
        "each tool writes Parquet with its own default compression: snappy (mpipipe, DuckDB), zstd (Polars)"]
    if workload == "sort":
        notes.append("DuckDB writes one sorted file, Polars 8 in order, mpipipe one per partition (range i holds keys "
                     "<= those of range i+1)")
    sections = []
    for tool in scripts:
        med = median_run(runs[tool])
        if med and med.get("profile"):
            title = f"where the time of {tool} went (its median run, round {med['rep']}; from its journal)"
            sections.append({"title": title, "lines": jobprofile.lines(med["profile"]),
                             "markdown": jobprofile.markdown(med["profile"])})
    res = {"workload": label or f"user_{workload}",
           "title": (f"Group-by as users write it: {a.rows:,} rows, {a.files} files ({size / 1e6:,.0f} MB), hash "
                     f"partition into {a.partitions}, GROUP BY key" if workload == "groupby" else
                     f"Sort as users write it: {a.rows:,} records of 100 bytes, {a.files} files ({size / 1e6:,.0f} "
                     f"MB), range partition into {a.partitions}, sort per partition"),
           "params": {"rows": a.rows, "files": a.files, "input_mb": round(size / 1e6, 1), "partitions": a.partitions,
                      "reps": a.reps, "executors": a.executors, "launch": launch},
           "mpipipe_revision": B.mpipipe_revision(),
           "runs": runs, "tables": [{"columns": cmp["columns"], "rows": cmp["rows"]}], "ratios": cmp["ratios"],
           "checks": checks, "notes": notes, "sections": sections,
           "commands": {t: [f"{k}={os.path.relpath(v, B.REPO) if v.startswith(B.REPO) else v}"
                            for k, v in sorted(cmds[t][1].items()) if k.startswith("SP_")] + list(cmds[t][0])
                        for t in tools}}
    B.finish(res, a.out)
