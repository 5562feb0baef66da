"""The job's journal: an append-only log of what each run did, which a re-run replays.

One record per line: 8 hex digits of CRC-32, a space, compact JSON. Writes are
batched (one write() per batch, fsync on a timer and at the end). A torn or
damaged line, what a crash can leave at the end, is skipped on replay.

Every record names its kind under one key, "s" (KIND): "run" at each start,
"nodes" when nodes join a live run, "end" when it stops, and per task attempt
"ok" or "failed". The finished tasks of one node that one executor reported
together share an "okb" record (columns instead of one object per task), which
keeps million-task journals small and quick to replay. Journals written before
kept the kind of run, nodes and end records under "type"; they read the same.

This module is the only one that knows the record layout: the constructors
below build every kind, `read_records` (whole journals) and `JournalTail`
(a journal that grows) are the one way to read them back, and `kind()` with the
kind constants tells them apart.
"""
from __future__ import annotations

import json
import logging
from json.encoder import encode_basestring_ascii
import os
import time
import zlib
from typing import Any, Dict, Final, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypedDict, Union

from mpipipe.errors import JournalError
from mpipipe.execution.task import is_value_ref

log = logging.getLogger("mpipipe.journal")

JOURNAL_NAME = "journal.log"

# --- record kinds ----------------------------------------------------------------------------------------

KIND: Final = "s"  # the key that names a record's kind, in every record this version writes
RUN = "run"  # a run started: its job, process, executors, platform, task count and plan
NODES = "nodes"  # nodes joined a live run: their fingerprints
END = "end"  # a run stopped: its status
OK = "ok"  # a task attempt succeeded
OK_BATCH = "okb"  # several tasks of one node that one executor reported together succeeded
FAILED = "failed"  # a task attempt failed
RUN_KINDS = frozenset((RUN, NODES, END))  # records about a run rather than a task
ATTEMPT_KINDS = frozenset((OK, FAILED))  # one task attempt each, as read back (batches are read as OK records)
_OLD_KIND = "type"  # where journals written before kept the kind of RUN_KINDS records

LogRef = Sequence[Any]  # [log file, start offset, end offset or None]


class RunRecord(TypedDict):
    s: str
    job: str
    time: float
    pid: int
    executors: int
    platform: str
    total: int
    plan: Dict[str, str]  # node name -> fingerprint


class NodesRecord(TypedDict):
    s: str
    time: float
    plan: Dict[str, str]


class EndRecord(TypedDict):
    s: str
    status: str
    time: float


class _OkFields(TypedDict):
    s: str
    k: str  # task key: "<node fingerprint>:<partition>"
    n: str  # node name
    p: int
    a: int  # attempt, from 0
    r: int  # rank
    t0: float
    t1: float
    o: Optional[str]  # output folder
    log: Optional[LogRef]


class OkRecord(_OkFields, total=False):
    v: Any  # the task's value, when its JSON is small enough for the journal
    vf: str  # else the file it was written to, relative to the job directory


class FailedRecord(TypedDict):
    s: str
    k: str
    n: str
    p: int
    a: int
    r: int
    t0: float
    t1: float
    e: str  # the error
    log: Optional[LogRef]
    where: Optional[str]


class _OkBatchFields(TypedDict):
    s: str
    f: str  # the node's fingerprint
    n: str
    r: int
    p: List[int]
    t: float  # the earliest start; "d" holds (start, end) per task in microseconds after it
    d: List[int]
    lp: List[str]  # log files, referred to by index in "l"
    l: List[Any]  # noqa: E741  (the record's key on disk) (log file index or -1, start, end) per task, flattened


class OkBatchRecord(_OkBatchFields, total=False):
    a: List[int]  # left out when every attempt is 0
    o: List[Optional[str]]  # left out when no task has an output
    v: List[Any]
    vf: List[Optional[str]]


Record = Dict[str, Any]  # a record as read back (see read_records)
AnyRecord = Union[RunRecord, NodesRecord, EndRecord, OkRecord, OkBatchRecord, FailedRecord, Mapping[str, Any]]


