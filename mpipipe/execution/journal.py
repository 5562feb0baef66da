"""The job's journal: an append-only log of task outcomes that a re-run replays.

One record per line: 8 hex digits of CRC-32, a space, compact JSON. Writes are
batched (one write() per batch, fsync on a timer and at the end). A torn or
damaged last line, the only kind a crash can leave, is ignored on replay.

A finished task is an "ok" record; the tasks of one node that one executor
reported together share an "okb" record (columns instead of one object per
task), which keeps million-task journals small and quick to replay.
`read_records` gives every reader the same per-task "ok" records either way.
"""
from __future__ import annotations

import json
import logging
from json.encoder import encode_basestring_ascii
import os
import time
import zlib
from typing import Any, Dict, Iterator, List, Optional

from mpipipe.errors import JournalError

log = logging.getLogger("mpipipe.journal")

JOURNAL_NAME = "journal.log"


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # made once: json.dumps(**kw) makes one a call


def encode(record: Dict[str, Any]) -> bytes:
    body = _ENCODER.encode(record).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _text(value: Optional[str]) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def encode_ok(key: str, name: str, partition: int, attempt: int, rank: int, t0: float, t1: float,
              output: Optional[str], value: Any, logref: Any) -> bytes:
    """The record of a finished task, built directly: the scheduler writes one per task, and the general
    encoder costs about three times as much. Same JSON as encode() of the same dict (floats unrounded)."""
    parts = ['{"s":"ok","k":', encode_basestring_ascii(key), ',"n":', encode_basestring_ascii(name),
             ',"p":%d,"a":%d,"r":%d,"t0":%r,"t1":%r,"o":' % (partition, attempt, rank, float(t0), float(t1)),
             _text(output)]
    if value is not None:
        parts += [',"v":', _ENCODER.encode(value)]
    if logref is None:
        parts.append(',"log":null}')
    else:
        path, start, end = logref
        parts.append(',"log":[%s,%s,%s]}' % (_text(path), "null" if start is None else int(start),
                                              "null" if end is None else int(end)))
    body = "".join(parts).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def encode_ok_batch(fingerprint: str, name: str, rank: int, records: List[Dict[str, Any]]) -> bytes:
    """One record for several finished tasks of a node, from their "ok" records (p, a, t0, t1, o, v, log).
    Times are kept to the microsecond as offsets from the earliest start."""
    base = min(r["t0"] for r in records)
    rec: Dict[str, Any] = {"s": "okb", "f": fingerprint, "n": name, "r": rank, "p": [r["p"] for r in records]}
    if any(r["a"] for r in records):
        rec["a"] = [r["a"] for r in records]
    rec["t"] = base
    rec["d"] = [round((t - base) * 1e6) for r in records for t in (r["t0"], r["t1"])]
    if any(r["o"] is not None for r in records):
        rec["o"] = [r["o"] for r in records]
    if any(r.get("v") is not None for r in records):
        rec["v"] = [r.get("v") for r in records]
    paths: Dict[str, int] = {}
    logs: List[Any] = []
    for r in records:
        ref = r["log"]
        if ref is None:
            logs += (-1, None, None)
        else:
            logs += (paths.setdefault(ref[0], len(paths)), ref[1], ref[2])
    rec["lp"] = list(paths)
    rec["l"] = logs
    return encode(rec)


def expand(rec: Dict[str, Any], logs: bool = True) -> List[Dict[str, Any]]:
    """The per-task "ok" records of an "okb" record (any other record: itself). Without `logs` the records
    leave out their log reference (what a replay does not need)."""
    if rec.get("s") != "okb":
        return [rec]
    fp, name, rank, base, d = rec["f"], rec["n"], rec["r"], rec["t"], rec["d"]
    parts = rec["p"]
    n = len(parts)
    out = [{"s": "ok", "k": f"{fp}:{p}", "n": name, "p": p, "a": a, "r": rank, "t0": base + b / 1e6,
            "t1": base + e / 1e6, "o": o}
           for p, a, b, e, o in zip(parts, rec.get("a") or [0] * n, d[0::2], d[1::2], rec.get("o") or [None] * n)]
    values = rec.get("v")
    if values is not None:
        for r, v in zip(out, values):
            if v is not None:
                r["v"] = v
    if logs:
        paths, refs = rec["lp"], rec["l"]
        for r, li, start, end in zip(out, refs[0::3], refs[1::3], refs[2::3]):
            r["log"] = None if li < 0 else [paths[li], start, end]
    return out


