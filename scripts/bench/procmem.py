"""Peak resident memory of the largest process a benchmarked command started (itself or any descendant).

The command runs under a small watcher, this file run as a script
(`python -S procmem.py REPORT -- CMD...`), which starts it, reaps it with
wait4 and writes to REPORT the command's own time and its rusage. Two
readings, because neither sees everything:

- that rusage: Linux keeps, for every process, the largest peak of the
  descendants it reaped, and passes it up when it is reaped itself. Exact,
  but blind to a process that outlived its parent (reparented to init). The
  command must be started by a small process: a child's peak starts at its
  parent's (exec() keeps the peak of the address space it replaces, and with
  vfork that is the parent's), so a child of the benchmark runner, which has
  DuckDB and pyarrow loaded, would report at least the runner's peak;
- a sampler in the runner that reads VmHWM (the kernel's peak per address
  space, reset by exec) of every process of the command's session and of its
  descendants in /proc a few times a second: it sees orphans too and says
  which process was the largest, but misses what grew in a process's last
  sampling interval or lived shorter than one.

The figure reported is the larger of the two. Linux only: elsewhere both are
None and the benchmarks print "n/a".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

SAMPLE_EVERY = 0.2  # seconds; a scan of /proc costs a few milliseconds of one core


def _parent_and_session(pid: int) -> Optional[Tuple[int, int]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so split after its last ")"
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None


def vm_hwm_mb(pid: int) -> Optional[float]:
    """A live process's peak resident memory so far, in MiB (None when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe(pid: int) -> str:
    """A short name for a process: its command line without the interpreter's path and the folders of files."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    words = [os.path.basename(argv[0])]
    rest = argv[1:]
    while rest and len(words) < 4:
        a = rest.pop(0)
        if a in ("-c", "-m") and rest:  # the code or module names the process; its arguments do not
            words += [a, rest[0][:60]]
            break
        if a.startswith("-") and len(words) >= 2:
            break
        words.append(os.path.basename(a) if "/" in a and not a.startswith("-") else a)
    return " ".join(words)


class SessionSampler:
    """Polls the peak memory of every process of a command: its session (a command started with
    start_new_session=True leads a session whose id is its pid) and its descendants, also those that made a
    session of their own (mpiexec's proxies start every rank in a new one). A process once seen stays counted
    after its parent exits."""

    def __init__(self, session: int, every: float = SAMPLE_EVERY, skip: Optional[int] = None) -> None:
        self.session = session
        self.skip = skip  # a process not to count (the watcher)
        self.every = every
        self.peaks: Dict[int, float] = {}
        self.members = {session}
        self.names: Dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> "SessionSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        parents: Dict[int, int] = {}
        for pid in pids:
            ps = _parent_and_session(pid)
            if ps is None:
                continue
            parents[pid] = ps[0]
            if ps[1] == self.session:
                self.members.add(pid)
        grew = True
        while grew:  # descendants of members, whatever session they are in
            new = {pid for pid, parent in parents.items() if parent in self.members and pid not in self.members}
            self.members |= new
            grew = bool(new)
        for pid in parents:
            if pid not in self.members or pid == self.skip:
                continue
            peak = vm_hwm_mb(pid)
            if peak is None:
                continue
            if peak > self.peaks.get(pid, 0.0):
                self.peaks[pid] = peak
                # named at its peak: seen between fork and exec, a process still shows its parent's command
                self.names[pid] = describe(pid)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def largest(self) -> Tuple[Optional[float], Optional[str]]:
        """(peak MiB, name) of the largest process seen, or (None, None)."""
        if not self.peaks:
            return None, None
        pid = max(self.peaks, key=lambda p: self.peaks[p])
        return self.peaks[pid], self.names.get(pid, "?")


def rusage_peak_mb(maxrss: Optional[int]) -> Optional[float]:
    """ru_maxrss in MiB (KiB on Linux, bytes on macOS)."""
    if not maxrss:
        return None
    return maxrss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def peak_fields(maxrss: Optional[int], sampler: Optional[SessionSampler]) -> Dict[str, Any]:
    """What a run record gets: peak_rss_mb (the larger reading), the largest process's name where the sampler
    saw it, and both readings."""
    tree = rusage_peak_mb(maxrss)
    polled, name = sampler.largest() if sampler is not None else (None, None)
    out: Dict[str, Any] = {}
    values = [v for v in (tree, polled) if v is not None]
    if values:
        out["peak_rss_mb"] = round(max(values), 1)
    if tree is not None:
        out["peak_rss_reaped_mb"] = round(tree, 1)
    if polled is not None:
        out["peak_rss_polled_mb"] = round(polled, 1)
        # the sampler's largest is the largest only when the rusage saw nothing larger (within 10%: what it
        # grew by in its last sampling interval)
        if tree is None or polled >= 0.9 * tree:
            out["largest_process"] = name
    return out


class Watch:
    """One command run under the watcher: `argv` to start instead of the command, `start(pid)` once it is
    started (the sampler), `finish()` once it ended: the command's start and wall time and the memory fields."""

    def __init__(self, cmd: Sequence[str]) -> None:
        fd, self.report = tempfile.mkstemp(prefix="procmem-", suffix=".json")
        os.close(fd)
        self.argv: List[str] = [sys.executable, "-S", os.path.abspath(__file__), self.report, "--", *cmd]
        self.sampler: Optional[SessionSampler] = None

    def start(self, pid: int) -> None:
        self.sampler = SessionSampler(pid, skip=pid).start()

    def finish(self) -> Dict[str, Any]:
        if self.sampler is not None:
            self.sampler.stop()
        try:
            with open(self.report) as f:
                seen = json.load(f)
        except (OSError, ValueError):
            seen = {}  # the watcher was killed (a timeout): the sampler's figure only
        finally:
            try:
                os.remove(self.report)
            except OSError:
                pass
        out = peak_fields(seen.get("maxrss"), self.sampler)
        if "wall" in seen:
            out["start"], out["wall"] = seen["start"], seen["wall"]
        return out


def watch_main(argv: List[str]) -> int:
    """The watcher: start the command, reap it, write {start, wall, maxrss} to the report file, exit as it
    did. Signals reach the command directly (same process group)."""
    report, sep, cmd = argv[0], argv[1], argv[2:]
    assert sep == "--" and cmd, "usage: procmem.py REPORT -- CMD..."
    start, t0 = time.time(), time.perf_counter()
    try:
        proc = subprocess.Popen(cmd)
    except OSError as e:
        print(f"cannot start {cmd[0]}: {e}", file=sys.stderr)
        return 127
    while True:
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as f:
        json.dump({"start": start, "wall": wall, "maxrss": ru.ru_maxrss}, f)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(watch_main(sys.argv[1:]))