def kind(rec: Mapping[str, Any]) -> Optional[str]:
    """The kind of a record (RUN, NODES, END, OK, OK_BATCH, FAILED), whichever format wrote it; None if it has
    none."""
    k = rec.get(KIND)
    return k if k is not None else rec.get(_OLD_KIND)


def is_attempt(rec: Mapping[str, Any]) -> bool:
    """Whether a record read back is one task attempt (ATTEMPT_KINDS)."""
    return kind(rec) in ATTEMPT_KINDS


def task_key(fingerprint: str, partition: int) -> str:
    """The key that names a task in the journal: its node's fingerprint and its partition."""
    return f"{fingerprint}:{partition}"


def split_key(key: str) -> Tuple[str, str]:
    """(node fingerprint, partition as written) of a task key."""
    fingerprint, _, partition = key.rpartition(":")
    return fingerprint, partition


def _now() -> float:
    return time.time()


def run_record(job: str, plan: Mapping[str, str], executors: int, platform: str, total: int,
               pid: Optional[int] = None, time: Optional[float] = None) -> RunRecord:
    """A run starts: the plan's fingerprints by node name (what a later run compares its own with)."""
    return {KIND: RUN, "job": job, "time": _now() if time is None else time,
            "pid": os.getpid() if pid is None else pid, "executors": executors, "platform": platform,
            "total": total, "plan": dict(plan)}


def nodes_record(plan: Mapping[str, str], time: Optional[float] = None) -> NodesRecord:
    """Nodes join a live run: their fingerprints by name, compared like a run record's plan."""
    return {KIND: NODES, "time": _now() if time is None else time, "plan": dict(plan)}


def end_record(status: str, time: Optional[float] = None) -> EndRecord:
    """A run stops: "succeeded", "failed", "interrupted", ... (a run without one was killed)."""
    return {KIND: END, "status": status, "time": _now() if time is None else time}


def ok_record(key: str, name: str, partition: int, attempt: int, rank: int, t0: float, t1: float,
              output: Optional[str], value: Any = None, log: Optional[LogRef] = None,
              value_file: Optional[str] = None) -> OkRecord:
    """A finished task, with the fields in the order encode_ok writes them (so both give the same bytes)."""
    rec: Dict[str, Any] = {KIND: OK, "k": key, "n": name, "p": partition, "a": attempt, "r": rank, "t0": t0,
                           "t1": t1, "o": output}
    if value is not None:
        rec["v"] = value
    if value_file is not None:
        rec["vf"] = value_file
    rec["log"] = None if log is None else list(log)
    return rec  # type: ignore[return-value]


