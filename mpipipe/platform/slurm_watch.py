"""The submitting side of a SLURM job: wait for it, show its progress, cancel it on Ctrl-C.

SLURM is asked with ONE squeue call per poll interval. Progress comes from the
job directory, not from SLURM: the journal is read incrementally (only what
was appended since the last look), and "done" counts the distinct tasks of the
job's nodes (their fingerprints, from job.json) that succeeded, out of the
total of the latest "run" record, so tasks reused after a requeue count as
done. When the job ends, its exit code is the one the batch script wrote
(`scontrol show job` otherwise); its output is shown (rank 0's progress lines
left out), or, if it failed, the tail of it and the path of the output file.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import IO, Any, Dict, List, Optional, Set

from mpipipe import console
from mpipipe.errors import PlatformError
from mpipipe.execution.journal import END, FAILED, JOURNAL_NAME, OK, RUN, JournalTail, kind, split_key
from mpipipe.execution.progress import Progress, read_state
from mpipipe.fmt import fmt_count, fmt_dur, fmt_rate
from mpipipe.platform import slurm_commands as sc
from mpipipe.platform.slurm_batch import PREFIX as BATCH_PREFIX
from mpipipe.platform.slurm_jobfiles import read_exit

PROGRESS_LINE = re.compile(r"^\[mpipipe\] [\d,]+/[\d,]+ tasks done")
TAIL_LINES = 30


class JournalProgress:
    """Tasks done out of the total, read from a job directory's journal as it grows."""

    def __init__(self, job_dir: str) -> None:
        self.job_dir = job_dir
        self._tail = JournalTail(os.path.join(job_dir, JOURNAL_NAME))
        self._fingerprints: Optional[Set[str]] = None
        self._job_mtime = 0.0
        self._start()

    def _start(self) -> None:
        self._ok: Dict[str, Set[str]] = {}  # fingerprint -> partitions done
        self.total = 0
        self.runs = 0
        self.failed = 0  # failed attempts since the latest run record
        self.ended: Optional[str] = None  # status of the latest run's end record

    def _read_fingerprints(self) -> None:
        path = os.path.join(self.job_dir, "job.json")
        try:
            mtime = os.stat(path).st_mtime
            if mtime == self._job_mtime:
                return
            with open(path) as f:
                job = json.load(f)
            self._fingerprints = {str(n["fingerprint"]) for n in job.get("nodes", [])}
            self._job_mtime = mtime
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def update(self) -> None:
        again, records = self._tail.read()
        if again:
            self._start()  # --fresh moved the journal aside: count the new one
        for rec in records:
            self._take(rec)
        self._read_fingerprints()

    def _take(self, rec: Dict[str, Any]) -> None:
        k = kind(rec)
        if k == RUN:
            self.runs += 1
            self.total = int(rec.get("total") or 0)
            self.failed = 0
            self.ended = None
        elif k == END:
            self.ended = rec.get("status")
        elif k == OK and isinstance(rec.get("k"), str):
            fingerprint, partition = split_key(rec["k"])
            self._ok.setdefault(fingerprint, set()).add(partition)
        elif k == FAILED:
            self.failed += 1

    @property
    def done(self) -> int:
        fps = self._fingerprints
        n = sum(len(parts) for fp, parts in self._ok.items() if fps is None or fp in fps)
        return min(n, self.total) if self.total else n


