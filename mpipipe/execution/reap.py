"""Waiting for several child processes at once, woken by their exits rather than by polling.

`Popen.wait(timeout)` sleeps in steps that grow to 50 ms and waits for one process at a time, so stopping N
processes one after another costs N stop times end to end, each rounded up by up to 50 ms of sleep. Callers
here tell every process to stop first, then wait for all of them together, each against its own deadline; on
Linux a pidfd per process wakes the wait within a millisecond of each exit.
"""
from __future__ import annotations

import math
import os
import select
import subprocess
import time
from typing import Dict, List, Sequence, Union

POLL_SECONDS = 0.005  # how often processes are looked at where pidfds are not available


def _pidfd(proc: subprocess.Popen) -> int:
    """A pidfd for a child not yet reaped (readable once it has exited), or -1 where there is none."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return -1
    try:
        return int(pidfd_open(proc.pid))
    except OSError:  # an old kernel, or the process was reaped since
        return -1


def wait_all(procs: Sequence[subprocess.Popen], timeouts: Union[float, Sequence[float]]) -> List[subprocess.Popen]:
    """Wait until every process has exited (and reap it) or passed its timeout (seconds from now, one for all or
    one per process); returns the processes still running at their deadline, for the caller to kill."""
    now = time.monotonic()
    limits = [float(timeouts)] * len(procs) if isinstance(timeouts, (int, float)) else [float(t) for t in timeouts]
    assert len(limits) == len(procs)
    pending = {id(p): (p, now + t) for p, t in zip(procs, limits) if p.poll() is None}
    late: List[subprocess.Popen] = []
    fds: Dict[int, int] = {}  # id(proc) -> its pidfd, while it is pending
    poller = select.poll() if hasattr(select, "poll") else None
    try:
        if poller is not None:
            for key, (p, _) in pending.items():
                fd = _pidfd(p)
                if fd >= 0:
                    fds[key] = fd
                    poller.register(fd, select.POLLIN)
        while pending:
            now = time.monotonic()
            for key, (p, deadline) in list(pending.items()):
                if p.poll() is None and now < deadline:
                    continue
                if p.returncode is None:
                    late.append(p)
                del pending[key]
                fd = fds.pop(key, -1)
                if fd >= 0:
                    poller.unregister(fd)  # type: ignore[union-attr]
                    os.close(fd)
            if not pending:
                break
            wait = max(0.0, min(d for _, d in pending.values()) - now)
            if poller is not None and len(fds) == len(pending):
                poller.poll(math.ceil(wait * 1000.0))
            else:
                time.sleep(min(wait, POLL_SECONDS))
    finally:
        for fd in fds.values():
            os.close(fd)
    return late