class RangeOk(Mapping):  # type: ignore[type-arg]
    """An "ok" record kept in memory for a task of a range that succeeded: the same keys and values as
    ok_record() gives, read as a mapping, in a seventh of the space (a job of millions of tasks keeps one per
    partition). The task key is made when it is read."""

    __slots__ = ("fingerprint", "name", "partition", "attempt", "rank", "t0", "t1", "output", "value", "log")

    def __init__(self, fingerprint: str, name: str, partition: int, attempt: int, rank: int, t0: float, t1: float,
                 output: Optional[str], value: Any, log: Optional[LogRef]) -> None:
        self.fingerprint = fingerprint
        self.name = name
        self.partition = partition
        self.attempt = attempt
        self.rank = rank
        self.t0 = t0
        self.t1 = t1
        self.output = output
        self.value = value
        self.log = log

    def __getitem__(self, key: str) -> Any:
        if key == "o":
            return self.output
        if key == "p":
            return self.partition
        if key == "v" and self.value is not None:
            return self.value
        if key == "k":
            return task_key(self.fingerprint, self.partition)
        if key == KIND:
            return OK
        field = _RANGE_OK_FIELDS.get(key)
        if field is None:
            raise KeyError(key)
        return getattr(self, field)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping.get, without a KeyError for what it lacks (the output and value are read for every task)."""
        if key == "o":
            return self.output
        if key == "v":
            return default if self.value is None else self.value
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        yield from (KIND, "k", "n", "p", "a", "r", "t0", "t1", "o")
        if self.value is not None:
            yield "v"
        yield "log"

    def __len__(self) -> int:
        return 11 if self.value is not None else 10


_RANGE_OK_FIELDS = {"n": "name", "a": "attempt", "r": "rank", "t0": "t0", "t1": "t1", "log": "log"}


class RangeBlock:
    """The successes of one task range as its worker's columns, standing for each of its partitions until one is
    read: the graph keeps this one object under every partition of the range, and record(p) makes partition p's
    RangeOk when something asks for it (a job of tiny tasks reads few, and rank 0 journals and completes
    thousands a message: a record each would be most of its work)."""

    __slots__ = ("fingerprint", "name", "first", "attempt", "rank", "t0", "t1", "outputs", "values", "log",
                 "log_offsets")

    def __init__(self, fingerprint: str, name: str, first: int, attempt: int, rank: int, t0: List[float],
                 t1: List[float], outputs: List[Optional[str]], values: List[Any], log: Optional[str],
                 log_offsets: List[int]) -> None:
        self.fingerprint = fingerprint
        self.name = name
        self.first = first
        self.attempt = attempt
        self.rank = rank
        self.t0 = t0
        self.t1 = t1
        self.outputs = outputs
        self.values = values
        self.log = log
        self.log_offsets = log_offsets

    def __len__(self) -> int:
        return len(self.t0)

    def output(self, partition: int) -> Optional[str]:
        return self.outputs[partition - self.first]

    def record(self, partition: int) -> RangeOk:
        i = partition - self.first
        offs = self.log_offsets
        return RangeOk(self.fingerprint, self.name, partition, self.attempt, self.rank, self.t0[i], self.t1[i],
                       self.outputs[i], self.values[i], (self.log, offs[i], offs[i + 1]))

    def records(self) -> List[RangeOk]:
        return [self.record(p) for p in range(self.first, self.first + len(self.t0))]


def resolve(rec: Any, partition: int) -> Any:
    """A graph entry as its record: a RangeBlock's record of `partition`, anything else as it is."""
    return rec.record(partition) if type(rec) is RangeBlock else rec


def value_of(rec: Any, partition: int) -> Any:
    """The value a graph entry's task returned (None: none)."""
    return rec.values[partition - rec.first] if type(rec) is RangeBlock else rec.get("v")


def output_of(rec: Any, partition: int) -> Optional[str]:
    """The output path an entry of the graph names (None: the task wrote none)."""
    return rec.outputs[partition - rec.first] if type(rec) is RangeBlock else rec.get("o")


def failed_record(key: str, name: str, partition: int, attempt: int, rank: int, t0: float, t1: float,
                  error: str, log: Optional[LogRef] = None, where: Optional[str] = None) -> FailedRecord:
    """A failed task attempt: its error, its log, and where it failed when that was not in the task itself."""
    return {KIND: FAILED, "k": key, "n": name, "p": partition, "a": attempt, "r": rank,
            "t0": t0, "t1": t1, "e": error, "log": None if log is None else list(log), "where": where}


def _ok_fields(r: Mapping[str, Any]) -> Tuple[Any, ...]:
    """(p, a, t0, t1, o, v, vf, log) of an "ok" record; a RangeOk's read from its attributes."""
    if type(r) is RangeOk:
        return r.partition, r.attempt, r.t0, r.t1, r.output, r.value, None, r.log
    return r["p"], r["a"], r["t0"], r["t1"], r["o"], r.get("v"), r.get("vf"), r["log"]


