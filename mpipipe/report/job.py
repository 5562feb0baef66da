"""Reading a job for its report: job.json and the journal, within a budget of memory and time."""

from __future__ import annotations

import heapq
import json
import math
import os
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from mpipipe.errors import JournalError
from mpipipe.execution.journal import ATTEMPT_KINDS, END, JOURNAL_NAME, OK, RUN, kind, read_records, split_key
from mpipipe.execution.osutil import process_alive

MAX_BARS = 20_000             # task attempts drawn one by one; beyond, time slices per rank
MAX_FAILURE_ROWS = 200        # rows of the failures table
MAX_TRACKED_FAILURES = 100_000  # failing tasks whose details are kept (the rest are only counted)
MAX_HISTOGRAMS = 60           # nodes with a duration histogram (the busiest ones)
SLOWEST = 15                  # rows of the slowest-attempts table
MAX_LANES = 8                 # concurrent attempts drawn side by side in one rank's row
DISK_ENTRIES, DISK_SECONDS = 200_000, 2.0  # budget for adding up the outputs' sizes

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


class Job:
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
    def load(cls, job_dir: str) -> "Job":
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
            k = kind(rec)
            if k == RUN:
                self.runs.append(_Run(len(self.runs), num(rec.get("time")), rec.get("pid"), rec.get("executors"),
                                      rec.get("platform"), rec.get("total")))
            elif k == END:
                if self.runs:
                    self.runs[-1].end = num(rec.get("time"))
                    self.runs[-1].status = str(rec.get("status"))
            elif k in ATTEMPT_KINDS and "n" in rec:
                self._attempt(rec, k == OK)

    def _node_index(self, name: str) -> int:
        if name not in self.name_index:  # a node of an earlier plan, no longer in job.json
            self.name_index[name] = len(self.names)
            self.names.append(name)
        return self.name_index[name]

    def _attempt(self, rec: Dict[str, Any], ok: bool) -> None:
        if not self.runs:
            self.runs.append(_Run(0, None, None, None, None, None))
        run = self.runs[-1]
        name = str(rec.get("n"))
        ni = self._node_index(name)
        p = _int(rec.get("p"))
        a = _int(rec.get("a"))
        rank = _int(rec.get("r"))
        t0, t1 = num(rec.get("t0")) or 0.0, num(rec.get("t1")) or 0.0
        if t1 < t0:
            t1 = t0
        failed = not ok
        key = str(rec.get("k", f"{name}:{p}"))
        fp = split_key(key)[0]
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
    return process_alive(int(words[1]))


def num(v: Any) -> Optional[float]:
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


def disk_usage(path: str) -> Tuple[int, int, bool]:
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