def decode(line: bytes) -> Optional[Dict[str, Any]]:
    """The record on a line, or None if the line is torn or damaged."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        rec = json.loads(body)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_records(path: str) -> Iterator[Dict[str, Any]]:
    """Every intact record, in order, batches as one "ok" record per task; damaged lines are skipped
    (and reported once)."""
    for rec in read_raw_records(path):
        if rec.get("s") == "okb":
            yield from expand(rec)
        else:
            yield rec


def read_raw_records(path: str) -> Iterator[Dict[str, Any]]:
    """Every intact record as written ("okb" batches whole); damaged lines are skipped (reported once)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    bad = 0
    with f:
        for line in f:
            rec = decode(line)
            if rec is None:
                bad += 1
                continue
            yield rec
    if bad:
        log.warning("%s: skipped %d damaged record(s) (a torn last write is expected after a crash)", path, bad)


class Journal:
    """Appends outcome records for rank 0; `replay()` gives what earlier runs finished."""

    def __init__(self, job_dir: str, flush_every: float = 0.2, fsync_every: float = 2.0) -> None:
        self.path = os.path.join(job_dir, JOURNAL_NAME)
        self.flush_every = flush_every
        self.fsync_every = fsync_every
        self._buf: List[bytes] = []
        self._fd: Optional[int] = None
        self._last_flush = time.monotonic()
        self.previous_plan: Dict[str, str] = {}  # node name -> fingerprint, from the runs replay_by_node() read
        self._last_fsync = time.monotonic()

    def replay_by_node(self) -> Dict[str, Dict[int, Dict[str, Any]]]:
        """Node fingerprint -> partition -> its last successful outcome record (what the scheduler reuses)."""
        done: Dict[str, Dict[int, Dict[str, Any]]] = {}
        self.previous_plan = {}
        for rec in read_raw_records(self.path):
            s = rec.get("s")
            if s == "okb":
                parts = done.setdefault(rec["f"], {})
                for r in expand(rec, logs=False):
                    parts[r["p"]] = r
            elif s == "ok":
                fp, _, p = rec["k"].rpartition(":")
                try:
                    done.setdefault(fp, {})[int(p)] = rec
                except ValueError:
                    continue  # not a key this version writes
            elif rec.get("type") in ("run", "nodes") and isinstance(rec.get("plan"), dict):
                self.previous_plan.update(rec["plan"])  # node name -> fingerprint, as of the latest run
        return done

    def open(self, fresh: bool = False) -> None:
        if fresh and os.path.exists(self.path):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target, n = f"{self.path}.{stamp}.old", 1
            while os.path.exists(target):  # never overwrite an earlier saved journal
                n += 1
                target = f"{self.path}.{stamp}-{n}.old"
            os.replace(self.path, target)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._ensure_line_start()
        except OSError as e:
            raise JournalError(f"cannot write the journal {self.path}: {e.strerror}; check the data root's permissions "
                               "and free space") from e

    def _ensure_line_start(self) -> None:
        """After a crash the file may end mid-record: start ours on a fresh line."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, record: Dict[str, Any]) -> None:
        self._buf.append(encode(record))

    def append_line(self, line: bytes) -> None:
        """A record already encoded (encode_ok)."""
        self._buf.append(line)

    def maybe_flush(self, now: float) -> None:
        if self._buf and (now - self._last_flush >= self.flush_every or len(self._buf) >= 4096):
            self.flush(sync=now - self._last_fsync >= self.fsync_every)

    def flush(self, sync: bool = False) -> None:
        if self._fd is None:
            return
        try:
            if self._buf:
                data = b"".join(self._buf)
                self._buf.clear()
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            self._last_flush = time.monotonic()
            if sync:
                os.fsync(self._fd)
                self._last_fsync = self._last_flush
        except OSError as e:
            # a job whose outcomes cannot be recorded must stop; what was written stays (a torn last
            # line is skipped on replay), and the journal is closed so that nothing writes after the gap
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
            raise JournalError(f"cannot write the journal {self.path}: {e.strerror or e}; the job stopped, "
                               "run the same command again to resume once that is fixed") from None

    def close(self) -> None:
        if self._fd is not None:
            self.flush(sync=True)
            os.close(self._fd)
            self._fd = None

