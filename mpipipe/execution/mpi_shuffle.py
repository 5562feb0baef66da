"""An executor rank's part in an MPI shuffle (`--shuffle mpi`, mpipipe.logical.shuffles).

- When a map task of a shuffled node succeeds here, each bucket that another rank reads goes to that rank
  (owner_rank of the reading partition) and leaves this rank's store once sent; the buckets this rank reads
  stay.
- A PIECE message from another rank announces a bucket: its files, their sizes and the MPI tags their bytes
  come under. The bytes travel as raw MPI messages, from the sender's memory-mapped file straight into a
  memory-mapped file of the receiver's store (shuffle_store.py: memory, or local disk past the rank's budget),
  published under the bucket's name when whole.
- A reading task that comes before all its buckets did waits here (rank 0 already counts it as out) and
  goes to a worker as soon as they are all in; if they do not come within HOLD_SECONDS, it fails, saying
  which.

MPI's order within one pair of ranks and tag makes a sender's PIECE message and its bytes arrive whatever the
order; every tag in flight from one sender is distinct (they count up, wrapping well before MPI's TAG_UB).
If a rank dies, its world ends (the launcher stops every rank) and the stores with it: the next run of the
command runs the map tasks again, since their outputs were never in the job directory.
"""
from __future__ import annotations

import logging
import mmap
import os
import shutil
import time
from typing import Any, Dict, List, Tuple

from mpi4py import MPI

from mpipipe.data.buckets import bucket_folders_of, bucket_name, reader_of
from mpipipe.execution import protocol as P
from mpipipe.execution.shuffle_store import ShuffleStore
from mpipipe.execution.task import FAILED, OK, OkRun, Result, Task
from mpipipe.execution.transport import Transport
from mpipipe.logical.shuffles import owner_rank

log = logging.getLogger("mpipipe.shuffle")

CHUNK = 1 << 30  # bytes per MPI message (counts are C ints)
FIRST_TAG = 1000  # below: the transport's own tags
HOLD_SECONDS = 600.0


class _Transfer:
    """MPI requests over memory-mapped files, and what to do once they are all complete."""

    def __init__(self, requests: List[Any], maps: List[mmap.mmap], views: List[memoryview]) -> None:
        self.requests = requests
        self.maps = maps
        self.views = views

    def done(self) -> bool:
        return not self.requests or bool(MPI.Request.Testall(self.requests))

    def release(self) -> None:
        self.requests = []
        for v in self.views:
            v.release()
        for m in self.maps:
            try:
                m.close()
            except BufferError:  # MPI still holds the view: the collector closes it
                pass

    def cancel(self) -> None:
        for r in self.requests:
            try:
                r.Cancel()
            except MPI.Exception:
                pass
        self.release()


class _Send(_Transfer):
    def __init__(self, requests: List[Any], maps: List[mmap.mmap], views: List[memoryview], folder: str) -> None:
        super().__init__(requests, maps, views)
        self.folder = folder  # this rank's copy of the bucket, dropped once sent


class _Receive(_Transfer):
    def __init__(self, requests: List[Any], maps: List[mmap.mmap], views: List[memoryview], staging: str,
                 path: str) -> None:
        super().__init__(requests, maps, views)
        self.staging = staging
        self.path = path  # the bucket's folder, as the reading task names it