def ok_batch_record(fingerprint: str, name: str, rank: int, records: Sequence[Any]) -> OkBatchRecord:
    """One record for several finished tasks of a node, from their "ok" records (p, a, t0, t1, o, v, vf, log)
    or RangeBlocks, whose columns are taken as they are (the record their records() would give, without making
    a record per task). Times are kept to the microsecond as offsets from the earliest start."""
    parts: List[int] = []
    attempts: List[int] = []
    t0: List[float] = []
    t1: List[float] = []
    outputs: List[Optional[str]] = []
    values: List[Any] = []
    files: List[Optional[str]] = []
    paths: Dict[Any, int] = {}
    logs: List[Any] = []
    for r in records:
        if type(r) is RangeBlock:
            n = len(r.t0)
            parts += range(r.first, r.first + n)
            attempts += [r.attempt] * n
            t0 += r.t0
            t1 += r.t1
            outputs += r.outputs
            values += r.values
            files += [None] * n
            refs = [paths.setdefault(r.log, len(paths))] * (3 * n)
            refs[1::3] = r.log_offsets[:n]
            refs[2::3] = r.log_offsets[1:n + 1]
            logs += refs
            continue
        p, a, start, end, o, v, vf, ref = _ok_fields(r)
        parts.append(p)
        attempts.append(a)
        t0.append(start)
        t1.append(end)
        outputs.append(o)
        values.append(v)
        files.append(vf)
        logs += (-1, None, None) if ref is None else (paths.setdefault(ref[0], len(paths)), ref[1], ref[2])
    base = min(t0)
    rec: Dict[str, Any] = {KIND: OK_BATCH, "f": fingerprint, "n": name, "r": rank, "p": parts}
    if any(attempts):
        rec["a"] = attempts
    rec["t"] = base
    d = [0] * (2 * len(parts))
    d[0::2] = [round((t - base) * 1e6) for t in t0]
    d[1::2] = [round((t - base) * 1e6) for t in t1]
    rec["d"] = d
    if outputs.count(None) != len(outputs):
        rec["o"] = outputs
    if values.count(None) != len(values):
        rec["v"] = values
    if files.count(None) != len(files):
        rec["vf"] = files
    rec["lp"] = list(paths)
    rec["l"] = logs
    return rec  # type: ignore[return-value]


# --- encoding ----------------------------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # made once: json.dumps(**kw) makes one a call


def encode(record: Mapping[str, Any]) -> bytes:
    """A record's line, as given (see Journal.append for records in the format of earlier versions)."""
    body = _ENCODER.encode(record).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _text(value: Optional[str]) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def encode_ok(key: str, name: str, partition: int, attempt: int, rank: int, t0: float, t1: float,
              output: Optional[str], value: Any, logref: Any, value_file: Optional[str] = None) -> bytes:
    """The line of ok_record(...), built directly: the scheduler writes one per task, and the general encoder
    costs about three times as much. Same bytes as encode(ok_record(...)) (floats unrounded).
    `value_file`: where a value too large for the journal was written, relative to the job directory."""
    parts = ['{"s":"ok","k":', encode_basestring_ascii(key), ',"n":', encode_basestring_ascii(name),
             ',"p":%d,"a":%d,"r":%d,"t0":%r,"t1":%r,"o":' % (partition, attempt, rank, float(t0), float(t1)),
             _text(output)]
    if value is not None:
        parts += [',"v":', _ENCODER.encode(value)]
    if value_file is not None:
        parts += [',"vf":', encode_basestring_ascii(value_file)]
    if logref is None:
        parts.append(',"log":null}')
    else:
        path, start, end = logref
        parts.append(',"log":[%s,%s,%s]}' % (_text(path), "null" if start is None else int(start),
                                              "null" if end is None else int(end)))
    body = "".join(parts).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def encode_ok_batch(fingerprint: str, name: str, rank: int, records: Sequence[Any]) -> bytes:
    """The line of ok_batch_record(...)."""
    return encode(ok_batch_record(fingerprint, name, rank, records))


