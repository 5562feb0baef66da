"""The mpi4py transport: non-blocking sends, probe-based polling, one thread per rank.

Imported only when a job really runs in an MPI world, so the local platform
works without any MPI library installed.

Two defaults are set before the MPI library loads, each only where the
environment does not set it already:
- UCX_MEM_EVENTS=no: installing UCX's memory hooks patches every library the
  interpreter has loaded, about 40 ms of CPU in each rank at start-up (most
  of loading libmpi); they only serve UCX's registration cache for large
  RDMA transfers, which mpipipe's messages do not use.
- MPIR_CVAR_ENABLE_HEAVY_YIELD=1 (MPICH): a rank waiting inside MPI (in
  MPI_Init for the ranks still starting, in MPI_Finalize) sleeps between
  polls instead of calling sched_yield in a loop, which burned a whole core
  while the other ranks of an oversubscribed host were still starting
  (measured: 0.49 s of CPU in a 0.6 s wait, 0.12 s with it). mpipipe's own
  waits never block inside MPI (probes and a backoff), so its messages
  are not slowed.
"""
from __future__ import annotations

import os
from typing import Any, List, Tuple

from mpipipe.execution.transport import Transport

os.environ.setdefault("UCX_MEM_EVENTS", "no")
os.environ.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")

from mpi4py import MPI  # noqa: E402  (engines are imported only where used)

_TAG = 7


class MpiTransport(Transport):
    peer_buffers = True

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._requests: List[Any] = []

    def send(self, dest: int, msg: Any) -> None:
        self._requests.append(self.comm.isend(msg, dest=dest, tag=_TAG))
        if len(self._requests) > 64:
            self._reap()

    def _reap(self) -> None:
        self._requests = [r for r in self._requests if not r.Test()]

    def pending_sends(self) -> int:
        self._reap()
        return len(self._requests)

    def poll(self) -> List[Tuple[int, Any]]:
        if self._requests:
            self._reap()
        out: List[Tuple[int, Any]] = []
        status = MPI.Status()
        while True:
            msg = self.comm.improbe(source=MPI.ANY_SOURCE, tag=_TAG, status=status)
            if msg is None:
                return out
            out.append((status.Get_source(), msg.recv()))

    def close(self) -> None:
        if self._requests:
            MPI.Request.Waitall(self._requests)
            self._requests = []

    def abort(self, code: int) -> None:
        self.comm.Abort(code)
