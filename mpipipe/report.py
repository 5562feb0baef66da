"""A job's report: one self-contained HTML file (inline CSS, SVG and a little JavaScript, nothing fetched).

`write_report(job_dir)` reads only the job directory (`job.json` and the journal), so it
works while the job runs, after it ended and after it was killed, whatever the platform.
The page shows the job's summary, the plan as a layered graph, a timeline with one row
per executor rank and one bar per task attempt, the task durations per node, the
slowest attempts and the failures. Big jobs stay readable and the file stays small:
beyond `MAX_BARS` attempts the timeline shows per-rank time slices instead of bars.
"""
from __future__ import annotations

import bisect
import heapq
import html
import json
import math
import os
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote

import mpipipe
from mpipipe.errors import JournalError
from mpipipe.execution.journal import JOURNAL_NAME, read_records

MAX_BARS = 20_000             # task attempts drawn one by one; beyond, time slices per rank
MAX_FAILURE_ROWS = 200        # rows of the failures table
MAX_TRACKED_FAILURES = 100_000  # failing tasks whose details are kept (the rest are only counted)
MAX_HISTOGRAMS = 60           # nodes with a duration histogram (the busiest ones)
SLOWEST = 15                  # rows of the slowest-attempts table
MAX_LANES = 8                 # concurrent attempts drawn side by side in one rank's row
DISK_ENTRIES, DISK_SECONDS = 200_000, 2.0  # budget for adding up the outputs' sizes

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#a0cbe8",
           "#8cd17d", "#ffbe7d", "#bab0ac", "#d4a6c8")

# timeline geometry (pixels)
LABEL_W, PLOT_W, RIGHT_PAD, AXIS_H, BREAK_PX = 78, 1080, 14, 26, 30


def write_report(job_dir: str, out_path: Optional[str] = None) -> str:
    """Write the HTML report of the job in `job_dir` to `out_path` (default `<job_dir>/report.html`).

    Returns the path written. Raises JournalError when `job_dir` has no readable job.json.
    """
    out = os.path.abspath(out_path or os.path.join(job_dir, "report.html"))
    job = _Job.load(job_dir)
    page = _Page(job, os.path.dirname(out)).render()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


# --- reading the job -----------------------------------------------------------------------

@dataclass
class _Run:
    index: int
    time: Optional[float]
    pid: Any
    executors: Any
    platform: Any
    total: Any
    end: Optional[float] = None
    status: Optional[str] = None
    tmin: float = math.inf
    tmax: float = -math.inf
    ran: int = 0
    failed: int = 0

    def span(self) -> Tuple[float, float]:
        starts = [t for t in (self.time, self.tmin) if t is not None and math.isfinite(t)]
        start = min(starts) if starts else 0.0
        ends = [t for t in (self.end, self.tmax, self.time) if t is not None and math.isfinite(t)]
        return start, max(ends) if ends else start


@dataclass
class _Failing:
    """One task that failed at least once."""

    node: str
    partition: int
    current: bool  # the node's fingerprint is the plan's current one
    attempts: List[int] = field(default_factory=list)
    error: str = ""
    log: Any = None
    rank: Any = None
    where: str = ""
    last_failed: bool = True
    ok_attempt: Optional[int] = None


class _Job:
    """What the report shows, gathered in one pass over the journal."""

    def __init__(self, job_dir: str, job: Dict[str, Any]) -> None:
        self.job_dir = os.path.abspath(job_dir)
        self.job = job
        self.nodes: List[Dict[str, Any]] = [n for n in job.get("nodes", []) if isinstance(n, dict)]
        self.names: List[str] = [str(n.get("name", n.get("id"))) for n in self.nodes]
        self.name_index: Dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.by_fp: Dict[str, int] = {str(n.get("fingerprint")): i for i, n in enumerate(self.nodes)}
        # per current node: the run that last finished each partition (-1: none)
        self.last_ok_run = [array("i", [-1]) * max(0, int(n.get("npartitions") or 0)) for n in self.nodes]
        self.failed_attempts_node = [0] * len(self.nodes)
        self.runs: List[_Run] = []
        # every attempt, as columns
        self.a_node, self.a_part, self.a_att = array("i"), array("q"), array("i")
        self.a_rank, self.a_run, self.a_fail = array("i"), array("i"), array("b")
        self.a_t0, self.a_t1 = array("d"), array("d")
        self.durations: Dict[int, array] = {}
        self.slowest: List[Tuple[float, int, Dict[str, Any]]] = []
        self.failing: Dict[str, _Failing] = {}
        self.untracked_failures = 0
        self.ran = self.failed_attempt_count = self.retried = 0
        self.errors: Dict[int, str] = {}  # attempt index -> error, for failed attempts

    @classmethod
    def load(cls, job_dir: str) -> "_Job":
        path = os.path.join(job_dir, "job.json")
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except FileNotFoundError:
            raise JournalError(f"{job_dir} is not a job directory (no job.json; rank 0 writes it when the job "
                               "starts); give <data-root>/<job-id>") from None
        except (OSError, ValueError) as e:
            raise JournalError(f"cannot read {path}: {e}") from None
        if not isinstance(info, dict):
            raise JournalError(f"{path} is not a job description (expected a JSON object)")
        job = cls(job_dir, info)
        job.read_journal(read_records(os.path.join(job_dir, JOURNAL_NAME)))
        job.finish()
        return job

    # one pass over the records
    def read_journal(self, records: Iterable[Dict[str, Any]]) -> None:
        for rec in records:
            kind = rec.get("type")
            if kind == "run":
                self.runs.append(_Run(len(self.runs), _num(rec.get("time")), rec.get("pid"), rec.get("executors"),
                                      rec.get("platform"), rec.get("total")))
            elif kind == "end":
                if self.runs:
                    self.runs[-1].end = _num(rec.get("time"))
                    self.runs[-1].status = str(rec.get("status"))
            elif rec.get("s") in ("ok", "failed") and "n" in rec:
                self._attempt(rec)

    def _node_index(self, name: str) -> int:
        if name not in self.name_index:  # a node of an earlier plan, no longer in job.json
            self.name_index[name] = len(self.names)
            self.names.append(name)
        return self.name_index[name]

    def _attempt(self, rec: Dict[str, Any]) -> None:
        if not self.runs:
            self.runs.append(_Run(0, None, None, None, None, None))
        run = self.runs[-1]
        name = str(rec.get("n"))
        ni = self._node_index(name)
        p = _int(rec.get("p"))
        a = _int(rec.get("a"))
        rank = _int(rec.get("r"))
        t0, t1 = _num(rec.get("t0")) or 0.0, _num(rec.get("t1")) or 0.0
        if t1 < t0:
            t1 = t0
        failed = rec.get("s") != "ok"
        key = str(rec.get("k", f"{name}:{p}"))
        fp = key.rpartition(":")[0]
        cur = self.by_fp.get(fp)
        current = cur is not None and self.names[cur] == name
        i = len(self.a_node)
        self.a_node.append(ni)
        self.a_part.append(p)
        self.a_att.append(a)
        self.a_rank.append(rank)
        self.a_run.append(run.index)
        self.a_fail.append(1 if failed else 0)
        self.a_t0.append(t0)
        self.a_t1.append(t1)
        if t0 > 0:
            run.tmin = min(run.tmin, t0)
            run.tmax = max(run.tmax, t1)
        dur = t1 - t0
        entry = self.failing.get(key)
        if entry is not None and entry.last_failed:
            self.retried += 1  # the previous failed attempt of this task was tried again
        if failed:
            run.failed += 1
            self.failed_attempt_count += 1
            err = str(rec.get("e") or "")
            self.errors[i] = err[:2000]
            if current:
                self.failed_attempts_node[cur] += 1  # type: ignore[index]
            if entry is None:
                if len(self.failing) >= MAX_TRACKED_FAILURES:
                    self.untracked_failures += 1
                else:
                    entry = self.failing[key] = _Failing(name, p, current)
            if entry is not None:
                entry.attempts.append(a)
                entry.error, entry.log, entry.rank = err[:4000], rec.get("log"), rank
                entry.where = str(rec.get("where") or "")
                entry.last_failed, entry.ok_attempt = True, None
        else:
            run.ran += 1
            self.ran += 1
            if entry is not None:
                entry.last_failed, entry.ok_attempt = False, a
            if current and 0 <= p < len(self.last_ok_run[cur]):  # type: ignore[index]
                self.last_ok_run[cur][p] = run.index  # type: ignore[index]
            self.durations.setdefault(ni, array("d")).append(dur)
        item = (dur, i, {"log": rec.get("log"), "failed": failed})
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, item)
        elif dur > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, item)

    def finish(self) -> None:
        """Derived numbers: status, reused tasks, runs grouped by invocation."""
        self.status = self._status()
        last_pid = self.runs[-1].pid if self.runs else None
        first = len(self.runs)
        while first > 0 and self.runs[first - 1].pid == last_pid:
            first -= 1
        self.invocation_start = first  # runs of the latest process (one per run() call)
        self.done = [sum(1 for r in runs if r >= 0) for runs in self.last_ok_run]
        self.reused = sum(1 for runs in self.last_ok_run for r in runs if 0 <= r < first)
        self.failed_tasks = [0] * len(self.nodes)
        for f in self.failing.values():
            if f.last_failed and f.current and f.node in self.name_index:
                ni = self.name_index[f.node]
                if ni < len(self.nodes):
                    self.failed_tasks[ni] += 1
        self.failed_for_good = sum(1 for f in self.failing.values() if f.last_failed)

    def _status(self) -> str:
        if not self.runs:
            return "not started"
        last = self.runs[-1]
        if last.status:
            return last.status
        holder = _lock_holder(self.job_dir)
        if holder is None:
            return "running or killed"
        return "running" if holder else "killed"

    @property
    def ended(self) -> bool:
        return bool(self.runs) and self.runs[-1].status is not None

    def total_tasks(self) -> int:
        return sum(int(n.get("npartitions") or 0) for n in self.nodes)