def ok_run_record(fingerprint: str, name: str, rank: int, first: int, attempt: int, t0: Sequence[float],
                  t1: Sequence[float], outputs: Sequence[Optional[str]], values: Sequence[Any],
                  log: Optional[str], log_offsets: Sequence[int]) -> OkBatchRecord:
    """The OK_BATCH record of partitions first, first+1, ... of one node that succeeded together (a task
    range's columns as its worker reported them: task i's output is log_offsets[i]..log_offsets[i+1] of
    `log`), built from the columns without a record per task: the record ok_batch_record gives for them."""
    n = len(t0)
    base = min(t0)
    rec: Dict[str, Any] = {KIND: OK_BATCH, "f": fingerprint, "n": name, "r": rank, "p": list(range(first, first + n))}
    if attempt:
        rec["a"] = [attempt] * n
    rec["t"] = base
    d = [0] * (2 * n)
    d[0::2] = [round((t - base) * 1e6) for t in t0]
    d[1::2] = [round((t - base) * 1e6) for t in t1]
    rec["d"] = d
    if outputs.count(None) != n:
        rec["o"] = list(outputs)
    if values.count(None) != n:
        rec["v"] = list(values)
    if log is None:
        rec["lp"], rec["l"] = [], [-1, None, None] * n
    else:
        refs = [0] * (3 * n)
        refs[1::3] = log_offsets[:n]
        refs[2::3] = log_offsets[1:n + 1]
        rec["lp"], rec["l"] = [log], refs
    return rec  # type: ignore[return-value]


