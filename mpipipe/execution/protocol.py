"""The scheduler <-> executor conversation, written as paired phases.

Messages are small tuples `(KIND, payload)`. Each phase has a scheduler side
and an executor side next to each other, so the two cannot drift apart.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from mpipipe.errors import PlatformError
from mpipipe.execution.transport import Backoff, Transport

SETUP = "setup"    # S->E: job setup (paths, options), once per world
READY = "ready"    # E->S: host description
TASKS = "tasks"    # S->E: a batch of Task
NODES = "nodes"    # S->E: plan code: the nodes of each run the executors have not seen yet
RESULTS = "results"  # E->S: a batch of Result
STOP = "stop"      # S->E: leave the loop (payload: reason)
FATAL = "fatal"    # E->S: the executor cannot go on (payload: message)
DROP = "drop"      # S->E: every reader of these MPI shuffles is done: their buckets may go (payload: node names)
PIECE = "piece"    # E->E: a bucket of an MPI shuffle comes: its node, part, bucket and files (their bytes follow
#                    as raw MPI messages, execution/mpi_shuffle.py)

# Between an executor and each of its worker processes (execution/worker.py), over a pipe, in frames:
W_SETUP = "setup"  # X->W: the job's setup and every node sent so far (a new worker, or one started again)
W_NODES = "nodes"  # X->W: plan code of nodes sent since
W_RUN = "run"      # X->W: Tasks and TaskRanges to run in order; the worker answers with frames of Result and OkRun
W_STOP = "stop"    # X->W: leave


# --- phase 1: hello -----------------------------------------------------------

def scheduler_hello(t: Transport, setup: Dict[str, Any], timeout: float) -> Dict[int, Dict[str, Any]]:
    """Send the setup to every executor and wait for each one's host description."""
    for rank in range(1, t.size):
        t.send(rank, (SETUP, setup))
    hosts: Dict[int, Dict[str, Any]] = {}
    backoff = Backoff()
    deadline = time.monotonic() + timeout
    while len(hosts) < t.size - 1:
        got = t.poll()
        for src, (kind, payload) in got:
            if kind == READY:
                hosts[src] = payload
            elif kind == FATAL:
                raise PlatformError(f"executor rank {src} could not start: {payload}")
        if not got:
            if time.monotonic() > deadline:
                missing = sorted(set(range(1, t.size)) - set(hosts))
                raise PlatformError(
                    f"executor ranks {missing} did not answer within {timeout:.0f} s; "
                    "check their logs under the job directory's logs/ folder"
                )
            t.wait(backoff.next())
        else:
            backoff.reset()
    return hosts


def executor_hello(t: Transport, host: Dict[str, Any], timeout: float, patient: bool = False) -> Dict[str, Any]:
    """Wait for the setup from rank 0 and answer with this host's description. `patient`: a transport whose
    wait wakes when a message comes may sleep long between looks (an executor started before the job)."""
    backoff = Backoff(cap=0.5) if patient else Backoff()
    deadline = time.monotonic() + timeout
    while True:
        for src, (kind, payload) in t.poll():
            if kind == SETUP:
                t.send(0, (READY, host))
                return payload
            if kind == STOP:
                raise SystemExit(0)
        if time.monotonic() > deadline:
            raise PlatformError(f"rank {t.rank}: no setup from rank 0 within {timeout:.0f} s")
        t.wait(backoff.next())


# --- phase 2: plan code, before each run (the executor side is Executor._loop) ---

def scheduler_nodes(t: Transport, blobs: List[bytes], names: Dict[int, str],
                    shuffles: Optional[Dict[str, Any]] = None) -> None:
    """Ship nodes to every executor; messages from rank 0 arrive in order, so before any task of them.
    `shuffles`: what the executors need of MPI shuffles (mpipipe.logical.shuffles.shuffle_exchange)."""
    for rank in range(1, t.size):
        t.send(rank, (NODES, (blobs, names, shuffles)))


# --- phase 3: work (see Scheduler.run and Executor.run) ------------------------

def tasks_msg(batch: List[Any]) -> Tuple[str, List[Any]]:
    return (TASKS, batch)


def results_msg(batch: List[Any]) -> Tuple[str, List[Any]]:
    return (RESULTS, batch)


# --- phase 4: goodbye -----------------------------------------------------------

def scheduler_goodbye(t: Transport, reason: str) -> None:
    """Tell every executor to leave; what they still send is dropped."""
    for rank in range(1, t.size):
        try:
            t.send(rank, (STOP, reason))
        except Exception:  # noqa: BLE001  a dead peer needs no goodbye
            pass
    t.close()