class BucketExchange:
    """This rank's sends and receives of shuffled buckets, and the reading tasks that wait for theirs."""

    def __init__(self, transport: Transport, store: ShuffleStore) -> None:
        self.t = transport
        self.comm = getattr(transport, "comm")
        self.rank = transport.rank
        self.size = transport.size
        self.store = store
        self.senders: Dict[int, Dict[str, Any]] = {}  # node id -> its shuffle's shape
        self.by_name: Dict[str, Dict[str, Any]] = {}
        self.readers: Dict[int, List[Tuple[int, int]]] = {}  # node id -> [(input index, shuffled node id)]
        self.sends: List[_Send] = []
        self.receives: List[_Receive] = []
        self.held: List[Tuple[float, Any]] = []  # (since, Task) waiting for buckets
        self.tag_span = max(1, int(self.comm.Get_attr(MPI.TAG_UB) or 32767) - FIRST_TAG)
        self.next_tag = 0
        self.sent = [0, 0]  # buckets, bytes
        self.received = [0, 0]
        self.spilled = 0  # bytes received into the disk tier

    def add_nodes(self, shuffles: Dict[str, Any]) -> None:
        for nid, shape in shuffles.get("senders", {}).items():
            self.senders[nid] = shape
            self.by_name[shape["name"]] = shape
        self.readers.update(shuffles.get("readers", {}))

    @property
    def busy(self) -> bool:
        return bool(self.sends or self.receives or self.held)

    # --- sending ------------------------------------------------------------------------------

    def after(self, results: List[Any]) -> None:
        """Send the buckets of the map tasks among `results` that succeeded."""
        if not self.by_name:
            return
        for res in results:
            if type(res) is OkRun:
                for out in res.outputs:
                    if out:
                        self._send_output(out)
            elif type(res) is Result and res.status == OK and res.info.get("output"):
                self._send_output(res.info["output"])

    def forget(self, task: Task) -> None:
        """Drop what a map attempt that died may have published here: another attempt's buckets replace it,
        and until they come a reading task here must not take these for them."""
        if task.node in self.senders:
            self.store.remove(task.output)

    def _send_output(self, output: str) -> None:
        shape = self.by_name.get(os.path.basename(os.path.dirname(output)))
        if shape is None or os.path.dirname(os.path.dirname(output)) != self.store.outputs:
            return
        part = os.path.basename(output)
        task = int(part.rsplit("-", 1)[-1])
        here = self.store.local(output)
        nb, nested, split = shape["nbuckets"], shape["nested"], shape["split"]
        for b in range(nb):
            owner = owner_rank(reader_of(task, b, nb, nested, split), self.size)
            if owner != self.rank:
                self._send_bucket(owner, shape["name"], part, b, os.path.join(here, bucket_name(b)))

    def _tag(self) -> int:
        tag = FIRST_TAG + self.next_tag
        self.next_tag = (self.next_tag + 1) % self.tag_span
        return tag

    def _send_bucket(self, owner: int, name: str, part: str, bucket: int, folder: str) -> None:
        files: List[Tuple[str, int, List[int]]] = []
        requests: List[Any] = []
        maps: List[mmap.mmap] = []
        views: List[memoryview] = []
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for fname in names:
            path = os.path.join(folder, fname)
            size = os.path.getsize(path)
            tags: List[int] = []
            if size:
                with open(path, "rb") as f:
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                maps.append(m)
                whole = memoryview(m)
                views.append(whole)
                for start in range(0, size, CHUNK):
                    tag = self._tag()
                    tags.append(tag)
                    view = whole[start:start + CHUNK]
                    views.append(view)
                    requests.append(self.comm.Isend([view, MPI.BYTE], dest=owner, tag=tag))
            files.append((fname, size, tags))
            self.sent[1] += size
        self.sent[0] += 1
        self.t.send(owner, (P.PIECE, (name, part, bucket, files)))
        self.sends.append(_Send(requests, maps, list(reversed(views)), folder))

    # --- receiving ----------------------------------------------------------------------------

    def on_piece(self, src: int, piece: Tuple[str, str, int, List[Tuple[str, int, List[int]]]]) -> None:
        name, part, bucket, files = piece
        path = os.path.join(self.store.outputs, name, part, bucket_name(bucket))
        total = sum(size for _, size, _ in files)
        tier = self.store.tier_for(total)
        if tier == self.store.disk_root:
            self.spilled += total
        staging = self.store.staging(tier, f"recv.{name}.{part}.{bucket}")
        requests: List[Any] = []
        maps: List[mmap.mmap] = []
        views: List[memoryview] = []
        for fname, size, tags in files:
            fd = os.open(os.path.join(staging, os.path.basename(fname)), os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                         0o600)
            try:
                if size:
                    os.ftruncate(fd, size)
                    m = mmap.mmap(fd, size)
                    maps.append(m)
                    whole = memoryview(m)
                    views.append(whole)
                    for i, tag in enumerate(tags):
                        view = whole[i * CHUNK:(i + 1) * CHUNK]
                        views.append(view)
                        requests.append(self.comm.Irecv([view, MPI.BYTE], source=src, tag=tag))
            finally:
                os.close(fd)
        self.received[0] += 1
        self.received[1] += total
        self.receives.append(_Receive(requests, maps, list(reversed(views)), staging, path))

    # --- progress -----------------------------------------------------------------------------

    def progress(self) -> bool:
        """Finish what completed; returns whether anything did."""
        moved = False
        if self.sends:
            left = []
            for s in self.sends:
                if s.done():
                    s.release()
                    shutil.rmtree(s.folder, ignore_errors=True)
                    moved = True
                else:
                    left.append(s)
            self.sends = left
        if self.receives:
            left_r = []
            for r in self.receives:
                if r.done():
                    r.release()
                    self.store.publish(r.staging, r.path)
                    moved = True
                else:
                    left_r.append(r)
            self.receives = left_r
        return moved

    # --- reading tasks ------------------------------------------------------------------------

    def admit(self, units: List[Any]) -> List[Any]:
        """The units that may run now; reading tasks whose buckets are not all here wait (release()). Reading
        tasks come one by one (execution/pinned.py), never as ranges."""
        if not self.readers:
            return units
        now = time.monotonic()
        out = []
        for u in units:
            if type(u) is Task and u.node in self.readers and not self._ready(u):
                self.held.append((now, u))
            else:
                out.append(u)
        return out

    def release(self) -> List[Any]:
        """Waiting reading tasks whose buckets are all here now."""
        if not self.held:
            return []
        ready = [u for _, u in self.held if self._ready(u)]
        if ready:
            self.held = [(t, u) for t, u in self.held if u not in ready]
        return ready

    def expired(self) -> List[Result]:
        """Reading tasks that waited too long, failed with the buckets they miss."""
        if not self.held:
            return []
        now = time.monotonic()
        late = [(t, u) for t, u in self.held if now - t > HOLD_SECONDS]
        if not late:
            return []
        self.held = [(t, u) for t, u in self.held if now - t <= HOLD_SECONDS]
        out = []
        for _, task in late:
            missing = self._missing(task)
            out.append(Result(task.tid, FAILED, {
                "error": f"{len(missing)} shuffled bucket(s) never reached rank {self.rank} within "
                         f"{HOLD_SECONDS:.0f} s, e.g. {missing[:1]}", "traceback": "",
                "log": ("", 0, None), "t0": now, "t1": now}))
        return out

    def _ready(self, task: Task) -> bool:
        return not self._missing(task, first_only=True)

    def _missing(self, task: Task, first_only: bool = False) -> List[str]:
        """The bucket folders `task` reads that are not here (the first one only, with first_only)."""
        missing: List[str] = []
        for i, nid in self.readers.get(task.node, ()):
            shape = self.senders.get(nid)
            if shape is None:
                continue
            for f in bucket_folders_of(task.inputs[i], task.partition, shape["nbuckets"], shape["nested"],
                                       shape["split"]):
                if not os.path.exists(self.store.resolve(f)):
                    missing.append(f)
                    if first_only:
                        return missing
        return missing

    def summary(self) -> str:
        return (f"shuffle: sent {self.sent[0]} bucket(s) ({self.sent[1]} bytes), received {self.received[0]} "
                f"bucket(s) ({self.received[1]} bytes), {self.spilled} bytes spilled to disk")

    def close(self) -> None:
        """Stop what is in flight and remove the store (at the end of the world)."""
        for tr in self.sends + self.receives:
            tr.cancel()
        self.sends, self.receives, self.held = [], [], []
        self.store.close()