def _lock_holder(job_dir: str) -> Optional[bool]:
    """True/False: the process named in the job's lock file is alive / gone (same host only); None: cannot tell."""
    try:
        with open(os.path.join(job_dir, "lock"), encoding="utf-8", errors="replace") as f:
            words = f.read(200).split()
    except OSError:
        return None
    if len(words) != 4 or words[0] != "pid" or words[2] != "on" or not words[1].isdigit():
        return None
    if words[3] != socket.gethostname() or os.name != "posix":
        return None
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _num(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def _disk_usage(path: str) -> Tuple[int, int, bool]:
    """(bytes, files, complete) under `path`, staging folders left out; stops at a budget of entries and time."""
    total = files = seen = 0
    inodes = set()
    deadline = time.monotonic() + DISK_SECONDS
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                seen += 1
                if seen > DISK_ENTRIES or (seen % 1000 == 0 and time.monotonic() > deadline):
                    return total, files, False
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.name != ".staging":
                            stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        if st.st_nlink > 1:
                            if (st.st_dev, st.st_ino) in inodes:
                                continue
                            inodes.add((st.st_dev, st.st_ino))
                        total += st.st_size
                        files += 1
                except OSError:
                    continue
    return total, files, True


# --- formatting ----------------------------------------------------------------------------

def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def fmt_dur(s: float) -> str:
    if s != s or s < 0:
        return "?"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 0.01:
        return f"{s * 1e3:.1f}ms"
    if s < 1:
        return f"{s * 1e3:.0f}ms"
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m}m {sec:02d}s"
    h, rest = divmod(int(round(s)), 3600)
    return f"{h}h {rest // 60:02d}m"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def fmt_tick(t: float, step: float) -> str:
    if step < 1:
        digits = next((d for d in range(4) if abs(round(step, d) - step) < 1e-9), 3)
        return f"{t:.{digits}f}s"
    t = int(round(t))
    if t < 60:
        return f"{t}s"
    if t < 3600:
        m, s = divmod(t, 60)
        return f"{m}m" if s == 0 else f"{m}m{s:02d}s"
    h, rest = divmod(t, 3600)
    return f"{h}h" if rest == 0 else f"{h}h{rest // 60:02d}m"


def nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-6) / max(1, target)
    for step in (1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600,
                 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if step >= raw:
            return step
    return 86400 * math.ceil(raw / 86400)


def js_json(value: Any) -> str:
    """JSON safe inside a <script> element (no `</script>`, `<!--` or HTML entities can appear)."""
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:max(1, n - 1)] + "…"


def _layers(inputs: List[List[int]]) -> List[int]:
    """Columns of the plan graph: longest path from a source, then every node moved as far right as its consumers
    allow (a side branch sits next to where it is used). Cycles, which a plan cannot have, are cut."""
    n = len(inputs)
    layer = [0] * n
    for _ in range(n):
        changed = False
        for i, ins in enumerate(inputs):
            want = 1 + max((layer[x] for x in ins), default=-1)
            if want > layer[i] and want < n:
                layer[i], changed = want, True
        if not changed:
            break
    consumers: List[List[int]] = [[] for _ in range(n)]
    for i, ins in enumerate(inputs):
        for x in ins:
            consumers[x].append(i)
    for _ in range(n):
        changed = False
        for i in range(n):
            if consumers[i]:
                want = min(layer[c] for c in consumers[i]) - 1
                if want > layer[i]:
                    layer[i], changed = want, True
        if not changed:
            break
    return layer