def _as_stored(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A record in this version's format: a run, nodes or end record given the way earlier versions wrote it
    ({"type": ...}) gets its kind under KIND."""
    if KIND in record or record.get(_OLD_KIND) not in RUN_KINDS:
        return record
    out: Dict[str, Any] = {KIND: record[_OLD_KIND]}
    out.update((k, v) for k, v in record.items() if k != _OLD_KIND)
    return out


def _as_read(rec: Record) -> Record:
    """How read_records gives a run, nodes or end record: its kind under "type", as earlier versions wrote
    it, and no "s", for code outside this module that still tests rec.get("type") or takes any record with
    an "s" for a task attempt (tests of other parts). kind() reads it either way; once nothing else looks at
    the keys, read_records can give records as stored."""
    k = rec.get(KIND)
    if k not in RUN_KINDS:
        return rec
    out: Record = {_OLD_KIND: k}
    out.update((x, v) for x, v in rec.items() if x != KIND)
    return out


# --- decoding ----------------------------------------------------------------------------------------------


def expand(rec: Record, logs: bool = True) -> List[Record]:
    """The per-task OK records of an OK_BATCH record (any other record: itself). Without `logs` the records
    leave out their log reference (what a replay does not need)."""
    if rec.get(KIND) != OK_BATCH:
        return [rec]
    fp, name, rank, base, d = rec["f"], rec["n"], rec["r"], rec["t"], rec["d"]
    parts = rec["p"]
    n = len(parts)
    out = [{KIND: OK, "k": f"{fp}:{p}", "n": name, "p": p, "a": a, "r": rank, "t0": base + b / 1e6,
            "t1": base + e / 1e6, "o": o}
           for p, a, b, e, o in zip(parts, rec.get("a") or [0] * n, d[0::2], d[1::2], rec.get("o") or [None] * n)]
    values = rec.get("v")
    if values is not None:
        for r, v in zip(out, values):
            if v is not None:
                r["v"] = v
    files = rec.get("vf")
    if files is not None:
        for r, vf in zip(out, files):
            if vf is not None:
                r["vf"] = vf
    if logs:
        paths, refs = rec["lp"], rec["l"]
        for r, li, start, end in zip(out, refs[0::3], refs[1::3], refs[2::3]):
            r["log"] = None if li < 0 else [paths[li], start, end]
    return out


def decode(line: bytes) -> Optional[Record]:
    """The record on a line as written, or None if the line is torn or damaged."""
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


class RecordCheck:
    """The paths a journal record may name, so that a record is never trusted beyond its job directory.

    A record's output must be a partition folder in the job's outputs/<node>/, its value file one of the
    job's values/<node>/ (execution.task.is_value_ref); a record naming anything else (a hand-edited line with
    a valid CRC, a journal copied from elsewhere) is dropped with a warning, so nothing outside is ever reused
    as an output, linked into a sink or read as a value: its task runs again. A log reference outside the job
    directory is dropped from its record (the record stays). Paths are compared as written first, and by
    their real folder when spelled differently (a symbolic link on the way to the data root).
    """

    def __init__(self, job_dir: str, path: str) -> None:
        self.path = path
        self.root = os.path.abspath(job_dir)
        self.real = os.path.realpath(job_dir)
        self._real_dirs: Dict[str, str] = {}
        self.dropped = 0
        self.examples: List[str] = []
        self.logs_dropped = 0
        self.log_examples: List[str] = []

    def _real_dir(self, folder: str) -> str:
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder) if folder else ""
        return real

    def output_ok(self, out: Any, node: Any) -> bool:
        """Whether `out` is a partition folder of `node` in this job's outputs/."""
        if not isinstance(out, str) or not _plain_name(node):
            return False
        prefix = f"{self.root}/outputs/{node}/"
        if out.startswith(prefix):
            base = out[len(prefix):]
        else:
            folder, base = os.path.split(out)
            if self._real_dir(folder) != os.path.join(self.real, "outputs", node):
                return False
        return _part_name(base)

    def log_ok(self, path: Any) -> bool:
        """Whether a log reference names a file in this job directory ("?" when there was none)."""
        if path == "?":
            return True
        if not isinstance(path, str) or "\0" in path:
            return False
        if path.startswith(self.root + "/"):
            return ".." not in path[len(self.root) + 1:].split("/")
        folder = self._real_dir(os.path.dirname(path))
        return folder == self.real or folder.startswith(self.real + "/")

    def problem(self, rec: Record) -> str:
        """Why an OK record cannot be trusted ('' when it can); other records name no output."""
        if rec.get(KIND) != OK:
            return ""
        node, out, vf = rec.get("n"), rec.get("o"), rec.get("vf")
        if out is not None and not self.output_ok(out, node):
            return f"output {out!r} is not a partition folder of the job's outputs/{node}/"
        if vf is not None and not is_value_ref(vf, node if isinstance(node, str) else ""):
            return f"value file {vf!r} is not in the job's values/{node}/"
        return ""

    def batch_problems(self, rec: Record) -> Dict[int, str]:
        """Index -> problem of the tasks of an OK_BATCH record whose output or value file cannot be trusted."""
        node = rec.get("n")
        bad: Dict[int, str] = {}
        outs = rec.get("o") or ()
        prefix = f"{self.root}/outputs/{node}/"
        cut = len(prefix)
        if _plain_name(node) and all(o is None or (o.startswith(prefix) and _part_name(o[cut:])) for o in outs):
            pass  # every output is where this job puts them: the usual case, checked without a call per task
        else:
            for i, o in enumerate(outs):
                if o is not None and not self.output_ok(o, node):
                    bad[i] = f"output {o!r} is not a partition folder of the job's outputs/{node}/"
        for i, vf in enumerate(rec.get("vf") or ()):
            if vf is not None and not is_value_ref(vf, node if isinstance(node, str) else ""):
                bad.setdefault(i, f"value file {vf!r} is not in the job's values/{node}/")
        return bad

    def note(self, line: int, problem: str) -> None:
        self.dropped += 1
        if len(self.examples) < 3:
            self.examples.append(f"line {line}: {problem}")

    def without_foreign_log(self, line: int, rec: Record) -> Record:
        """The record without a log reference that points outside the job directory (what readers open)."""
        ref = rec.get("log")
        if ref is None or (isinstance(ref, list) and ref and self.log_ok(ref[0])):
            return rec
        self.logs_dropped += 1
        if len(self.log_examples) < 3:
            self.log_examples.append(f"line {line}: {ref[0] if isinstance(ref, list) and ref else ref!r}")
        return dict(rec, log=None)

    def warn(self) -> None:
        """One warning for all that was left out (a moved job directory must not print one per record)."""
        if self.dropped:
            more = f" (and {self.dropped - len(self.examples)} more)" if self.dropped > len(self.examples) else ""
            log.warning("%s: %d record(s) ignored, they name files outside their job directory: %s%s; a task whose "
                        "record is ignored runs again", self.path, self.dropped, "; ".join(self.examples), more)
        if self.logs_dropped:
            more = f" (and {self.logs_dropped - len(self.log_examples)} more)" \
                if self.logs_dropped > len(self.log_examples) else ""
            log.warning("%s: %d log reference(s) outside the job directory are not shown: %s%s", self.path,
                        self.logs_dropped, "; ".join(self.log_examples), more)


