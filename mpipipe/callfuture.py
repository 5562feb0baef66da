"""A concurrent.futures.Future whose Condition is made only when a thread needs it.

A plain Future builds a threading.Condition (and its RLock) in __init__: about
half of what one submit() costs when calls are tiny and many. Most futures of a
large batch are finished before anyone waits on them, so the Condition is made
on first use (result() or exception() on an unfinished future, a callback,
cancel(), concurrent.futures.wait / as_completed), under one module lock. The
scheduler's thread finishes a future without a Condition under that same lock
(settle_many: a whole batch per acquisition), so a thread that makes the
Condition either sees the future finished or is notified through it.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING, InvalidStateError
from typing import Any, Iterable, List, Optional, Tuple

_MAKE = threading.Lock()  # guards making a Condition and finishing a future that has none
_OVER = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class CallFuture(Future):
    """A Future for one call; every concurrent.futures entry point works on it unchanged."""

    # the base's fields as class defaults: a new future sets none of them; its lists of waiters and callbacks
    # (only ever added to under the Condition) are made with the Condition
    _cond: Optional[threading.Condition] = None
    _state = PENDING
    _result: Any = None
    _exception: Optional[BaseException] = None
    _waiters: Any = ()
    _done_callbacks: Any = ()

    def __init__(self) -> None:
        pass

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _MAKE:
                cond = self._cond
                if cond is None:
                    self._waiters = []
                    self._done_callbacks = []
                    cond = self._cond = threading.Condition()
        return cond

    # reading one attribute needs no lock; the base takes the Condition for these
    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _OVER

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        with _MAKE:
            if self._cond is None:  # nobody waits on it nor was called back: no one to notify
                if self._state == PENDING:
                    self._state = RUNNING
                    return True
                if self._state == CANCELLED:
                    self._state = CANCELLED_AND_NOTIFIED
                    return False
        return super().set_running_or_notify_cancel()

    def set_result(self, result: Any) -> None:
        settle_many([(self, True, result)])

    def set_exception(self, exception: Optional[BaseException]) -> None:
        settle_many([(self, False, exception)])


def start_many(futures: List[Future]) -> List[bool]:
    """set_running_or_notify_cancel() for each future, those nobody waits on in one lock: which may run."""
    starts: List[bool] = []
    slow: List[int] = []
    with _MAKE:
        for i, fut in enumerate(futures):
            if type(fut) is CallFuture and fut._cond is None and fut._state == PENDING:
                fut._state = RUNNING
                starts.append(True)
            else:
                slow.append(i)
                starts.append(False)
    for i in slow:
        starts[i] = futures[i].set_running_or_notify_cancel()
    return starts


def settle_many(outcomes: Iterable[Tuple[Future, bool, Any]]) -> None:
    """Finish futures (future, ok, result or exception): those nobody waits on in one lock, the others (and
    plain Futures) through the base class, which notifies waiters and runs callbacks outside that lock.
    A future already finished or cancelled raises InvalidStateError, as set_result does."""
    slow: List[Tuple[Future, bool, Any]] = []
    bad: Optional[Future] = None
    with _MAKE:
        for item in outcomes:
            fut, ok, value = item
            if type(fut) is not CallFuture or fut._cond is not None:
                slow.append(item)
            elif fut._state in _OVER:
                bad = bad or fut
            elif ok:
                fut._result = value
                fut._state = FINISHED
            else:
                fut._exception = value
                fut._state = FINISHED
    for fut, ok, value in slow:
        if ok:
            Future.set_result(fut, value)
        else:
            Future.set_exception(fut, value)
    if bad is not None:
        raise InvalidStateError(f"{bad._state}: {bad!r}")
