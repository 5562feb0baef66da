"""What the benchmark scripts share: paths, running a timed subprocess, alternating tools, summaries, the machine line.

Every tool runs as its own subprocess, in its own process group, with a
timeout; a run that times out or fails is recorded as such and the benchmark
goes on (benchmarks print figures, they never fail on a timing). A process
reports what it measured itself by printing one line `BENCH_RESULT {json}`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(REPO, "mpipipe-jobs", "bench-data")      # generated inputs, made once and reused
WORK = os.path.join(REPO, "mpipipe-jobs", "bench-work")      # job directories and outputs of the runs
RESULTS = os.path.join(HERE, "results")                       # what a full run writes (committed)
QUICK_RESULTS = os.path.join(REPO, "mpipipe-jobs", "bench-results-quick")  # what BENCH_QUICK=1 writes (not committed)
BIN = os.path.dirname(os.path.abspath(sys.executable))
PYTHON = sys.executable
SMALLPOND_PYTHON = (os.environ.get("BENCH_SMALLPOND_PYTHON")
                    or os.path.join(REPO, ".venv", "bench-smallpond", "bin", "python"))
RESULT_PREFIX = "BENCH_RESULT "


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def quick() -> bool:
    return env_flag("BENCH_QUICK")


def bench_env(extra: Optional[Dict[str, str]] = None, path_first: Optional[str] = None) -> Dict[str, str]:
    """The environment of a benchmarked command: this virtualenv's bin/ first on PATH (its mpiexec matches mpi4py)."""
    env = dict(os.environ)
    for var in list(env):  # settings of an outer mpipipe or MPI run must not leak into the benchmarked ones
        if var.startswith("SP_") or var.startswith("PMI_") or var.startswith("OMPI_") or var.startswith("PMIX_"):
            del env[var]
    env["PATH"] = os.pathsep.join(p for p in (path_first, BIN, env.get("PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=os.pathsep.join((BIN, os.environ.get("PATH", ""))))
    return found or "mpiexec"


def report(**values: Any) -> None:
    """Called by a benchmarked process: hand what it measured to the runner."""
    print(RESULT_PREFIX + json.dumps(values, default=str), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    VmHWM from /proc/self/status where there is one: ru_maxrss would do, but
    Linux carries it over exec() from the process that forked, so a command
    started by a big runner (one that just generated data, say) would report
    the runner's peak. VmHWM belongs to the address space, which exec()
    replaces. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def run(cmd: Sequence[str], timeout: float, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
        label: str = "", memory: bool = False) -> Dict[str, Any]:
    """Run a command in its own process group; wall time from outside, plus whatever it reported.

    On timeout the whole group it started is stopped (SIGTERM, then SIGKILL),
    never anything else. With `memory`, the record also holds the peak
    resident memory of the largest process the command started (procmem.py).
    """
    watch = None
    if memory:
        import procmem

        watch = procmem.Watch(cmd)
        cmd = watch.argv
    t0 = time.perf_counter()
    start = time.time()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or bench_env(),
                            cwd=cwd or REPO, start_new_session=True, text=True, errors="replace")
    if watch is not None:
        watch.start(proc.pid)
    status = "ok"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        status = "timeout"
        _stop_group(proc)
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if status == "ok" and proc.returncode != 0:
        status = "error"
    linger = _drain_group(proc.pid)
    rec: Dict[str, Any] = {"status": status, "wall": round(wall, 4), "start": start, "rc": proc.returncode}
    if watch is not None:
        mem = watch.finish()
        if "wall" in mem:  # the command's own, without the small process that watched it starting
            rec["start"], rec["wall"] = mem.pop("start"), round(mem.pop("wall"), 4)
        rec.update(mem)
    if linger > 0.05:
        rec["linger"] = round(linger, 3)  # seconds its other processes outlived it (not in `wall`)
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                rec.update(json.loads(line[len(RESULT_PREFIX):]))
            except ValueError:
                pass
    if status != "ok":
        tail = (err or out or "").strip().splitlines()[-12:]
        rec["error"] = "\n".join(tail)[-2000:]
        print(f"    [{label or cmd[0]}] {status} after {wall:.1f} s (exit code {proc.returncode}):", file=sys.stderr)
        for line in tail:
            print(f"      {line}", file=sys.stderr)
    return rec


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drain_group(pgid: int, grace: float = 30.0) -> float:
    """Wait until every process of the group the command started has exited (so the next run has the machine
    to itself); what is still there after `grace` seconds is killed. Returns the seconds waited."""
    t0 = time.perf_counter()
    while _group_alive(pgid):
        if time.perf_counter() - t0 > grace:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.2)
            break
        time.sleep(0.02)
    return time.perf_counter() - t0


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def compile_project() -> None:
    """Byte-compile mpipipe's modules, as pip does for the packages it installs (the alternatives were).
    An editable install is not compiled, and with PYTHONDONTWRITEBYTECODE set every process (each rank,
    each worker) would compile the package again on start."""
    import compileall

    compileall.compile_dir(os.path.join(REPO, "mpipipe"), quiet=1)


def alternate(tools: Sequence[str], reps: int, run_one: Callable[[str, int], Dict[str, Any]],
              show: Callable[[str, Dict[str, Any]], str]) -> Dict[str, List[Dict[str, Any]]]:
    """A B C A B C ...: `reps` rounds, each tool once per round; prints every run as it ends."""
    compile_project()
    runs: Dict[str, List[Dict[str, Any]]] = {t: [] for t in tools}
    for rep in range(reps):
        for tool in tools:
            rec = run_one(tool, rep)
            rec["rep"] = rep + 1
            runs[tool].append(rec)
            what = show(tool, rec) if rec.get("status") == "ok" else rec.get("status")
            print(f"  rep {rep + 1}/{reps}  {tool:28s} {what}", flush=True)
    return runs


def summary(values: Sequence[float]) -> Optional[Dict[str, float]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def metric(runs: List[Dict[str, Any]], key: str) -> Optional[Dict[str, float]]:
    return summary([r[key] for r in runs if r.get("status") == "ok" and r.get(key) is not None])


def fmt_num(x: Optional[float], unit: str = "s") -> str:
    if x is None:
        return "n/a"
    if unit == "us":
        return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"
    if unit == "MB":
        return f"{x:,.0f}"
    if unit == "/s":
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_summary(s: Optional[Dict[str, float]], unit: str = "s") -> str:
    if not s:
        return "n/a"
    return f"{fmt_num(s['median'], unit)} ({fmt_num(s['min'], unit)}–{fmt_num(s['max'], unit)})"


def ratio(a: Optional[Dict[str, float]], b: Optional[Dict[str, float]]) -> Optional[float]:
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "n/a"
    return f"{r:.2g}" if r < 0.01 else f"{r:.2f}"


# --- the machine --------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    name = platform.system()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{name}, kernel {platform.release()}"


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _virtualized() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            if " hypervisor" in f.read():
                return "virtual machine"
    except OSError:
        pass
    return None


def mpipipe_revision() -> Optional[str]:
    """The commit the measured mpipipe came from, and whether mpipipe/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "mpipipe"], capture_output=True,
                               text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not head:
        return None
    return head + (f" + uncommitted changes in {len(dirty)} file(s) of mpipipe/" if dirty else "")


def machine() -> Dict[str, Any]:
    pkgs = {d: _version(d) for d in ("mpipipe", "mpi4py", "mpich", "duckdb", "pyarrow", "polars", "dask",
                                      "distributed", "numpy", "pandas", "cloudpickle")}
    sp = smallpond_versions()
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": round(_mem_gib() or 0, 1), "os": _os_name(),
            "python": platform.python_version(), "virtualization": _virtualized(),
            "packages": {k: v for k, v in pkgs.items() if v}, "smallpond_env": sp,
            "mpipipe_revision": mpipipe_revision()}
    return info


def machine_line(m: Dict[str, Any]) -> str:
    pk = m["packages"]
    pkgs = ", ".join(f"{k} {v}" for k, v in pk.items() if k in ("mpipipe", "mpi4py", "mpich", "duckdb", "pyarrow",
                                                               "polars", "dask", "distributed"))
    if m.get("mpipipe_revision"):
        pkgs = pkgs.replace(f"mpipipe {pk.get('mpipipe')}", f"mpipipe {pk.get('mpipipe')} ({m['mpipipe_revision']})")
    sp = m.get("smallpond_env") or {}
    if sp.get("smallpond"):
        pkgs += (f"; smallpond {sp['smallpond']} (own venv: duckdb {sp.get('duckdb')}, pyarrow {sp.get('pyarrow')}, "
                 f"ray {sp.get('ray')})")
    vm = f" ({m['virtualization']})" if m.get("virtualization") else ""
    return (f"{m['cpu']}, {m['cores']} cores{vm}, {m['memory_gib']:.0f} GiB RAM, {m['os']}, Python {m['python']}; "
            f"{pkgs}")


_SP_CACHE: Dict[str, Any] = {}


def smallpond_versions() -> Dict[str, Any]:
    """The smallpond virtualenv's versions, or why it cannot be used ({"error": ...})."""
    if "v" in _SP_CACHE:
        return _SP_CACHE["v"]
    if not os.path.exists(SMALLPOND_PYTHON):
        v: Dict[str, Any] = {"error": f"no smallpond virtualenv at {SMALLPOND_PYTHON} (`make bench` creates it)"}
    else:
        code = ("import json, importlib.metadata as m\n"
                "import smallpond\n"
                "print(json.dumps({d: m.version(d) for d in ('smallpond', 'duckdb', 'pyarrow', 'polars', 'ray')}))")
        try:
            p = subprocess.run([SMALLPOND_PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                v = json.loads(p.stdout.strip().splitlines()[-1])
            else:
                v = {"error": "import smallpond failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]}
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            v = {"error": f"cannot run {SMALLPOND_PYTHON}: {e}"}
    if "error" in v:
        log = os.path.join(os.path.dirname(os.path.dirname(SMALLPOND_PYTHON)), "install.log")
        try:
            with open(log, errors="replace") as f:
                errors = [line.strip() for line in f if line.startswith("ERROR")]
            if errors:
                v["error"] += f"; pip install smallpond said: {errors[-1]}"
        except OSError:
            pass
    _SP_CACHE["v"] = v
    return v


def smallpond_wanted() -> bool:
    """smallpond's scheduler needs about a minute to start (see smallpond_side.py); the quick run leaves it out."""
    if os.environ.get("BENCH_SMALLPOND") is not None:
        return env_flag("BENCH_SMALLPOND")
    return not quick()


# --- results ------------------------------------------------------------------------------

def write_json(path: str, data: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def default_out(name: str) -> str:
    return os.path.join(QUICK_RESULTS if quick() else os.path.join(WORK, "results"), f"{name}.json")


def natural_key(path: str) -> List[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path


def print_table(rows: List[List[str]], header: List[str]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


# --- tables -------------------------------------------------------------------------------

def compare(runs: Dict[str, List[Dict[str, Any]]], metrics: Sequence[tuple], mpipipe: Sequence[str],
            ratio_keys: Sequence[str]) -> Dict[str, Any]:
    """Per tool: median (min–max) of each metric; ratios mpipipe/alternative of the medians of `ratio_keys`.

    metrics: (key, column title, unit) with unit one of s, us, MB, /s.
    A ratio below 1 means mpipipe took less (time, memory) than the alternative.
    """
    rows, stats = [], {}
    for tool, recs in runs.items():
        ok = [r for r in recs if r.get("status") == "ok"]
        stats[tool] = {key: metric(recs, key) for key, _, _ in metrics}
        bad = len(recs) - len(ok)
        rows.append([tool] + [fmt_summary(stats[tool][key], unit) for key, _, unit in metrics]
                    + [f"{len(ok)}/{len(recs)}" + ("" if not bad else " (" + ", ".join(
                        sorted({r.get("status", "?") for r in recs if r.get("status") != "ok"})) + ")")])
    ratios = []
    for alt in runs:
        if alt in mpipipe:
            continue
        for key in ratio_keys:
            title = next(t for k, t, _ in metrics if k == key)
            for m in mpipipe:
                r = ratio(stats[m].get(key), stats[alt].get(key))
                if r is not None:
                    ratios.append({"alternative": alt, "metric": title, "key": key, "mpipipe": m,
                                   "ratio": float(f"{r:.4g}")})
    return {"columns": ["tool"] + [t for _, t, _ in metrics] + ["runs ok"], "rows": rows, "stats": stats,
            "ratios": ratios}


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ratio_rows(ratios: Sequence[Dict[str, Any]]) -> List[List[str]]:
    return [[r["mpipipe"], r["alternative"], r["metric"], fmt_ratio(r["ratio"])] for r in ratios]


RATIO_COLUMNS = ["mpipipe", "alternative", "metric", "mpipipe / alternative"]


def print_result(res: Dict[str, Any]) -> None:
    print(f"\n{res['title']}")
    for table in res.get("tables", []):
        if table.get("title"):
            print(f" {table['title']}")
        print_table(table["rows"], table["columns"])
    if res.get("ratios"):
        print(" ratios of the medians (below 1: mpipipe takes less)")
        print_table(ratio_rows(res["ratios"]), RATIO_COLUMNS)
    for c in res.get("checks", []):
        print(f" check: {c}")
    for n in res.get("notes", []):
        print(f" note: {n}")
    for section in res.get("sections", []):  # text a workload rendered itself: {"title", "lines", "markdown"}
        print(f"\n {section['title']}")
        for line in section["lines"]:
            print(f"  {line}")


def finish(res: Dict[str, Any], out: Optional[str]) -> None:
    res.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    res.setdefault("quick", quick())
    path = out or default_out(res["workload"])
    write_json(path, res)
    print_result(res)
    print(f"\n wrote {os.path.relpath(path)}")


def tiny_parquet(rows: int = 10_000, row_group: int = 10) -> str:
    """A small Parquet file (one int column, `rows` rows in row groups of `row_group`) for smallpond's no-op plan."""
    path = os.path.join(DATA, f"tiny-{rows}rows.parquet")
    if not os.path.exists(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        os.makedirs(DATA, exist_ok=True)
        pq.write_table(pa.table({"i": list(range(rows))}), path + ".tmp", row_group_size=row_group)
        os.replace(path + ".tmp", path)
    return path


def smallpond_status() -> Optional[str]:
    """None when smallpond can run here, else why not."""
    v = smallpond_versions()
    return v.get("error")


SMALLPOND_INTERVALS = ("smallpond scheduler: its defaults (executors probed every 30 s, work queues polled every "
                       "0.5 s); smallpond, test-harness intervals: the values its own test harness starts executors "
                       "with (probe every 1 s, poll every 0.1 s; scripts/bench/smallpond_side.py --fast)")


SMALLPOND_DATA = "smallpond scheduler (1 executor, 2 slots)"
SMALLPOND_DATA_FAST = "smallpond, test-harness intervals (1 executor, 2 slots)"


def smallpond_data_commands(workload: str, input_dir: str, partitions: int, work: str) -> Dict[str, List[str]]:
    """The two smallpond runs of a data benchmark, with its default intervals and with its test harness's:
    tool -> command. Each writes its results under work/<workload>-smallpond[-fast]-out."""
    cmds = {}
    for tool, tag, extra in ((SMALLPOND_DATA, "", []), (SMALLPOND_DATA_FAST, "-fast", ["--fast"])):
        cmds[tool] = [SMALLPOND_PYTHON, os.path.join(HERE, "smallpond_side.py"), workload, "--input", input_dir,
                      "--partitions", str(partitions), "--executors", "1",
                      "--work", os.path.join(work, f"smallpond{tag}-root"),
                      "--output", smallpond_output(workload, work, tool), *extra]
    return cmds


def smallpond_output(workload: str, work: str, tool: str) -> str:
    return os.path.join(work, f"{workload}-smallpond{'-fast' if tool == SMALLPOND_DATA_FAST else ''}-out")


def smallpond_skip_reason() -> Optional[str]:
    """None when smallpond is to run in this benchmark, else why it is left out."""
    problem = smallpond_status()
    if problem:
        return f"smallpond left out: {problem}"
    if not smallpond_wanted():
        if os.environ.get("BENCH_SMALLPOND") is not None:
            return "smallpond left out: BENCH_SMALLPOND=0"
        return ("smallpond left out of the quick run (its scheduler alone takes about a minute to start); "
                "BENCH_SMALLPOND=1 adds it")
    return None


def smallpond_env() -> Dict[str, str]:
    """smallpond's executors are started as `python ...` from PATH: its virtualenv's bin/ goes first."""
    return bench_env(path_first=os.path.dirname(SMALLPOND_PYTHON))


def clear_job(data_root: str, job_id: str) -> None:
    """Remove a job directory before a fresh run (not timed). --fresh alone would keep every earlier journal
    as journal.log.<time>.old, about 200 MB a run for a million tasks."""
    shutil.rmtree(os.path.join(data_root, job_id), ignore_errors=True)


def journal_span(job_dir: str) -> Optional[float]:
    """Seconds from the last run's `run` record to its `end` record in a job's journal: the scheduler's run."""
    from mpipipe.execution.journal import END, RUN, kind, read_records

    start = end = None
    try:
        for rec in read_records(os.path.join(job_dir, "journal.log")):
            k = kind(rec)
            if k == RUN:
                start, end = rec.get("time"), None
            elif k == END:
                end = rec.get("time")
    except OSError:
        return None
    return end - start if start is not None and end is not None else None


def data_workload_args(description: str, rows: int,
                       more: Optional[Callable[[argparse.ArgumentParser], Any]] = None) -> argparse.Namespace:
    """The flags of the data workloads (group-by, sort); --alone/--input/--output are how a workload runs
    one alternative in a process of its own. `more` adds a workload's own flags."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--out", help="the JSON result file")
    ap.add_argument("--alone", choices=["duckdb", "polars"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    if more is not None:
        more(ap)
    return ap.parse_args()