def _f(x: float) -> str:
    """A coordinate with one decimal, without a trailing .0."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


# --- the page ------------------------------------------------------------------------------

@dataclass
class _Cluster:
    """Runs close in time, drawn on one stretch of the time axis; long pauses between clusters are cut out."""

    start: float
    end: float
    x0: float = 0.0
    runs: List[int] = field(default_factory=list)


class _Page:
    def __init__(self, job: _Job, out_dir: str) -> None:
        self.job = job
        self.out_dir = out_dir
        self.now = time.time()
        self.data: Dict[str, Any] = {"nodes": job.names, "bars": [], "errors": [], "agg": [], "aggf": []}

    def color(self, ni: int) -> str:
        return PALETTE[ni % len(PALETTE)]

    def render(self) -> str:
        j = self.job
        title = f"mpipipe report: {j.job.get('job_id', os.path.basename(j.job_dir))}"
        self.clusters, self.scale = self._clusters()
        parts = [
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            # first script of the page: records any error of what follows (tests read the attribute)
            "<script>window.__reportErrors=[];window.addEventListener('error',function(e){"
            "window.__reportErrors.push(String(e.message||e));"
            "document.documentElement.setAttribute('data-errors',window.__reportErrors.join(' | '));});</script>",
            f"<title>{esc(title)}</title>", f"<style>{CSS}</style></head><body>",
            self._header(),
            self._section("plan", "Plan", self._plan()),
            self._section("timeline", "Timeline", self._timeline()),
            self._section("durations", "Task durations", self._durations()),
            self._section("slowest", "Slowest attempts", self._slowest()),
            self._section("failures", "Failures", self._failures()),
            f"<footer>Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.now)))} by mpipipe "
            f"{esc(mpipipe.__version__)} from {esc(j.job_dir)}</footer>",
            "<div id=\"tip\" role=\"tooltip\"></div>",
            f"<script type=\"application/json\" id=\"report-data\">{js_json(self.data)}</script>",
            f"<script>{JS}</script></body></html>\n",
        ]
        return "".join(parts)

    @staticmethod
    def _section(ident: str, title: str, body: str) -> str:
        return f"<section id=\"{ident}\"><h2>{esc(title)}</h2>{body}</section>"

    def _rel(self, t: float) -> float:
        return t - self.clusters[0].start if self.clusters else 0.0

    def _logref(self, log: Any) -> str:
        """A log reference as a link relative to the report (the byte range of a shared worker log in words)."""
        if not log:
            return "<span class=\"dim\">none</span>"
        if isinstance(log, (list, tuple)):
            path, start, end = (list(log) + [None, None, None])[:3]
        else:
            path, start, end = log, None, None
        path = str(path)
        shown = path
        try:
            if os.path.isabs(path) and os.path.commonpath([path, self.job.job_dir]) == self.job.job_dir:
                shown = os.path.relpath(path, self.job.job_dir)
        except ValueError:
            pass
        rng = ""
        if isinstance(start, int) and isinstance(end, int) and (start or end) and end >= start:
            rng = f" <span class=\"dim\">bytes {start:,}–{end:,}</span>"
        href = None
        try:
            href = os.path.relpath(path, self.out_dir).replace(os.sep, "/") if os.path.isabs(path) else None
        except ValueError:
            href = None
        if href:
            return f"<a class=\"mono\" href=\"{esc(quote(href))}\">{esc(shown)}</a>{rng}"
        return f"<span class=\"mono\">{esc(shown)}</span>{rng}"

    # header ------------------------------------------------------------------------------
    def _header(self) -> str:
        j, info = self.job, self.job.job
        status = j.status
        pills = {"succeeded": "ok", "failed": "bad", "interrupted": "warn", "running": "run", "killed": "bad"}
        cls = pills.get(status, "idle")
        hosts = info.get("hosts") or {}
        host_names = sorted({str(h.get("host")) for h in hosts.values() if isinstance(h, dict) and h.get("host")})
        wall = sum(c.end - c.start for c in self.clusters)
        started = j.runs[0].time if j.runs and j.runs[0].time else _num(info.get("started"))
        meta = [f"platform <b>{esc(info.get('platform', '?'))}</b>",
                f"<b>{esc(info.get('executors', '?'))}</b> executor rank(s)"]
        if host_names:
            shown = ", ".join(host_names[:4]) + (f" and {len(host_names) - 4} more" if len(host_names) > 4 else "")
            meta.append(f"on {len(host_names)} host(s): {esc(shown)}")
        if started:
            meta.append("started " + esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))))
        invocations = sum(1 for k, r in enumerate(j.runs) if k == 0 or r.pid != j.runs[k - 1].pid)
        meta.append(f"{len(j.runs)} run(s)" + (f" in {invocations} invocations" if invocations > 1 else ""))
        meta.append(f"mpipipe {esc(info.get('mpipipe', '?'))}")
        argv = info.get("argv") or []
        cmd = " ".join(str(a) for a in argv)
        if len(cmd) > 400:
            cmd = cmd[:400] + " …"
        nbytes, nfiles, complete = _disk_usage(os.path.join(j.job_dir, "outputs"))
        size = fmt_bytes(nbytes) if complete else f"≥ {fmt_bytes(nbytes)}"
        nodes_line = f"{len(j.nodes):,} node{'s' if len(j.nodes) != 1 else ''}"
        tiles = [
            ("Wall time", fmt_dur(wall), "so far" if not j.ended else f"{len(j.runs)} run(s)",
             "time from each run's start to its end, pauses between runs left out", False),
            ("Tasks ran", f"{j.ran:,}", "successful attempts", "successful attempts, over all runs", False),
            ("Reused", f"{j.reused:,}", "from the journal", "tasks of the plan finished by an earlier process and "
                                                           "taken from the journal by the latest one", False),
            ("Retried", f"{j.retried:,}", "attempts tried again", "failed attempts that were tried again", False),
            ("Failed", f"{j.failed_for_good:,}", "tasks not recovered", "tasks whose last attempt failed",
             j.failed_for_good > 0),
            ("Failed attempts", f"{j.failed_attempt_count:,}", "retried or not", "every failed attempt, retried or not",
             False),
            ("Plan tasks", f"{j.total_tasks():,}", nodes_line, "partitions and nodes of the plan", False),
            ("Output bytes", size, f"{nfiles:,} files", f"{nfiles:,} files under outputs/" +
             ("" if complete else " (stopped counting: too many)"), False),
        ]
        tile_html = "".join(
            f"<div class=\"tile{' bad' if bad else ''}\" title=\"{esc(tip)}\"><div class=\"tl-label\">{esc(label)}"
            f"</div><div class=\"tl-value\">{esc(value)}</div><div class=\"tl-sub\">{esc(sub)}</div></div>"
            for label, value, sub, tip, bad in tiles)
        running = ""
        if not j.ended and j.runs:
            running = ("<p class=\"note\">The latest run has no end record yet: it is still running, or it was "
                       "killed. Attempts in flight are not in the journal yet.</p>")
        return (f"<header><h1>Job <span class=\"mono\">{esc(info.get('job_id', '?'))}</span>"
                f"<span class=\"pill {cls}\" id=\"job-status\">{esc(status)}</span></h1>"
                f"<p class=\"meta\">{' · '.join(meta)}</p>"
                f"<p class=\"cmd mono\" title=\"the command line\">{esc(cmd)}</p>"
                f"<div class=\"tiles\">{tile_html}</div>{running}{self._runs_table()}</header>")

    def _runs_table(self) -> str:
        j = self.job
        if len(j.runs) < 2:
            return ""
        rows = []
        for r in j.runs[-30:]:
            start, end = r.span()
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)) if r.time else "?"
            rows.append(f"<tr><td>{r.index + 1}</td><td>{esc(when)}</td><td>{esc(r.pid)}</td><td>{esc(r.platform)}</td>"
                        f"<td class=\"num\">{esc(r.executors)}</td><td class=\"num\">{fmt_dur(end - start)}</td>"
                        f"<td class=\"num\">{r.ran:,}</td><td class=\"num\">{r.failed:,}</td>"
                        f"<td>{esc(r.status or ('no end record'))}</td></tr>")
        more = f"<p class=\"dim\">the last 30 of {len(j.runs)} runs</p>" if len(j.runs) > 30 else ""
        return ("<details class=\"runs\"><summary>Runs (each start of the scheduler; a resumed job has several)"
                "</summary><table><thead><tr><th>run</th><th>started</th><th>pid</th><th>platform</th>"
                "<th>executors</th><th>duration</th><th>ran</th><th>failed attempts</th><th>status</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>{more}</details>")

    # plan graph --------------------------------------------------------------------------
    def _plan(self) -> str:
        j = self.job
        if not j.nodes:
            return "<p class=\"dim\">job.json lists no nodes.</p>"
        nn = len(j.nodes)
        ids = {n.get("id"): i for i, n in enumerate(j.nodes)}
        inputs = [[ids[x] for x in (n.get("inputs") or []) if x in ids and ids[x] != i] for i, n in enumerate(j.nodes)]
        layer = _layers(inputs)
        # an edge across several columns passes through a slot in each column between (no box is crossed)
        items: List[Tuple[str, int]] = [("node", i) for i in range(nn)]  # item -> ("node", i) or ("via", edge)
        item_layer = list(layer)
        preds: List[List[int]] = [[] for _ in range(nn)]
        chains: List[Tuple[int, int, List[int]]] = []  # (src node, dst node, items along the edge)
        for dst, ins in enumerate(inputs):
            for src in ins:
                prev, chain = src, [src]
                for lay in range(layer[src] + 1, layer[dst]):
                    items.append(("via", len(chains)))
                    item_layer.append(lay)
                    preds.append([prev])
                    prev = len(items) - 1
                    chain.append(prev)
                preds[dst].append(prev)
                chain.append(dst)
                chains.append((src, dst, chain))
        nlayers = max(item_layer) + 1
        columns: List[List[int]] = [[] for _ in range(nlayers)]
        for it, lay in enumerate(item_layer):
            columns[lay].append(it)
        succs: List[List[int]] = [[] for _ in items]
        for it, ps in enumerate(preds):
            for p_ in ps:
                succs[p_].append(it)
        pos = {it: float(k) for col in columns for k, it in enumerate(col)}
        for sweep in range(4):  # order columns by the mean position of neighbours (fewer crossings)
            order = columns[1:] if sweep % 2 == 0 else columns[-2::-1]
            for col in order:
                nb = preds if sweep % 2 == 0 else succs
                col.sort(key=lambda it: (sum(pos[x] for x in nb[it]) / len(nb[it]) if nb[it] else pos[it]))
                for k, it in enumerate(col):
                    pos[it] = float(k)
        bw, bh, gx, gy, pad, via_h = 224, 66, 64, 14, 10, 10
        heights = [bh if kind == "node" else via_h for kind, _ in items]
        col_h = [sum(heights[it] for it in col) + gy * max(0, len(col) - 1) for col in columns]
        height = int(pad * 2 + max(col_h))
        width = pad * 2 + nlayers * bw + (nlayers - 1) * gx
        top: Dict[int, float] = {}
        for c, col in enumerate(columns):
            y = pad + (height - 2 * pad - col_h[c]) / 2
            for it in col:
                top[it] = y
                y += heights[it] + gy

        def left_x(it: int) -> float:
            return pad + item_layer[it] * (bw + gx)

        def mid_y(it: int) -> float:
            return top[it] + heights[it] / 2

        out = [f"<div class=\"scroll\"><svg class=\"plan\" width=\"{width}\" height=\"{height}\" "
               f"viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" "
               f"aria-label=\"plan graph\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
               f"markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#8a94a6\"/>"
               f"</marker></defs>"]
        for src, dst, chain in chains:
            d = []
            x, y = left_x(src) + bw, mid_y(src)
            d.append(f"M{_f(x)},{_f(y)}")
            for it in chain[1:]:
                x2, y2 = left_x(it), mid_y(it)
                if it == dst:
                    x2 -= 1
                mx = (x + x2) / 2
                d.append(f"C{_f(mx)},{_f(y)} {_f(mx)},{_f(y2)} {_f(x2)},{_f(y2)}")
                if it != dst:  # straight through the column
                    x = x2 + bw
                    d.append(f"L{_f(x)},{_f(y2)}")
                    y = y2
            out.append(f"<path class=\"edge\" d=\"{''.join(d)}\" marker-end=\"url(#arrow)\"/>")
        for i, n in enumerate(j.nodes):
            x, y = left_x(i), top[i]
            total = int(n.get("npartitions") or 0)
            done, failed, fattempts = j.done[i], j.failed_tasks[i], j.failed_attempts_node[i]
            state = "bad" if failed else ("ok" if total and done >= total else ("part" if done else "todo"))
            name = str(n.get("name", i))
            kind = str(n.get("kind", "?"))
            line2 = f"{kind} · {total:,} partition{'s' if total != 1 else ''}"
            line3 = (("done" if total == 1 else f"all {total:,} done") if total and done >= total
                     else f"{done:,}/{total:,} done")
            if failed:
                line3 += f" · {failed:,} failed"
            elif fattempts:
                line3 += f" · {fattempts:,} retried"
            fits = int((bw - 22) / 5.8)  # characters of 11px text that fit in the box
            badge = ""
            if n.get("pointwise") and len(line3) + 11 <= fits:
                badge = f"<text class=\"pkind end\" x=\"{bw - 8}\" y=\"51\">pointwise</text>"
            frac = done / total if total else 0.0
            tip = (f"{name}\nkind: {kind}\npartitions: {total:,}{' (pointwise)' if n.get('pointwise') else ''}\n"
                   f"done: {done:,}\nfailed (last attempt): {failed:,}\nfailed attempts: {fattempts:,}\n"
                   f"fingerprint: {n.get('fingerprint', '?')}")
            out.append(
                f"<g class=\"pnode {state}\" data-node=\"{i}\" transform=\"translate({_f(x)},{_f(y)})\">"
                f"<title>{esc(tip)}</title>"
                f"<rect class=\"box\" width=\"{bw}\" height=\"{bh}\" rx=\"6\"/>"
                f"<rect x=\"0\" y=\"0\" width=\"6\" height=\"{bh}\" rx=\"3\" fill=\"{self.color(i)}\"/>"
                f"<text class=\"pname\" x=\"14\" y=\"19\">{esc(_clip(name, int((bw - 22) / 8.0)))}</text>"
                f"<text class=\"pkind\" x=\"14\" y=\"35\">{esc(_clip(line2, fits))}</text>"
                f"<text class=\"pcount {state}\" x=\"14\" y=\"51\">{esc(_clip(line3, fits))}</text>{badge}"
                f"<rect class=\"pbar\" x=\"14\" y=\"57\" width=\"{bw - 26}\" height=\"4\" rx=\"2\"/>"
                f"<rect class=\"pbar-done {state}\" x=\"14\" y=\"57\" width=\"{_f((bw - 26) * frac)}\" height=\"4\" "
                f"rx=\"2\"/></g>")
        out.append("</svg></div>")
        return "".join(out)

    # timeline ----------------------------------------------------------------------------
    def _clusters(self) -> Tuple[List[_Cluster], float]:
        j = self.job
        spans = []
        for r in j.runs:
            start, end = r.span()
            if r is j.runs[-1] and j.status == "running":
                end = max(end, self.now)
            if start > 0:
                spans.append((start, end, r.index))
        if not spans:
            return [], 1.0
        spans.sort()
        merged: List[_Cluster] = []
        for start, end, idx in spans:  # overlapping runs first
            if merged and start <= merged[-1].end:
                merged[-1].end = max(merged[-1].end, end)
                merged[-1].runs.append(idx)
            else:
                merged.append(_Cluster(start, end, runs=[idx]))
        active = sum(c.end - c.start for c in merged)
        threshold = max(10.0, 0.05 * active)
        clusters: List[_Cluster] = [merged[0]]
        for c in merged[1:]:  # short pauses (between the actions of one script, say) are drawn as they are
            if c.start - clusters[-1].end <= threshold:
                clusters[-1].end = max(clusters[-1].end, c.end)
                clusters[-1].runs.extend(c.runs)
            else:
                clusters.append(c)
        while len(clusters) > 12:  # too many pauses: keep the longest ones cut out
            gaps = [(clusters[k + 1].start - clusters[k].end, k) for k in range(len(clusters) - 1)]
            _, k = min(gaps)
            clusters[k].end = max(clusters[k].end, clusters[k + 1].end)
            clusters[k].runs.extend(clusters[k + 1].runs)
            del clusters[k + 1]
        length = sum(c.end - c.start for c in clusters)
        usable = PLOT_W - BREAK_PX * (len(clusters) - 1)
        scale = usable / length if length > 0 else 1.0
        x = 0.0
        for c in clusters:
            c.x0 = x
            x += (c.end - c.start) * scale + BREAK_PX
        return clusters, scale

    def _timeline(self) -> str:
        j = self.job
        n = len(j.a_node)
        info_hosts = j.job.get("hosts") or {}
        ranks = sorted({int(r) for r in info_hosts if str(r).lstrip("-").isdigit()} |
                       {r for r in set(j.a_rank) if r >= 0})
        if not ranks:
            return "<p class=\"dim\">No task attempt is in the journal yet.</p>"
        run_cluster: Dict[int, _Cluster] = {r: c for c in self.clusters for r in c.runs}
        scale = self.scale

        def xpos(i: int, t: float) -> float:
            c = run_cluster.get(j.a_run[i]) or (self.clusters[0] if self.clusters else _Cluster(t, t))
            return c.x0 + (min(max(t, c.start), c.end) - c.start) * scale

        drawable = [i for i in range(n) if j.a_t0[i] > 0]
        aggregate = len(drawable) > MAX_BARS
        by_rank: Dict[int, List[int]] = {r: [] for r in ranks}
        for i in drawable:
            by_rank.setdefault(j.a_rank[i], []).append(i)
        ranks = sorted(by_rank)
        lanes_of: Dict[int, int] = {}
        lane: Dict[int, int] = {}
        if not aggregate:
            for r, idx in by_rank.items():
                idx.sort(key=lambda i: j.a_t0[i])
                ends: List[float] = []
                for i in idx:
                    t0, t1 = j.a_t0[i], j.a_t1[i]
                    for k, e in enumerate(ends):
                        if e <= t0 + 1e-4:
                            ends[k] = t1
                            lane[i] = k
                            break
                    else:
                        if len(ends) < MAX_LANES:
                            ends.append(t1)
                            lane[i] = len(ends) - 1
                        else:
                            k = min(range(len(ends)), key=ends.__getitem__)
                            ends[k] = max(ends[k], t1)
                            lane[i] = k
                lanes_of[r] = max(1, len(ends))
        else:
            lanes_of = {r: 1 for r in ranks}
        total_lanes = sum(lanes_of.values())
        lane_h = 24 if total_lanes <= 12 else (18 if total_lanes <= 40 else max(3, min(18, int(760 / total_lanes))))
        row_pad = 3 if lane_h >= 10 else (1 if lane_h >= 5 else 0)
        bar_h = lane_h - 2 if lane_h >= 8 else max(1, lane_h - 1)
        label_every = 1 if lane_h * 1 + 2 * row_pad >= 11 else math.ceil(11 / (lane_h + 2 * row_pad))
        hosts_known = len({str(h.get("host")) for h in info_hosts.values() if isinstance(h, dict)}) > 1
        svg_w = LABEL_W + PLOT_W + RIGHT_PAD
        rows: List[str] = []
        bars_json: List[List[Any]] = self.data["bars"]
        err_index: Dict[str, int] = {}
        y = AXIS_H
        failed_total = 0
        backgrounds: List[str] = []
        for ri, r in enumerate(ranks):
            rh = lanes_of[r] * lane_h + 2 * row_pad
            host = info_hosts.get(str(r)) if isinstance(info_hosts.get(str(r)), dict) else None
            label = f"rank {r}"
            tip = label + (f" on {host.get('host')}, {host.get('cores', '?')} cores" if host else "")
            if lanes_of[r] > 1:
                tip += f", up to {lanes_of[r]} attempts at once"
            backgrounds.append(f"<rect class=\"rowbg{' odd' if ri % 2 else ''}\" x=\"{LABEL_W}\" y=\"{y}\" "
                               f"width=\"{PLOT_W}\" height=\"{rh}\"/>")
            g = [f"<g class=\"row\" data-rank=\"{r}\" data-lanes=\"{lanes_of[r]}\" transform=\"translate(0,{y})\">"]
            if ri % label_every == 0:
                short = label if not hosts_known or not host or lane_h < 14 else f"{r} · {host.get('host')}"
                if len(short) > 13:
                    short = short[:12] + "…"
                g.append(f"<text class=\"rl\" x=\"{LABEL_W - 8}\" y=\"{_f(rh / 2 + 4)}\"><title>{esc(tip)}</title>"
                         f"{esc(short)}</text>")
            g.append(f"<g transform=\"translate({LABEL_W},{row_pad})\">")
            idx = by_rank[r]
            fails = [i for i in idx if j.a_fail[i]]
            failed_total += len(fails)
            if aggregate:
                g.append(self._aggregate_row(r, idx, xpos, bar_h))
                g.append(self._aggregate_failures(r, fails, xpos, bar_h, row_pad, err_index))
            else:
                for i in idx:
                    if j.a_fail[i]:
                        continue
                    x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
                    k = len(bars_json)
                    bars_json.append(self._bar_json(i, -1))
                    g.append(f"<rect class=\"bar c{j.a_node[i] % len(PALETTE)}\" data-n=\"{j.a_node[i]}\" "
                             f"data-i=\"{k}\" x=\"{_f(x0)}\" y=\"{lane[i] * lane_h}\" "
                             f"width=\"{_f(max(1.0, x1 - x0))}\" height=\"{bar_h}\"/>")
                for i in fails:  # on top, a little taller, and wide enough that a crash in 1 ms shows
                    x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
                    w = max(4.0, x1 - x0)
                    x0 = min(x0, PLOT_W - w)
                    err = j.errors.get(i, "")
                    k = len(bars_json)
                    bars_json.append(self._bar_json(i, self._error_index(err, err_index)))
                    out = min(2, row_pad)
                    title = (f"{j.names[j.a_node[i]]}[{j.a_part[i]}] attempt {j.a_att[i]} failed after "
                             f"{fmt_dur(j.a_t1[i] - j.a_t0[i])} on rank {r}: {err[:300]}")
                    g.append(f"<rect class=\"bar fail\" data-failed=\"1\" data-n=\"{j.a_node[i]}\" data-i=\"{k}\" "
                             f"x=\"{_f(x0)}\" y=\"{lane[i] * lane_h - out}\" width=\"{_f(w)}\" "
                             f"height=\"{bar_h + 2 * out}\"><title>{esc(title)}</title></rect>")
            g.append("</g></g>")
            rows.append("".join(g))
            y += rh + (1 if lane_h < 8 else 2)
        height = y + AXIS_H
        under, over = self._axis(height)
        parts = [f"<div class=\"legend\">{self._legend()}</div>",
                 f"<div class=\"scroll\"><svg class=\"tl\" id=\"timeline-svg\" width=\"{svg_w}\" height=\"{height}\" "
                 f"viewBox=\"0 0 {svg_w} {height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" "
                 f"aria-label=\"timeline of task attempts per rank\" data-ranks=\"{len(ranks)}\" "
                 f"data-aggregated=\"{1 if aggregate else 0}\">{SVG_DEFS}{''.join(backgrounds)}{under}{''.join(rows)}"
                 f"{over}</svg></div>"]
        notes = []
        if aggregate:
            notes.append(f"{len(drawable):,} attempts are more than the {MAX_BARS:,} drawn one by one: each rank's "
                         "row shows time slices instead, coloured by the node that kept the rank busiest in the "
                         "slice and shaded by how busy the rank was.")
            if failed_total:
                notes.append(f"The {failed_total:,} failed attempts are marked by slice too: a red mark on top of a "
                             "row's slice says how many failed there.")
        if any(c.runs for c in self.clusters[1:]):
            notes.append("Hatched gaps cut out pauses between runs; the axis shows the time since the first start.")
        if n > len(drawable):
            notes.append(f"{n - len(drawable):,} attempt(s) without start times are not drawn.")
        notes.append("Hover a bar for its task, attempt, rank, duration and error; hover a node in the legend to "
                     "highlight its attempts.")
        return "".join(parts) + "".join(f"<p class=\"note\">{esc(t)}</p>" for t in notes)

    def _bar_json(self, i: int, err: int) -> List[Any]:
        j = self.job
        return [j.a_node[i], j.a_part[i], j.a_att[i], j.a_rank[i], round(self._rel(j.a_t0[i]), 4),
                float(f"{j.a_t1[i] - j.a_t0[i]:.4g}"), err]

    def _time_at(self, x: float) -> float:
        """Seconds since the first start at plot position x."""
        c = next((c for c in reversed(self.clusters) if c.x0 <= x), None)
        if c is None:
            return 0.0
        return self._rel(min(c.end, c.start + (x - c.x0) / self.scale))

    def _nslices(self) -> int:
        return max(20, min(PLOT_W // 2, MAX_BARS // max(1, len(self._rank_count()))))

    def _error_index(self, err: str, index: Dict[str, int]) -> int:
        if err not in index:
            index[err] = len(self.data["errors"])
            self.data["errors"].append(err[:600])
        return index[err]

    def _aggregate_row(self, rank: int, idx: Sequence[int], xpos: Any, bar_h: int) -> str:
        """One rect per time slice of a rank: the busiest node's colour, shaded by how busy the rank was."""
        j = self.job
        nslices = self._nslices()
        width = PLOT_W / nslices
        busy: Dict[int, Dict[int, float]] = {}
        count: Dict[int, int] = {}
        for i in idx:
            if j.a_fail[i]:
                continue
            x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
            s0 = min(nslices - 1, int(x0 / width))
            s1 = min(nslices - 1, int(x1 / width))
            count[s0] = count.get(s0, 0) + 1
            ni = j.a_node[i]
            for s in range(s0, s1 + 1):
                lo, hi = max(x0, s * width), min(x1, (s + 1) * width)
                slot = busy.setdefault(s, {})
                slot[ni] = slot.get(ni, 0.0) + max(hi - lo, 0.02)
        if not busy:
            return ""
        peak = max(sum(v.values()) for v in busy.values())
        full = max(width, peak)  # a rank with several workers: its busiest slice counts as fully busy
        out = []
        agg = self.data["agg"]
        for s in sorted(busy):
            slot = busy[s]
            ni = max(slot, key=slot.__getitem__)
            level = min(1.0, sum(slot.values()) / full)
            k = len(agg)
            agg.append([rank, round(self._time_at(s * width), 3), count.get(s, 0), round(level, 2), ni])
            out.append(f"<rect class=\"bar agg c{ni % len(PALETTE)}\" data-n=\"{ni}\" data-a=\"{k}\" "
                       f"x=\"{_f(s * width)}\" y=\"0\" width=\"{_f(width + 0.3)}\" height=\"{bar_h}\" "
                       f"fill-opacity=\"{0.25 + 0.75 * level:.2f}\"/>")
        return "".join(out)

    def _aggregate_failures(self, rank: int, fails: Sequence[int], xpos: Any, bar_h: int, pad: int,
                            err_index: Dict[str, int]) -> str:
        """A red mark on the top part of each slice of the rank where attempts failed, with how many."""
        j = self.job
        nslices = self._nslices()
        width = PLOT_W / nslices
        per: Dict[int, List[int]] = {}
        for i in fails:
            s = min(nslices - 1, int(xpos(i, j.a_t0[i]) / width))
            per.setdefault(s, []).append(i)
        out = []
        aggf = self.data["aggf"]
        mark_h = max(3, int(bar_h * 0.45)) + min(2, pad)
        for s in sorted(per):
            first = per[s][0]
            err = self._error_index(j.errors.get(first, ""), err_index)
            k = len(aggf)
            aggf.append([rank, len(per[s]), j.a_node[first], j.a_part[first], j.a_att[first], err])
            out.append(f"<rect class=\"bar fail agg\" data-failed=\"{len(per[s])}\" data-n=\"{j.a_node[first]}\" "
                       f"data-f=\"{k}\" x=\"{_f(s * width)}\" y=\"{-min(2, pad)}\" width=\"{_f(max(2.0, width))}\" "
                       f"height=\"{mark_h}\"/>")
        return "".join(out)

    def _rank_count(self) -> Dict[int, int]:
        if not hasattr(self, "_ranks_cache"):
            counts: Dict[int, int] = {}
            for r in self.job.a_rank:
                counts[r] = counts.get(r, 0) + 1
            self._ranks_cache = counts
        return self._ranks_cache

    def _axis(self, height: int) -> Tuple[str, str]:
        """(grid lines and ticks, drawn under the bars; pauses cut out and run starts, drawn over them)."""
        if not self.clusters:
            return "", ""
        length = sum(c.end - c.start for c in self.clusters)
        step = nice_step(length, PLOT_W // 95)
        t_first = self.clusters[0].start
        out: List[str] = []
        over: List[str] = []
        last_x = -1e9
        for ci, c in enumerate(self.clusters):
            if ci:  # the cut-out pause before this cluster
                prev = self.clusters[ci - 1]
                gx = LABEL_W + prev.x0 + (prev.end - prev.start) * self.scale
                pause = fmt_dur(c.start - prev.end)
                over.append(f"<g class=\"gap\"><title>no run for {esc(pause)} (cut out)</title>"
                            f"<rect x=\"{_f(gx + 3)}\" y=\"{AXIS_H - 2}\" width=\"{BREAK_PX - 6}\" "
                            f"height=\"{height - 2 * AXIS_H + 4}\"/><text class=\"gapl\" x=\"{_f(gx + 3)}\" "
                            f"y=\"{AXIS_H - 8}\">run {min(c.runs) + 1}, {esc(pause)} later</text></g>")
            k = math.ceil((c.start - t_first) / step - 1e-9)
            while True:
                t = k * step
                if t_first + t > c.end + 1e-9:
                    break
                x = LABEL_W + c.x0 + (t_first + t - c.start) * self.scale
                if x - last_x >= 56:
                    out.append(f"<line class=\"grid\" x1=\"{_f(x)}\" x2=\"{_f(x)}\" y1=\"{AXIS_H}\" "
                               f"y2=\"{height - AXIS_H + 4}\"/><text class=\"tick\" x=\"{_f(x)}\" "
                               f"y=\"{height - AXIS_H + 17}\">{esc(fmt_tick(t, step))}</text>")
                    last_x = x
                k += 1
        # the start of each run after the first, when runs sit in one stretch
        j = self.job
        for r in j.runs[1:]:
            if r.time is None:
                continue
            c = next((c for c in self.clusters if r.index in c.runs), None)
            if c is None or r.time <= c.start + 1e-6:
                continue
            x = LABEL_W + c.x0 + (r.time - c.start) * self.scale
            over.append(f"<line class=\"runline\" x1=\"{_f(x)}\" x2=\"{_f(x)}\" y1=\"{AXIS_H - 6}\" "
                        f"y2=\"{height - AXIS_H}\"/><text class=\"runl\" x=\"{_f(x + 3)}\" y=\"{AXIS_H - 8}\">run "
                        f"{r.index + 1}</text>")
        out.append(f"<text class=\"axis-title\" x=\"{LABEL_W - 20}\" y=\"{height - AXIS_H + 17}\">elapsed</text>")
        return "".join(out), "".join(over)

    def _legend(self) -> str:
        j = self.job
        used = sorted(set(j.a_node)) if len(j.a_node) else list(range(len(j.nodes)))
        items = [f"<span class=\"key\" data-n=\"{ni}\"><i style=\"background:{self.color(ni)}\"></i>"
                 f"{esc(j.names[ni])}</span>" for ni in used[:40]]
        if len(used) > 40:
            items.append(f"<span class=\"dim\">and {len(used) - 40} more</span>")
        items.append("<span class=\"key failkey\"><i class=\"hatch\"></i>failed attempt</span>")
        return "".join(items)

    # durations ---------------------------------------------------------------------------
    def _durations(self) -> str:
        j = self.job
        if not j.durations:
            return "<p class=\"dim\">No task has finished yet.</p>"
        order = sorted(j.durations, key=lambda ni: -sum(j.durations[ni]))
        shown = sorted(order[:MAX_HISTOGRAMS])
        cards = [self._histogram(ni, sorted(j.durations[ni])) for ni in shown]
        more = (f"<p class=\"note\">{len(order) - len(shown)} more node(s) with less total time are left out.</p>"
                if len(order) > len(shown) else "")
        return (f"<p class=\"note\">Successful attempts per node; the dark line is the median, the dashed one the "
                f"95th percentile.</p><div class=\"cards\">{''.join(cards)}</div>{more}")

    def _histogram(self, ni: int, d: List[float]) -> str:
        n = len(d)
        q = lambda f: d[min(n - 1, int(f * (n - 1) + 0.5))]  # noqa: E731
        lo, hi = d[0], d[-1]
        use_log = lo > 0 and hi / lo >= 20
        w, h, left, right, top, base = 260, 96, 8, 252, 8, 70
        nb = min(24, max(6, int(2 * math.sqrt(n))))
        if hi - lo < 1e-9:
            edges = [lo - 0.5 * max(lo, 1e-3), hi + 0.5 * max(hi, 1e-3)]
            nb = 1
        elif use_log:
            a, b = math.log(lo), math.log(hi)
            edges = [math.exp(a + (b - a) * k / nb) for k in range(nb + 1)]
        else:
            edges = [lo + (hi - lo) * k / nb for k in range(nb + 1)]
        counts = [0] * nb
        prev = 0
        for k in range(nb):
            cut = n if k == nb - 1 else bisect.bisect_left(d, edges[k + 1])
            counts[k] = cut - prev
            prev = cut
        peak = max(counts) or 1

        def xof(v: float) -> float:
            if nb == 1:
                return (left + right) / 2
            if use_log:
                f = (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))
            else:
                f = (v - lo) / (hi - lo)
            return left + f * (right - left)

        bw = (right - left) / nb
        bars = []
        for k, c in enumerate(counts):
            if not c:
                continue
            bh = max(1.5, (base - top) * c / peak)
            x = left + k * bw if nb > 1 else left + (right - left) * 0.35
            width = bw - 1 if nb > 1 else (right - left) * 0.3
            bars.append(f"<rect x=\"{_f(x)}\" y=\"{_f(base - bh)}\" width=\"{_f(max(1, width))}\" height=\"{_f(bh)}\" "
                        f"fill=\"{self.color(ni)}\"><title>{c:,} attempt(s), {esc(fmt_dur(edges[k]))}–"
                        f"{esc(fmt_dur(edges[k + 1]))}</title></rect>")
        med, p95 = q(0.5), q(0.95)
        marks = (f"<line class=\"med\" x1=\"{_f(xof(med))}\" x2=\"{_f(xof(med))}\" y1=\"{top - 2}\" y2=\"{base}\"/>"
                 f"<line class=\"p95\" x1=\"{_f(xof(p95))}\" x2=\"{_f(xof(p95))}\" y1=\"{top - 2}\" y2=\"{base}\"/>")
        axis = (f"<line class=\"hbase\" x1=\"{left}\" x2=\"{right}\" y1=\"{base}\" y2=\"{base}\"/>"
                f"<text class=\"hl\" x=\"{left}\" y=\"{base + 14}\">{esc(fmt_dur(lo))}</text>"
                f"<text class=\"hl end\" x=\"{right}\" y=\"{base + 14}\">{esc(fmt_dur(hi))}</text>"
                + (f"<text class=\"hl mid\" x=\"{(left + right) / 2}\" y=\"{base + 14}\">log scale</text>"
                   if use_log else ""))
        stats = (f"n={n:,} · median {fmt_dur(med)} · p95 {fmt_dur(p95)} · max {fmt_dur(hi)} · "
                 f"total {fmt_dur(sum(d))}")
        name = self.job.names[ni]
        return (f"<div class=\"card\" data-n=\"{ni}\"><div class=\"card-title\"><i style=\"background:"
                f"{self.color(ni)}\"></i>{esc(name)}</div><div class=\"card-stats\">{esc(stats)}</div>"
                f"<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">"
                f"{''.join(bars)}{marks}{axis}</svg></div>")

    # tables ------------------------------------------------------------------------------
    def _slowest(self) -> str:
        j = self.job
        if not j.slowest:
            return "<p class=\"dim\">No task attempt is in the journal yet.</p>"
        rows = []
        for dur, i, extra in sorted(j.slowest, key=lambda it: (-it[0], it[1])):
            status = "<span class=\"badtext\">failed</span>" if extra["failed"] else "ok"
            start = fmt_dur(self._rel(j.a_t0[i])) if j.a_t0[i] > 0 and self.clusters else "?"
            rows.append(f"<tr><td><i class=\"sw\" style=\"background:{self.color(j.a_node[i])}\"></i>"
                        f"{esc(j.names[j.a_node[i]])}</td><td class=\"num\">{j.a_part[i]}</td>"
                        f"<td class=\"num\">{j.a_att[i]}</td><td class=\"num\">{j.a_rank[i]}</td>"
                        f"<td class=\"num\"><b>{esc(fmt_dur(dur))}</b></td><td class=\"num\">+{esc(start)}</td>"
                        f"<td>{status}</td><td>{self._logref(extra['log'])}</td></tr>")
        return ("<table class=\"data\"><thead><tr><th>node</th><th>partition</th><th>attempt</th><th>rank</th>"
                "<th>duration</th><th>started</th><th>outcome</th><th>log</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")

    def _failures(self) -> str:
        j = self.job
        if not j.failing and not j.untracked_failures:
            return "<p class=\"okmsg\">No task attempt failed.</p>"
        items = sorted(j.failing.values(), key=lambda f: (not f.last_failed, not f.current, f.node, f.partition))
        rows = []
        for f in items[:MAX_FAILURE_ROWS]:
            if f.last_failed:
                outcome = ("<span class=\"badtext\">failed</span>" if j.ended
                           else "<span class=\"badtext\">failed (job not ended)</span>")
            else:
                outcome = f"<span class=\"oktext\">ok on attempt&nbsp;{f.ok_attempt}</span>"
            if not f.current:
                outcome += " <span class=\"dim\">(earlier version of the node)</span>"
            attempts = ", ".join(str(a) for a in f.attempts[:12]) + (" …" if len(f.attempts) > 12 else "")
            err = f.error or "?"
            err_html = (f"<pre class=\"err\">{esc(err)}</pre>" if len(err) <= 400 else
                        f"<details><summary class=\"err\">{esc(err[:200])} …</summary><pre class=\"err\">{esc(err)}"
                        f"</pre></details>")
            rows.append(f"<tr class=\"{'bad' if f.last_failed else ''}\"><td class=\"mono\">{esc(f.node)}"
                        f"[{f.partition}]</td><td class=\"num\">{len(f.attempts)}<div class=\"dim\">attempt "
                        f"{esc(attempts)}</div></td><td>{outcome}</td><td>{err_html}<div class=\"dim\">"
                        f"{esc(f.where or f'rank {f.rank}')}</div></td><td>{self._logref(f.log)}</td></tr>")
        notes = []
        if len(items) > MAX_FAILURE_ROWS:
            notes.append(f"The first {MAX_FAILURE_ROWS} of {len(items):,} tasks with failed attempts are listed "
                         "(those that failed for good first).")
        if j.untracked_failures:
            notes.append(f"{j.untracked_failures:,} more failed attempts of other tasks are only counted.")
        summary = (f"<p>{j.failed_for_good:,} task(s) failed on their last attempt; {j.retried:,} failed "
                   f"attempt(s) were retried.</p>")
        return (summary + "<table class=\"data failures\"><thead><tr><th>task</th><th>failed attempts</th>"
                "<th>outcome</th><th>last error</th><th>log (last failed attempt)</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>" + "".join(f"<p class=\"note\">{esc(t)}</p>" for t in notes))


