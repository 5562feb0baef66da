"""A call (fn, args, kwargs) as a task: the node whose partitions are calls, running one, packing its
outcome for the journal and reading it back.

Kept apart from mpipipe.futures (the Executor, which imports the launchers): a
worker process unpickles a CallNode for every batch of calls, and importing
the launchers there would cost each worker more than its calls.
"""
from __future__ import annotations

import base64
import functools
import os
import pickle
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mpipipe.logical.plan import Context, Node

INLINE_BYTES = 16 * 1024  # results up to this size travel in the journal record; larger ones in a file
Call = Tuple[Callable[..., Any], tuple, dict]


def _outcome_blob(outcome: Tuple[bool, Any]) -> bytes:
    """A call's (ok, value or (exception, traceback text)) pickled; an unpicklable one becomes a TypeError."""
    from mpipipe import pickling

    try:
        return pickling.dumps(outcome)
    except Exception as e:  # noqa: BLE001  an unpicklable result or exception
        what = "result" if outcome[0] else "exception"
        return pickling.dumps((False, TypeError(f"the call's {what} cannot be pickled: {type(e).__name__}: {e}")))


_PLAIN = (int, float, bool, type(None))  # results that JSON gives back as they were (and str, below)


def _pack(outcome: Tuple[bool, Any], spill: str) -> Dict[str, Any]:
    """A call's outcome, small enough for the journal or else written to `spill`. A plain result (a number,
    a short string, a bool, None) is kept as it is, with no pickle: what most tiny calls return."""
    ok, got = outcome
    if ok and (type(got) in _PLAIN or (type(got) is str and len(got) <= INLINE_BYTES)):
        return {"value": got}
    blob = _outcome_blob(outcome)
    if len(blob) <= INLINE_BYTES:
        return {"inline": base64.b64encode(blob).decode()}
    from mpipipe.module_cache import write_result

    write_result(spill, outcome)
    return {"file": spill}


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a task, attached as its __cause__."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


def _settled(ok: bool, got: Any) -> Tuple[bool, Any]:
    """(ok, value) or (False, the exception with its remote traceback as __cause__)."""
    if ok:
        return True, got
    if isinstance(got, tuple):
        exc, text = got
        exc.__cause__ = RemoteTraceback(text)
        return False, exc
    return False, got


def unpack_outcome(value: Any) -> Tuple[bool, Any]:
    """A task's value back as (ok, result or exception): a plain result as it is, else what _pack made."""
    if type(value) is not dict:
        return True, value
    if "value" in value:
        return True, value["value"]
    if "inline" in value:
        ok, got = pickle.loads(base64.b64decode(value["inline"]))
    else:
        from mpipipe.ownership import check_trusted_file

        check_trusted_file(value["file"], "the call's result")  # a pickle runs code: only one this user wrote
        with open(value["file"], "rb") as f:
            ok, got = pickle.load(f)
        os.remove(value["file"])
    return _settled(ok, got)


def _call(call: Call) -> Tuple[bool, Any]:
    """Run one call; its exception, with the traceback text, is the outcome rather than a task failure."""
    fn, args, kwargs = call
    try:
        return True, fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  the caller's future gets it, with the remote traceback as its cause
        return False, (e, traceback.format_exc())


def _fn_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", type(fn).__name__)


def _describe(calls: Sequence[Call]) -> str:
    names = sorted({_fn_name(fn) for fn in {call[0] for call in calls}})
    return "calls of " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


class CallNode(Node):
    """Partition i calls fn(*args, **kwargs) of calls[i]; the outcome, even an exception, is the task's value.
    On a non-world launcher the node is one array named `label` (job names, work folders), its comment the
    description."""

    kind = "call"

    def __init__(self, ctx: Context, calls: List[Call], name: str, spill_dir: str, resources: Any = None,
                 description: Optional[str] = None, label: Optional[str] = None) -> None:
        self.calls = calls
        self.spill_dir = spill_dir
        self.description = description
        self.array_name = label or name
        self.what = description or _describe(calls)
        self.array_comment = description or f"mpipipe.futures: {self.what}"
        super().__init__(ctx, (), len(calls), name=name, resources=resources)

    def describe(self) -> str:
        return self.what

    def __getstate__(self) -> Dict[str, Any]:
        """Shipped as columns when every call runs the same function without keywords (what submit() in a
        loop and map() make): the function once and each call's arguments, not a (fn, args, kwargs) per call,
        which is a third of the objects to pickle and load."""
        state = super().__getstate__()
        calls = state["calls"]
        if calls:
            fn = calls[0][0]
            if all(call[0] is fn and not call[2] for call in calls):
                state["calls"] = (fn, [call[1] for call in calls])
        return state

    def call(self, partition: int) -> Call:
        """The call of one partition, from either form (as submitted, or as shipped in columns)."""
        calls = self.calls
        if type(calls) is tuple:
            return calls[0], calls[1][partition], {}
        return calls[partition]

    def run_task(self, task: Any) -> Any:
        outcome = _call(self.call(task.partition))
        ok, got = outcome
        if ok and (type(got) in _PLAIN or (type(got) is str and len(got) <= INLINE_BYTES)):
            return got  # a plain result is the task's value as it is (a packed outcome is always a dict)
        return _pack(outcome, os.path.join(self.spill_dir, f"{task.partition}.a{task.attempt}.pkl"))