def filtered_output(path: str, keep_batch_lines: bool) -> List[str]:
    """The job's output without rank 0's periodic progress lines (and, unless asked, the batch script's)."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [ln for ln in lines if not PROGRESS_LINE.match(ln) and (keep_batch_lines or not ln.startswith(BATCH_PREFIX))]


class JobWatcher:
    """Waits for one submitted job; returns its exit code (130 after Ctrl-C, which cancels it)."""

    def __init__(self, job_id: str, job_dir: str, output: str, poll_interval: float, progress_interval: float,
                 stream: Optional[IO[str]] = None) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self.output = output
        self.poll_interval = poll_interval
        self.progress_interval = progress_interval
        self.stream = stream  # None: mpipipe's messages go through logging (mpipipe.console)
        self.progress = JournalProgress(job_dir)
        self.bars = Progress(0, progress_interval or 1.0, stream)  # per-node bars when on a terminal
        self.state = "PENDING"
        self._shown_state = ""
        self._ran = False  # seen RUNNING: a later PENDING means it was requeued
        self._interrupts: List[int] = []

    def say(self, text: str) -> None:
        self._line(f"[mpipipe] {text}")

    def error(self, text: str) -> None:
        """The one line that says why the wait failed (`mpipipe: error: ...`)."""
        if self.stream is not None:
            print(f"mpipipe: error: {text}", file=self.stream, flush=True)
        else:
            console.error_line(text)

    def _poll(self) -> Optional[sc.QueueEntry]:
        entries = sc.queue_states([self.job_id])
        return entries.get(self.job_id)

    def _show_state(self, entry: Optional[sc.QueueEntry]) -> None:
        if entry is None:
            return
        reason = f" ({entry.reason})" if entry.reason not in ("None", "(null)", "") else ""
        where = f" on {entry.nodes}" if entry.state == "RUNNING" and entry.nodes else ""
        text = f"{entry.state}{where}{reason}"
        if text != self._shown_state:
            again = " again (requeued: it resumes from its journal)" if self._ran \
                and entry.state in ("PENDING", "REQUEUED") else ""
            self.say(f"SLURM job {self.job_id}: {text}{again}")
            self._shown_state = text
        if entry.state == "RUNNING":
            self._ran = True
        elif entry.state in ("PENDING", "REQUEUED"):
            self._ran = False

    def _show_progress(self, now: float, last: Dict[str, Any]) -> None:
        """A line every progress interval while something changes, and once a minute while nothing does."""
        p = self.progress
        if self.progress_interval <= 0 or now - last["t"] < self.progress_interval or not p.total:
            return
        key = (p.done, p.failed, p.runs, self.state)
        if key == last["key"] and now - last["t"] < max(60.0, self.progress_interval):
            return
        rate = (p.done - last["done"]) / max(now - last["t"], 1e-9)
        left = p.total - p.done
        eta = f", ETA {fmt_dur(left / rate)}" if rate > 0 and left > 0 else ""
        run = f", run {p.runs}" if p.runs > 1 else ""
        head = (f"{fmt_count(p.done)}/{fmt_count(p.total)} tasks done, {p.failed} failed | SLURM job {self.job_id} "
                f"{self.state}{run} | {fmt_rate(rate, 'tasks')}{eta}")
        nodes = read_state(self.job_dir) if self.bars.tty else []
        if nodes:
            self.bars.draw_nodes(f"[mpipipe] {head}", nodes, max(now - last["t"], 1e-9))
        else:
            self.say(head)
        last.update(t=now, done=p.done, key=key)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._interrupts.append(signum)

    def wait(self) -> int:
        # a closed terminal (SIGHUP) stops like SIGTERM; --detach leaves the job running without a terminal
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            return self._wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _wait(self) -> int:
        next_poll = 0.0
        last: Dict[str, Any] = {"t": time.monotonic(), "done": 0, "key": None}
        failures = 0
        entry: Optional[sc.QueueEntry] = None
        while True:
            if self._interrupts:
                return self._cancel()
            now = time.monotonic()
            if now >= next_poll:
                try:
                    entry = self._poll()
                    failures = 0
                except PlatformError as e:
                    failures += 1
                    if failures in (1, 10) or failures % 60 == 0:
                        self.say(f"cannot ask SLURM about job {self.job_id} ({e}); still trying")
                    entry = sc.QueueEntry(self.job_id, self.job_id, None, self.state, "", "")
                next_poll = now + self.poll_interval
                if entry is None or not entry.active:
                    break
                self.state = entry.state
                self._show_state(entry)
            self.progress.update()
            self._show_progress(now, last)
            time.sleep(min(0.2, max(0.0, next_poll - time.monotonic())) or 0.05)
        self.progress.update()
        return self._finish(entry)

    def _cancel(self) -> int:
        self.say(f"interrupted: cancelling SLURM job {self.job_id} (scancel {self.job_id}); the journal keeps what "
                 "finished, run the same command again to resume")
        try:
            sc.scancel([self.job_id])
        except PlatformError as e:
            self.error(f"could not cancel SLURM job {self.job_id}: {e}")
            return 130
        # wait (a little) for its ranks to stop and flush the journal, so the same command can resume at once
        count = len(self._interrupts)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and len(self._interrupts) == count:
            try:
                entry = self._poll()
            except PlatformError:
                break
            if entry is None or not entry.active:
                break
            time.sleep(0.5)
        self.say(f"SLURM job {self.job_id} cancelled")
        return 130

    def _finish(self, entry: Optional[sc.QueueEntry]) -> int:
        state = entry.state if entry is not None else "ENDED"
        ended = read_exit(self.job_dir, self.job_id)
        code: Optional[int] = None
        if ended is not None:
            try:
                code = int(ended["code"])
            except (KeyError, TypeError, ValueError):
                code = None
        if code is None:
            info = sc.show_job(self.job_id)
            code = sc.exit_code_of(info)
            state = info.get("JobState", state)
            if code is None:
                code = 1
            elif code == 0 and state not in ("COMPLETED", "ENDED"):
                code = 1  # the batch script never got to write its code: it was killed
        if code == 0:
            for line in filtered_output(self.output, keep_batch_lines=False):
                print(line, flush=True)
            self.say(f"SLURM job {self.job_id} {state}; output: {self.output}")
            return 0
        tail = filtered_output(self.output, keep_batch_lines=True)[-TAIL_LINES:]
        if tail:
            for line in [f"--- last lines of {self.output} ---", *tail, "---"]:
                self._line(line)
        why = {"CANCELLED": "was cancelled", "TIMEOUT": "reached its time limit", "PREEMPTED": "was preempted",
               "NODE_FAIL": "lost a node", "OUT_OF_MEMORY": "ran out of memory"}.get(state.split()[0], f"ended {state}")
        resume = " (the journal keeps what finished: run the same command again to resume)" if code == 130 else ""
        self.error(f"SLURM job {self.job_id} {why} with exit code {code}{resume}; its output: {self.output}")
        return code

    def _line(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)
        else:
            console.say(text)