def _plain_name(name: Any) -> bool:
    """A single path component that goes nowhere else: no separator, not "." or ".."."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _part_name(name: str) -> bool:
    """A partition folder's name (part-NNNNN, maybe .speculative): never .staging or another dot-name."""
    return _plain_name(name) and not name.startswith(".")


def read_records(path: str) -> Iterator[Record]:
    """Every intact record of a journal, in order, the one way to read one back: batches as one OK record per
    task; run, nodes and end records as _as_read gives them; damaged lines skipped and records naming files
    outside the job directory (the journal's folder) dropped, each kind of problem reported once. Journals
    of earlier versions read the same."""
    check = RecordCheck(os.path.dirname(path), path)
    yield from _checked(_numbered(path), check)
    check.warn()


def _checked(numbered: Iterable[Tuple[int, Record]], check: RecordCheck) -> Iterator[Record]:
    """The records of (line number, record as written) pairs, as read_records gives them."""
    for line, rec in numbered:
        k = kind(rec)
        if k == OK_BATCH:
            bad = check.batch_problems(rec)
            for i, r in enumerate(expand(rec)):
                if i in bad:
                    check.note(line, bad[i])
                    continue
                yield check.without_foreign_log(line, r)
        elif k in RUN_KINDS:
            yield _as_read(rec)
        else:
            problem = check.problem(rec)
            if problem:
                check.note(line, problem)
            else:
                yield check.without_foreign_log(line, rec)


def read_raw_records(path: str) -> Iterator[Record]:
    """Every intact record as written (batches whole, paths unchecked), for tests of the format; damaged
    lines are skipped (reported once)."""
    for _line, rec in _numbered(path):
        yield rec


def _numbered(path: str) -> Iterator[Tuple[int, Record]]:
    """(line number, record) of every intact line; damaged lines are skipped (reported once)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    bad = 0
    with f:
        for n, line in enumerate(f, 1):
            rec = decode(line)
            if rec is None:
                bad += 1
                continue
            yield n, rec
    if bad:
        log.warning("%s: skipped %d damaged record(s) (a torn last write is expected after a crash)", path, bad)


class JournalTail:
    """The records a growing journal gained since the last look, as read_records gives them: for a process
    that follows a job from outside (it reads only what was appended, and a line only once it is whole).
    Problems are not logged: the job's own replay reports them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._start()

    def _start(self) -> None:
        self._offset = 0
        self._inode: Optional[int] = None
        self._partial = b""
        self._line = 0
        self._check = RecordCheck(os.path.dirname(self.path), self.path)

    def read(self) -> Tuple[bool, List[Record]]:
        """(started over, the new records). Started over: the journal was replaced or shrank (--fresh moved
        it aside), and the records are the new journal's from its first line."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False, []
        again = self._inode is not None and (st.st_ino != self._inode or st.st_size < self._offset)
        if again:
            self._start()
        self._inode = st.st_ino
        if st.st_size <= self._offset:
            return again, []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(st.st_size - self._offset)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        numbered = []
        for line in lines:
            self._line += 1
            rec = decode(line + b"\n")
            if rec is not None:
                numbered.append((self._line, rec))
        return again, list(_checked(numbered, self._check))


class RunOrigins:
    """Which platform's run journaled each outcome a replay keeps (a run on mpi that reuses a local run's work
    says so). Kept per task only once the journal holds runs of more than one platform, which is rare: until
    then every outcome is the first platform's. "" stands for a run record that names no platform."""

    def __init__(self) -> None:
        self.first: Optional[str] = None
        self.current = ""
        self.mixed = False
        self._by_task: Dict[str, Dict[int, str]] = {}  # fingerprint -> partition -> platform, once mixed

    def start_run(self, platform: Any) -> None:
        self.current = platform if isinstance(platform, str) else ""
        if self.first is None:
            self.first = self.current
        elif self.current != self.first:
            self.mixed = True

    def note(self, fingerprint: str, partition: int) -> None:
        """The outcome of (fingerprint, partition) that the replay keeps now came from the current run."""
        self._by_task.setdefault(fingerprint, {})[partition] = self.current

    def platform_of(self, fingerprint: str, partition: int) -> str:
        first = self.first or ""
        if not self.mixed:
            return first
        return self._by_task.get(fingerprint, {}).get(partition, first)


