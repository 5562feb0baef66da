"""What rank 0 does with results: journal them, complete partitions, retry or record failures, keep the
counts that state.json, the progress line and the summary show.

A mixin of Scheduler (it reads and changes the scheduler's in-flight tasks, nodes and journal).
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict, List

from mpipipe.execution.journal import encode_ok, encode_ok_batch
from mpipipe.execution.progress import NodeCount
from mpipipe.execution.speculation import SPECULATIVE_SUFFIX
from mpipipe.execution.task import (EXTERNAL, OK, VALUE_INLINE_BYTES, Result, Task, is_value_ref, value_ref,
                                   write_value)
from mpipipe.ownership import write_private_file

log = logging.getLogger("mpipipe.scheduler")


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
    """Scheduler methods for what comes back from the executors and launchers (see the module's docstring)."""

    def _on_results(self, rank: int, results: List[Result]) -> None:
        finished: Dict[int, List[Dict[str, Any]]] = {}  # node -> the records of its tasks finished here
        try:
            for res in results:
                entry = self.inflight.pop(res.tid, None)
                if entry is None:
                    # a speculative copy that lost its race in an earlier run of this process (that run ended while
                    # it still ran): nothing waits for it, and its output is not the one the journal names
                    out = res.info.get("output") if res.status == OK else None
                    if out:
                        shutil.rmtree(out, ignore_errors=True)
                    self._drop_value_file(res)
                    continue
                task = entry[0]
                if rank != EXTERNAL:
                    self.load[rank] -= 1
                else:
                    self.external_running[task.node] -= 1
                if self.speculate:
                    self.started_at.pop(res.tid, None)
                    if res.tid in self.losers:
                        self._discard_loser(task, res)
                        self._drop_value_file(res)
                        continue
                if self.slots:
                    slot = self.slots.pop(res.tid, None)
                    if slot is not None:
                        self._task_back(slot)
                info = res.info
                t0, t1 = info.get("t0", 0.0), info.get("t1", 0.0)
                dur = t1 - t0 if t1 > t0 else 0.0
                self.avg_duration = dur if self.avg_duration is None else 0.9 * self.avg_duration + 0.1 * dur
                if res.status == OK:
                    self._on_ok(rank, task, res, t0, t1, dur, finished)
                else:
                    self.failed_attempts += 1
                    self.journal.append({"s": res.status, "k": task.key, "n": self.nodes[task.node].info.name,
                                         "p": task.partition, "a": task.attempt, "r": rank, "t0": t0, "t1": t1,
                                         "e": info.get("error", ""), "log": info.get("log"), "where": info.get("where")})
                    twin = self.twins.pop(res.tid, None) if self.speculate else None
                    if twin is not None:  # the other copy may still succeed: no retry yet
                        self.twins.pop(twin, None)
                        continue
                    self._on_failure(task, res)
        finally:
            self._journal_finished(rank, finished)

    def _on_ok(self, rank: int, task: Task, res: Result, t0: float, t1: float, dur: float,
               finished: Dict[int, List[Dict[str, Any]]]) -> None:
        self.ran += 1
        info = res.info
        rec = {"s": OK, "k": task.key, "n": self.nodes[task.node].info.name, "p": task.partition, "a": task.attempt,
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
            self._note_slow(dur, rec["n"], task.partition)
        if self.speculate:
            self.durations.setdefault(task.node, []).append(dur)
            twin = self.twins.pop(res.tid, None)
            if twin is not None:  # first result wins; the twin's output is discarded when it comes back
                self.twins.pop(twin, None)
                self.losers.add(twin)
                self.speculation_won += task.output.endswith(SPECULATIVE_SUFFIX)
        self._complete(task.node, task.partition, rec)

    def _drop_value_file(self, res: Result) -> None:
        """The value file of a result nobody takes (a speculative copy that lost its race)."""
        ref = res.info.get("value_file") if res.status == OK else None
        if ref and is_value_ref(ref):
            try:
                os.unlink(os.path.join(self.job_dir, ref))
            except OSError:
                pass

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

    def _journal_finished(self, rank: int, finished: Dict[int, List[Dict[str, Any]]]) -> None:
        """One journal record per node for the tasks one message reported (a lone task keeps the plain form)."""
        for nid, recs in finished.items():
            if len(recs) == 1:
                r = recs[0]
                self.journal.append_line(encode_ok(r["k"], r["n"], r["p"], r["a"], rank, r["t0"], r["t1"], r["o"],
                                                   r.get("v"), r["log"], r.get("vf")))
            else:
                info = self.nodes[nid].info
                self.journal.append_line(encode_ok_batch(info.fingerprint, info.name, rank, recs))

    def _node_counts(self) -> List[NodeCount]:
        """Per node: done (this run or reused), running, failed for good, of total; for the progress bars."""
        running: Dict[int, int] = {}
        for task, _ in self.inflight.values():
            running[task.node] = running.get(task.node, 0) + 1
        failed: Dict[str, int] = {}
        for f in self.failures:
            failed[f.node] = failed.get(f.node, 0) + 1
        return [NodeCount(st.info.name, st.info.npartitions, len(st.outputs), running.get(nid, 0),
                          failed.get(st.info.name, 0)) for nid, st in self.nodes.items()]

    def _write_state(self, status: str) -> None:
        """state.json: per-node counts for `mpipipe status` while the job runs (written atomically)."""
        self._state_written = time.monotonic()
        state = {"status": status, "time": time.time(), "pid": os.getpid(), "ran": self.ran, "cached": self.cached,
                 "retried": self.retried, "failed": len(self.failures),
                 "nodes": {n.name: {"total": n.total, "done": n.done, "running": n.running, "failed": n.failed}
                           for n in self._node_counts()}}
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

    def _on_failure(self, task: Task, res: Result) -> None:
        if res.info.get("oom"):
            self._more_memory(task)
        if task.attempt < self.max_retries and task.node not in self.external:  # a launcher retries its own
            self.retried += 1
            self._push(task.node, task.partition, task.attempt + 1, front=True)
            return
        info = self.nodes[task.node].info
        logref = res.info.get("log") or ("?", 0, None)
        self.failures.append(Failure(info.name, task.partition, task.attempt + 1, res.info.get("error", "?"),
                                     res.info.get("traceback", ""), res.info.get("where", "rank ?"), str(logref[0])))
        # the node's other partitions still run (their results are wanted); what depends on it cannot
        self.nodes[task.node].failed.add(task.partition)
        self._block_dependents(task.node)
        self._settle(task.node)
        if self.fail_fast:
            self.stop_reason = "failed"
