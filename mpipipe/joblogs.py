"""Finding and reading a job's logs, for `mpipipe logs`.

Every task attempt's output lives in its worker's log, at a byte range the
journal records; a failed attempt also has a file of its own under
logs/tasks/. Ranks have their own logs. This module lists them, cuts out one
task's part, and follows them as they grow.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from mpipipe.execution.journal import JOURNAL_NAME, is_attempt, kind, read_records

_TASK_RE = re.compile(r"^(?P<node>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:\[(?P<p1>\d+)\]|:(?P<p2>\d+))?$")


def parse_task(text: str) -> Tuple[str, Optional[int]]:
    """`node[3]`, `node:3` or `node` (every partition)."""
    m = _TASK_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot read task {text!r}; write NODE[PARTITION], NODE:PARTITION or NODE")
    p = m.group("p1") or m.group("p2")
    return m.group("node"), int(p) if p is not None else None


def log_files(job_dir: str) -> List[Tuple[str, int]]:
    """Every log file of the job with its size: rank logs first, then workers, then failed attempts."""
    root = os.path.join(job_dir, "logs")
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            if os.path.islink(path):
                continue  # mpipipe writes no links: one here would show a file from elsewhere
            try:
                found.append((path, os.path.getsize(path)))
            except OSError:
                continue  # gone meanwhile

    def order(item: Tuple[str, int]) -> Tuple[int, str]:
        rel = os.path.relpath(item[0], root)
        return (0 if "/" not in rel else 2 if rel.startswith("tasks") else 1, rel)

    return sorted(found, key=order)


def _read_range(path: str, start: int, end: Optional[int]) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, start))
        data = f.read() if end is None else f.read(max(0, end - start))
    return data.decode(errors="replace")


def task_logs(job_dir: str, node: str, partition: Optional[int]) -> List[Tuple[str, str]]:
    """(heading, text) for each journaled attempt of the task(s), in order. Attempts are numbered from 0, as
    everywhere (task.attempt, the journal, pP.aA.log, `mpipipe status`, the report). Only files inside the
    job directory are read, whatever a record names."""
    out = []
    inside = os.path.realpath(job_dir) + os.sep
    for rec in read_records(os.path.join(job_dir, JOURNAL_NAME)):
        if not is_attempt(rec) or rec.get("n") != node or (partition is not None and rec.get("p") != partition):
            continue
        ref = rec.get("log") or []
        heading = (f"--- {node}[{rec.get('p')}] attempt {rec.get('a')}: {kind(rec)} on rank {rec.get('r')}"
                   + (f": {rec.get('e')}" if rec.get("e") else "") + f" ({ref[0] if ref else 'no log'}) ---")
        text = ""
        if ref:
            path, start, end = ref[0], int(ref[1] or 0), ref[2]
            if not os.path.realpath(path).startswith(inside):
                text = f"({path} is not a file of the job directory {job_dir}; not shown)\n"
            else:
                try:
                    text = _read_range(path, start, None if end is None else int(end))
                except OSError as e:
                    text = f"(cannot read {path}: {e.strerror})\n"
        out.append((heading, text))
    return out


def job_is_running(job_dir: str) -> bool:
    """True while some process holds the job directory's lock (looked up without taking it)."""
    path = os.path.join(job_dir, "lock")
    if not os.path.exists(path):
        return False
    try:
        st = os.stat(path)
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
        with open("/proc/locks") as f:
            return any("FLOCK" in line and key in line for line in f)
    except OSError:
        pass  # no /proc/locks: try the lock itself (briefly shared)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def follow(job_dir: str, emit: Callable[[str], None], poll: float = 0.5, stop_when_done: bool = True,
           max_seconds: Optional[float] = None) -> None:
    """Print what every log of the job gains, line by line with the file's name, until the job ends."""
    root = os.path.join(job_dir, "logs")
    offsets: Dict[str, int] = {path: size for path, size in log_files(job_dir)}
    started = time.monotonic()
    idle_after_end = 0
    while True:
        grew = False
        for path, size in log_files(job_dir):
            pos = offsets.get(path, 0)
            if size > pos:
                text = _read_range(path, pos, size)
                cut = text.rfind("\n") + 1  # only whole lines; the rest comes next time
                if cut:
                    label = os.path.relpath(path, root)
                    for line in text[:cut].splitlines():
                        emit(f"{label}: {line}")
                    offsets[path] = pos + len(text[:cut].encode())
                    grew = True
        if stop_when_done and not job_is_running(job_dir):
            idle_after_end = 0 if grew else idle_after_end + 1
            if idle_after_end >= 2:
                return
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            return
        time.sleep(poll)


def iter_tail(path: str, lines: int) -> Iterator[str]:
    """The last `lines` lines of a file."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        data = f.read().decode(errors="replace").splitlines()
    yield from data[-lines:]