class Journal:
    """Appends records for rank 0; `replay_by_node()` gives what earlier runs finished."""

    def __init__(self, job_dir: str, flush_every: float = 0.2, fsync_every: float = 2.0) -> None:
        self.job_dir = job_dir
        self.path = os.path.join(job_dir, JOURNAL_NAME)
        self.flush_every = flush_every
        self.fsync_every = fsync_every
        self._buf: List[bytes] = []
        self._fd: Optional[int] = None
        self._last_flush = time.monotonic()
        self.previous_plan: Dict[str, str] = {}  # node name -> fingerprint, from the runs replay_by_node() read
        self.origins = RunOrigins()  # the platform of the run behind each outcome replay_by_node() kept
        self._last_fsync = time.monotonic()

    def replay_by_node(self) -> Dict[str, Dict[int, Record]]:
        """Node fingerprint -> partition -> its last successful outcome record (what the scheduler reuses).
        Records naming an output or value file outside the job directory are left out (see RecordCheck)."""
        done: Dict[str, Dict[int, Record]] = {}
        self.previous_plan = {}
        origins = self.origins = RunOrigins()
        if os.path.lexists(self.path):
            from mpipipe.ownership import check_trusted_file

            check_trusted_file(self.path, "journal")  # what it says is reused as outputs and values
        check = RecordCheck(self.job_dir, self.path)
        for line, rec in _numbered(self.path):
            k = kind(rec)
            if k == OK_BATCH:
                parts = done.setdefault(rec["f"], {})
                bad = check.batch_problems(rec)
                for i, r in enumerate(expand(rec, logs=False)):
                    if bad and i in bad:
                        check.note(line, bad[i])
                        continue
                    parts[r["p"]] = r
                    if origins.mixed:
                        origins.note(rec["f"], r["p"])
            elif k == OK:
                problem = check.problem(rec)
                if problem:
                    check.note(line, problem)
                    continue
                fp, p = split_key(rec["k"])
                try:
                    done.setdefault(fp, {})[int(p)] = rec
                except ValueError:
                    continue  # not a key this version writes
                if origins.mixed:
                    origins.note(fp, int(p))
            elif k in (RUN, NODES) and isinstance(rec.get("plan"), dict):
                self.previous_plan.update(rec["plan"])  # node name -> fingerprint, as of the latest run
                if k == RUN:
                    origins.start_run(rec.get("platform"))
        check.warn()
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

    def append(self, record: AnyRecord) -> None:
        """A record of a constructor above (or a dict in the format of earlier versions, stored in this one's)."""
        self._buf.append(encode(_as_stored(record)))

    def append_line(self, line: bytes) -> None:
        """A record already encoded (encode_ok, encode_ok_batch)."""
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