SVG_DEFS = ("<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
            "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fbd5d5\"/>"
            "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#d62728\" stroke-width=\"3\"/></pattern>"
            "<pattern id=\"gaphatch\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" "
            "patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#ffffff\"/><line x1=\"0\" y1=\"0\" "
            "x2=\"0\" y2=\"8\" stroke=\"#9aa2b1\" stroke-width=\"2\"/></pattern></defs>")

CSS = """
:root{--fg:#1f2430;--dim:#6b7385;--line:#e3e6ec;--bg:#f6f7f9;--ok:#2f8f46;--bad:#d62728;--warn:#c98a00;--run:#2c6fbb}
*{box-sizing:border-box}
body{margin:0;padding:18px 26px 30px;font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
 "Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff;max-width:1260px}
h1{font-size:21px;margin:0 0 4px;display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h2{font-size:15px;margin:22px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.mono,pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
.dim{color:var(--dim)}.note{color:var(--dim);margin:6px 0 0;font-size:12px}
.meta{margin:2px 0;color:#3b4252}.cmd{margin:2px 0 10px;color:var(--dim);word-break:break-all}
.pill{font-size:12px;font-weight:600;padding:2px 10px;border-radius:10px;color:#fff;background:#8a94a6}
.pill.ok{background:var(--ok)}.pill.bad{background:var(--bad)}.pill.warn{background:var(--warn)}
.pill.run{background:var(--run)}
.tiles{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:8px}
.tile{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:0}
.tile.bad{background:#fdecec;border-color:#f3b4b4}.tile.bad .tl-value{color:var(--bad)}
.tl-label{font-size:11px;color:var(--dim);text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.tl-value{font-size:17px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tl-sub{font-size:11px;color:var(--dim);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
.plan .box{fill:#fff;stroke:#c3c9d4;stroke-width:1.2}.plan .edge{fill:none;stroke:#8a94a6;stroke-width:1.4}
.pnode.ok .box{stroke:var(--ok)}.pnode.bad .box{stroke:var(--bad);stroke-width:2}.pnode.part .box{stroke:var(--warn)}
.pname{font-size:13px;font-weight:600;fill:var(--fg)}.pkind{font-size:11px;fill:var(--dim)}.pkind.end{text-anchor:end}
.pcount{font-size:11px;fill:#3b4252}.pcount.bad{fill:var(--bad);font-weight:600}.pcount.ok{fill:var(--ok)}
.pbar{fill:#e8ebf0}.pbar-done{fill:var(--ok)}.pbar-done.bad,.pbar-done.part{fill:var(--warn)}
.pnode{cursor:default}.pnode:hover .box{fill:#f3f6fb}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:0 0 8px}
.key{display:inline-flex;align-items:center;gap:5px;cursor:default;padding:1px 4px;border-radius:4px}
.key:hover{background:var(--bg)}
.key i,.card-title i,.sw{display:inline-block;width:12px;height:12px;border-radius:2px}
.sw{margin-right:6px;vertical-align:-1px}
.hatch{background:repeating-linear-gradient(45deg,#d62728 0 2px,#fbd5d5 2px 5px);outline:1px solid #a01010}
.tl .rowbg{fill:#fafbfc}.tl .rowbg.odd{fill:#f1f3f6}
.tl .rl{font-size:11px;fill:#3b4252;text-anchor:end}
.tl .grid{stroke:#dde1e7;stroke-width:1}.tl .tick{font-size:11px;fill:var(--dim);text-anchor:middle}
.tl .axis-title{font-size:11px;fill:var(--dim);text-anchor:end}
.tl .bar{stroke:rgba(0,0,0,.25);stroke-width:.5}.tl .bar.agg{stroke:none}
.tl .bar.fail.agg{fill:#d62728;stroke:none}
.tl .bar.fail{fill:url(#hatch);stroke:#b00000;stroke-width:1.5}
.tl .gap rect{fill:url(#gaphatch);stroke:#8a94a6;stroke-dasharray:2 2}
.tl .gapl{font-size:10px;fill:#3b4252;font-weight:600}
.tl .runline{stroke:#5a6272;stroke-dasharray:3 3}.tl .runl{font-size:10px;fill:#5a6272}
.tl.hl .bar{opacity:.12}.tl.hl .bar.on{opacity:1}
""" + "".join(f".c{k}{{fill:{c}}}" for k, c in enumerate(PALETTE)) + """
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(276px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 8px 2px}
.card-title{font-weight:600;display:flex;align-items:center;gap:6px;overflow:hidden;white-space:nowrap}
.card-stats{font-size:11px;color:var(--dim)}
.card .med{stroke:#1f2430;stroke-width:1.5}.card .p95{stroke:#1f2430;stroke-width:1;stroke-dasharray:3 2}
.card .hbase{stroke:#9aa2b1}.card .hl{font-size:10px;fill:var(--dim)}.card .hl.end{text-anchor:end}
.card .hl.mid{text-anchor:middle}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:11px;color:var(--dim);font-weight:600;text-transform:uppercase;letter-spacing:.03em;background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td:first-child{border-left:3px solid var(--bad)}
pre.err{margin:0;white-space:pre-wrap;word-break:break-word;color:#8b1a1a;max-height:12em;overflow:auto}
summary.err{cursor:pointer;color:#8b1a1a}
.badtext{color:var(--bad);font-weight:600}.oktext{color:var(--ok)}.okmsg{color:var(--ok)}
details.runs{margin-top:10px}details.runs summary{cursor:pointer;color:#3b4252}
details.runs table{margin-top:6px}
a{color:#2c6fbb;text-decoration:none}a:hover{text-decoration:underline}
footer{margin-top:26px;color:var(--dim);font-size:11px}
#tip{position:fixed;pointer-events:none;display:none;max-width:460px;background:#1f2430;color:#fff;
 padding:6px 9px;border-radius:5px;font-size:12px;line-height:1.4;box-shadow:0 2px 8px rgba(0,0,0,.25);z-index:9;
 white-space:pre-wrap;word-break:break-word}
#tip b{color:#ffd479}
@media (max-width:1100px){.tiles{grid-template-columns:repeat(4,minmax(0,1fr))}}
"""

