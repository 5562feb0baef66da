"""How a worker runs a TaskRange: one context built for the range, no log work per task unless it writes.

A task run on its own starts with a marker line in the worker's log ("--- node[p]
attempt a ---") and reads the log's offset before and after, so that its output
has a span of its own. For a range of tiny tasks that is most of their cost, so
here a task's marker is written only when it writes through Python's streams
(print, sys.stdout, sys.stderr, logging: the worker's streams are WatchedText)
or fails; only then are the streams flushed and the offset read. A task that
writes nothing gets an empty span where the log stood. Output that goes around
Python's streams (os.write, a C library, a child process) lands in the span of
the task before the next offset is read (at the next writing task, or when
results are reported).

Which task runs is kept in the TaskSlot (execution/taskslot.py), not in the
log, so a crash in the middle of a range is still pinned on its task.
Successes go back as OkRun columns, anything else as a Result.
"""
from __future__ import annotations

import io
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from mpipipe.execution.attempt import describe_failure, drop_spilled, encode_value, maybe_strike, spill
from mpipipe.execution.shuffle_store import local_store
from mpipipe.execution.task import FAILED, OK, OkRun, RangeTaskContext, Result, TaskRange


def marker_line(node_name: str, partition: int, attempt: int) -> str:
    """The line that heads a task's output in its worker's log."""
    return f"--- {node_name}[{partition}] attempt {attempt} ---"


def log_offset() -> int:
    """Where the worker's log ends now (its stdout and stderr are that file)."""
    try:
        return os.lseek(1, 0, os.SEEK_END)
    except OSError:
        return 0


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


class LogWatch:
    """The task of a range whose marker is due if it writes (`armed`), and where its output began (`start`)."""

    __slots__ = ("armed", "name", "partition", "attempt", "start", "slot")

    def __init__(self) -> None:
        self.armed = False
        self.name = ""
        self.partition = 0
        self.attempt = 0
        self.start = -1
        self.slot: Any = None  # the worker's TaskSlot

    def speak(self) -> None:
        """The armed task writes for the first time: what came before is flushed, its marker goes out first."""
        self.armed = False
        flush_streams()
        self.start = log_offset()
        os.write(2, (marker_line(self.name, self.partition, self.attempt) + "\n").encode())
        if self.slot is not None:
            self.slot.output_at(self.start)


WATCH = LogWatch()


class WatchedText(io.TextIOWrapper):
    """A worker's sys.stdout or sys.stderr: the first write of a task of a range writes its marker first."""

    def write(self, s: str) -> int:
        if WATCH.armed:
            WATCH.speak()
        return super().write(s)


def watch_streams() -> None:
    """Replace sys.stdout and sys.stderr by watched streams on the same descriptors, with the same settings
    (in a worker process, before anything else takes a reference to them)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            old.flush()
            new = WatchedText(open(fd, "wb", closefd=False), encoding=old.encoding, errors=old.errors,
                              line_buffering=old.line_buffering, write_through=old.write_through)
        except (OSError, ValueError, AttributeError):
            continue
        setattr(sys, name, new)


def run_range(rng: TaskRange, node: Any, setup: Dict[str, Any], log_path: str, faults: Any, slot: Any,
              done: List[Any], flush: Callable[[List[Any]], None], report_seconds: float) -> None:
    """Run every task of `rng` (partitions of `node`) in order; consecutive successes are reported as one OkRun,
    anything else (a failure, a value written to a file) as a Result. `flush(done)` is called whenever
    `report_seconds` have passed."""
    watch = WATCH
    watch.slot = slot
    watch.name = node.name
    watch.attempt = attempt = rng.attempt
    proto = RangeTaskContext(rng, node.name, node.npartitions, setup["rank"], setup["size"], setup["host"],
                             setup["job_dir"], getattr(node, "args", None))
    if setup.get("shuffle_store"):
        proto.keep_local(local_store(setup), getattr(node, "shuffle_transport", "files") == "mpi")
    at, body, clock = proto.at, node.run_task, time.time
    started = slot.task_started if slot is not None else None
    flush_streams()  # what ran before this range lands before its spans
    pos = log_offset()
    run: Optional[OkRun] = None
    sent = clock()
    for i in range(rng.count):
        p = rng.first + i
        ctx = at(p)
        if started is not None:
            started()
        watch.partition = p
        watch.armed = True
        spilled: Optional[str] = None
        failed: Optional[Dict[str, Any]] = None
        output: Optional[str] = None
        t0 = clock()
        try:
            value = body(ctx)
            text = "null"
            if value is not None:
                text, value = encode_value(value)
            if faults is not None:
                maybe_strike(faults, f"{rng.fingerprint}:{p}", attempt)
            spilled = spill(text, setup["job_dir"], node.name, p, attempt, setup["rank"])
            if spilled is not None:
                value = None
            output = ctx.commit()
        except BaseException as exc:  # noqa: BLE001  a task body may raise anything, even SystemExit
            ctx.abort()
            drop_spilled(setup["job_dir"], spilled)
            if watch.armed:
                watch.speak()
            tb, failed = describe_failure(exc)
            sys.stderr.write(tb)
        t1 = clock()
        if watch.armed:  # it wrote nothing through the streams: an empty span where the log stood
            watch.armed = False
            start = end = pos
        else:
            flush_streams()
            start = watch.start
            end = pos = log_offset()
        if failed is None and spilled is None:
            if run is None:
                run = OkRun(rng.tid + i, [], [], [], [], log_path, [start])
                done.append(run)
            else:
                run.log_offsets[-1] = start  # the span before ends where this task's output begins
            run.t0.append(t0)
            run.t1.append(t1)
            run.outputs.append(output)
            run.values.append(value)
            run.log_offsets.append(end)
        else:
            if run is not None:
                run.log_offsets[-1] = start
                run = None
            if failed is not None:
                info = dict(failed, node_name=node.name, partition=p, attempt=attempt)
            else:
                info = {"output": output, "value": None, "value_file": spilled}
            info.update(t0=t0, t1=t1, log=(log_path, start, end))
            done.append(Result(rng.tid + i, FAILED if failed is not None else OK, info))
        if t1 - sent >= report_seconds or t1 < sent:
            pos = _close_run(run, pos)
            run = None
            flush(done)
            sent = t1
    _close_run(run, pos)


def _close_run(run: Optional[OkRun], pos: int) -> int:
    """Before results go out: what went around the streams since `pos` joins the last task's span; returns
    where the log ends."""
    flush_streams()
    end = log_offset()
    if run is not None and end > run.log_offsets[-1]:
        run.log_offsets[-1] = end
    return max(end, pos)
