"""What rank 0 does with a task's outcome: journal it, complete its partition, retry it or record it as
failed for good; and the counts that state.json, the progress line and the summary show.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from mpipipe.execution.graph import PlanGraph
from mpipipe.execution.journal import (Journal, RangeBlock, encode, encode_ok, encode_ok_batch, failed_record,
                                      ok_run_record)
from mpipipe.execution.progress import NodeCount
from mpipipe.execution.task import (EXTERNAL, OK, VALUE_INLINE_BYTES, OkRun, Result, Task, TaskRange, is_value_ref,
                                   value_ref, write_value)
from mpipipe.ownership import write_private_file

log = logging.getLogger("mpipipe.scheduler")

_DATA_KEYS = frozenset(("bytes", "rows", "bytes_in"))  # what a data task's value says it wrote and read


class RangeDone(NamedTuple):
    """A task range's successes waiting for their journal line: the range, its worker's columns, and the block
    that stands for their records."""

    rng: TaskRange
    run: OkRun
    block: RangeBlock


@dataclass
class Failure:
    node: str
    partition: int
    attempts: int
    error: str
    traceback: str
    where: str
    log: str

    def render(self) -> str:
        tb = self.traceback.rstrip()
        body = f"\n{tb}" if tb else ""
        # attempts are numbered from 0 everywhere (task.attempt, the journal, logs, status, report): the last
        # of `attempts` attempts is attempt attempts - 1, and its log is pP.a<attempts - 1>.log
        return (f"task {self.node}[{self.partition}] failed after {self.attempts} attempt(s): {self.error}\n"
                f"--- task {self.node}[{self.partition}], attempt {self.attempts - 1}, {self.where} ---{body}\n"
                f"--- log: {self.log}")


class Outcomes:
    """Journals outcomes and follows them up: completes partitions in the graph, retries failed attempts
    (through `retry`), records what failed for good; keeps the run's counts."""

    def __init__(self, graph: PlanGraph, journal: Journal, job_dir: str, max_retries: int, fail_fast: bool,
                 retry: Callable[[int, int, int], None]) -> None:
        self.graph = graph
        self.journal = journal
        self.job_dir = job_dir
        self.max_retries = max_retries
        self.fail_fast = fail_fast
        self.retry = retry
        self.failures: List[Failure] = []
        self.ran = self.retried = self.failed_attempts = 0
        self.slowest: List[Tuple[float, str, int]] = []
        self.data = {"bytes_written": 0, "rows_written": 0, "bytes_read": 0}
        self.stop_reason: Optional[str] = None  # "failed" once --fail-fast saw a task fail for good
        self._state_warned = False

    # --- results ------------------------------------------------------------------------------

    def ok(self, rank: int, task: Task, info: Dict[str, Any], t0: float, t1: float, dur: float,
           finished: Dict[int, List[Dict[str, Any]]]) -> None:
        """A successful attempt: its record joins `finished` (journaled per message), its partition completes."""
        self.ran += 1
        name = self.graph.name(task.node)
        rec = {"s": OK, "k": task.key, "n": name, "p": task.partition, "a": task.attempt,
               "r": rank, "t0": t0, "t1": t1, "o": info.get("output")}
        value = info.get("value")
        if value is not None and rank == EXTERNAL:  # a launcher's task: its value has not been sized yet
            value = self._spill_large_value(task, rank, rec, value)
        if value is not None:
            rec["v"] = value
            self._count_data(value)
        spilled = info.get("value_file")
        if spilled is not None:
            rec["vf"] = spilled
        rec["log"] = info.get("log")
        recs = finished.get(task.node)
        if recs is None:
            recs = finished[task.node] = []
        recs.append(rec)
        if len(self.slowest) < 3 or dur > self.slowest[0][0]:
            self._note_slow(dur, name, task.partition)
        self.graph.complete(task.node, task.partition, rec)

    def ok_run(self, rank: int, rng: TaskRange, run: OkRun, finished: Dict[int, List[Any]]) -> float:
        """The successes of a task range (columns, as its worker reported them): one RangeBlock standing for their
        records in the graph, and the columns for the journal line (journal_finished); returns their mean
        duration."""
        nid, fp, first, n, attempt = rng.node, rng.fingerprint, rng.first, rng.count, rng.attempt
        name = self.graph.name(nid)
        t0s, t1s, values = run.t0, run.t1, run.values
        if values.count(None) != n:
            for value in values:
                if isinstance(value, dict) and not _DATA_KEYS.isdisjoint(value):
                    self._count_data(value)
        block = RangeBlock(fp, name, first, attempt, rank, t0s, t1s, run.outputs, values, run.log, run.log_offsets)
        durations = [b - a for a, b in zip(t0s, t1s)]
        slowest = self.slowest
        floor = slowest[0][0] if len(slowest) >= 3 else float("-inf")
        for i in [i for i, dur in enumerate(durations) if dur > floor]:
            if len(slowest) < 3 or durations[i] > slowest[0][0]:
                self._note_slow(durations[i], name, first + i)
        pieces = finished.get(nid)
        if pieces is None:
            pieces = finished[nid] = []
        pieces.append(RangeDone(rng, run, block))
        self.graph.complete_run(nid, first, block)
        self.ran += n
        return sum(durations) / n if n else 0.0

    def attempt_failed(self, rank: int, task: Task, res: Result, t0: float, t1: float) -> None:
        """Journal a failed attempt (what follows it is `follow_up`'s)."""
        self.failed_attempts += 1
        info = res.info
        self.journal.append(failed_record(task.key, self.graph.name(task.node), task.partition, task.attempt, rank,
                                          t0, t1, info.get("error", ""), info.get("log"), info.get("where")))

    def follow_up(self, task: Task, res: Result, retries_here: bool) -> bool:
        """Retry a failed attempt, or record the task as failed for good; returns whether it failed for good.
        `retries_here` is False for tasks whose launcher retries its own."""
        if task.attempt < self.max_retries and retries_here:
            self.retried += 1
            self.retry(task.node, task.partition, task.attempt + 1)
            return False
        logref = res.info.get("log") or ("?", 0, None)
        self.failures.append(Failure(self.graph.name(task.node), task.partition, task.attempt + 1,
                                     res.info.get("error", "?"), res.info.get("traceback", ""),
                                     res.info.get("where", "rank ?"), str(logref[0])))
        self.graph.fail(task.node, task.partition)
        if self.fail_fast:
            self.stop_reason = "failed"
        return True

    def drop_value_file(self, res: Result) -> None:
        """The value file of a result nobody takes (a speculative copy that lost its race)."""
        ref = res.info.get("value_file") if res.status == OK else None
        if ref and is_value_ref(ref):
            try:
                os.unlink(os.path.join(self.job_dir, ref))
            except OSError:
                pass

    def drop_stray(self, res: Result) -> None:
        """A result nobody waits for (a copy that lost its race in an earlier run of this process): its output
        is not the one the journal names."""
        out = res.info.get("output") if res.status == OK else None
        if out:
            shutil.rmtree(out, ignore_errors=True)
        self.drop_value_file(res)

    def _spill_large_value(self, task: Task, rank: int, rec: Dict[str, Any], value: Any) -> Any:
        """A value above VALUE_INLINE_BYTES of JSON goes to a file that the record names (as a worker does);
        returns what stays inline (None when spilled)."""
        text = json.dumps(value, separators=(",", ":"), default=str)
        if len(text) <= VALUE_INLINE_BYTES:
            return value
        ref = value_ref(rec["n"], task.partition, task.attempt, rank)
        write_value(self.job_dir, ref, text)
        rec["vf"] = ref
        return None

    def journal_finished(self, rank: int, finished: Dict[int, List[Any]]) -> None:
        """One journal record per node for the tasks one message reported (a lone task keeps the plain form); a
        task range's successes alone are written straight from their columns."""
        for nid, pieces in finished.items():
            if len(pieces) == 1 and type(pieces[0]) is RangeDone and pieces[0].rng.count > 1:
                rng, run, _ = pieces[0]
                self.journal.append_line(encode(ok_run_record(
                    rng.fingerprint, self.graph.name(nid), rank, rng.first, rng.attempt, run.t0, run.t1,
                    run.outputs, run.values, run.log, run.log_offsets)))
                continue
            if len(pieces) == 1:  # a lone task (a range of one included): the plain form
                piece = pieces[0]
                r = piece.block.record(piece.rng.first) if type(piece) is RangeDone else piece
                self.journal.append_line(encode_ok(r["k"], r["n"], r["p"], r["a"], rank, r["t0"], r["t1"], r["o"],
                                                   r.get("v"), r["log"], r.get("vf")))
            else:  # several pieces: one line, a range's successes taken from its columns as they are
                info = self.graph.nodes[nid].info
                self.journal.append_line(encode_ok_batch(info.fingerprint, info.name, rank,
                                                         [p.block if type(p) is RangeDone else p for p in pieces]))

    # --- counts -------------------------------------------------------------------------------

    def node_counts(self, running: Dict[int, int]) -> List[NodeCount]:
        """Per node: done (this run or reused), running, failed for good, of total; for the progress bars."""
        failed: Dict[str, int] = {}
        for f in self.failures:
            failed[f.node] = failed.get(f.node, 0) + 1
        return [NodeCount(st.info.name, st.info.npartitions, len(st.outputs), running.get(nid, 0),
                          failed.get(st.info.name, 0)) for nid, st in self.graph.nodes.items()]

    def write_state(self, status: str, running: Dict[int, int]) -> None:
        """state.json: per-node counts for `mpipipe status` while the job runs (written atomically)."""
        state = {"status": status, "time": time.time(), "pid": os.getpid(), "ran": self.ran,
                 "cached": self.graph.reused, "retried": self.retried, "failed": len(self.failures),
                 "nodes": {n.name: {"total": n.total, "done": n.done, "running": n.running, "failed": n.failed}
                           for n in self.node_counts(running)}}
        path = os.path.join(self.job_dir, "state.json")
        try:
            write_private_file(path, json.dumps(state).encode())
        except OSError as e:
            if not self._state_warned:  # once: a full disk would otherwise say so every second
                self._state_warned = True
                log.warning("cannot write %s: %s", path, e)

    def _count_data(self, value: Any) -> None:
        """Data tasks report rows and bytes; the summary adds them up."""
        if isinstance(value, dict):
            for key, stat in (("bytes", "bytes_written"), ("rows", "rows_written"), ("bytes_in", "bytes_read")):
                x = value.get(key)
                if isinstance(x, int) and not isinstance(x, bool):
                    self.data[stat] += x

    def _note_slow(self, dur: float, name: str, p: int) -> None:
        item = (dur, name, p)
        if len(self.slowest) < 3:
            heapq.heappush(self.slowest, item)
        elif dur > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, item)