JS = r"""
(function(){
var D=JSON.parse(document.getElementById('report-data').textContent);
var tip=document.getElementById('tip');
function dur(s){if(s<1e-3)return Math.round(s*1e6)+'\u00b5s';if(s<0.01)return (s*1e3).toFixed(1)+'ms';
 if(s<1)return Math.round(s*1e3)+'ms';if(s<60)return s.toFixed(s<10?2:1)+'s';
 if(s<3600)return Math.floor(s/60)+'m '+String(Math.round(s%60)).padStart(2,'0')+'s';
 return Math.floor(s/3600)+'h '+String(Math.floor(s%3600/60)).padStart(2,'0')+'m';}
function text(el,parts){el.textContent='';parts.forEach(function(p){var n;if(p[1]){n=document.createElement('b');
 n.textContent=p[0];}else{n=document.createTextNode(p[0]);}el.appendChild(n);});}
function describe(el){
 if(el.hasAttribute('data-i')){var b=D.bars[+el.getAttribute('data-i')];if(!b)return null;
  var p=[[D.nodes[b[0]]+'['+b[1]+']',1],[' attempt '+b[2]+(b[6]>=0?' \u2014 FAILED':'')+'\n'],
   ['rank '+b[3]+' \u00b7 '+dur(b[5])+' \u00b7 started at +'+dur(b[4])]];
  if(b[6]>=0)p.push(['\n'+D.errors[b[6]]]);return p;}
 if(el.hasAttribute('data-a')){var a=D.agg[+el.getAttribute('data-a')];if(!a)return null;
  return [['rank '+a[0],1],[' near +'+dur(a[1])+'\n'+a[2]+' attempt(s) started in this slice\nbusiest node: '+
   D.nodes[a[4]]+'\nbusy: '+Math.round(a[3]*100)+'%']];}
 if(el.hasAttribute('data-f')){var f=D.aggf[+el.getAttribute('data-f')];if(!f)return null;
  return [['rank '+f[0]+': '+f[1]+' failed attempt(s)',1],['\nfirst: '+D.nodes[f[2]]+'['+f[3]+'] attempt '+f[4]+
   '\n'+D.errors[f[5]]]];}
 return null;}
var svg=document.getElementById('timeline-svg');
if(svg){
 Array.prototype.forEach.call(svg.querySelectorAll('rect.bar > title'),function(t){t.parentNode.removeChild(t);});
 svg.addEventListener('mousemove',function(ev){var t=ev.target;var p=t&&t.classList&&t.classList.contains('bar')?
  describe(t):null;if(!p){tip.style.display='none';return;}text(tip,p);tip.style.display='block';
  var x=ev.clientX+14,y=ev.clientY+14,w=tip.offsetWidth,h=tip.offsetHeight;
  if(x+w>window.innerWidth-4)x=ev.clientX-w-14;if(y+h>window.innerHeight-4)y=ev.clientY-h-14;
  tip.style.left=Math.max(4,x)+'px';tip.style.top=Math.max(4,y)+'px';});
 svg.addEventListener('mouseleave',function(){tip.style.display='none';});
 function highlight(n){svg.classList.toggle('hl',n!==null);Array.prototype.forEach.call(svg.querySelectorAll('.bar'),
  function(r){r.classList.toggle('on',n!==null&&r.getAttribute('data-n')===n);});}
 Array.prototype.forEach.call(document.querySelectorAll('.key[data-n],.pnode[data-node],.card[data-n]'),function(k){
  var n=k.getAttribute('data-n')||k.getAttribute('data-node');
  k.addEventListener('mouseenter',function(){highlight(n);});
  k.addEventListener('mouseleave',function(){highlight(null);});});
}
document.documentElement.setAttribute('data-ready','1');
})();
"""
