"""What one task attempt gives back, as a worker reports it: its value as JSON, or its error described.

Shared by the worker's two ways of running tasks (one by one, and a range at a
time): a value is JSON text for the journal (numpy scalars become numbers);
an error is one line, the user's traceback, and whether memory ran out.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Dict, Optional, Tuple

from mpipipe.execution.task import VALUE_INLINE_BYTES, value_ref, write_value

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside mpipipe: the user's code, not our plumbing."""
    tb = exc.__traceback__
    ours = _PACKAGE_DIR + os.sep
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


_NUMPY_SCALARS = [0]  # how many numpy scalars _plain_number has turned into numbers in this process


def _plain_number(obj: Any) -> Any:
    """json's fallback for a value: a numpy scalar or 0-d array is the Python number it holds (a task that
    returns np.mean(...) is not an error); anything else is refused as json refuses it."""
    if getattr(obj, "ndim", None) == 0 and type(obj).__module__ == "numpy":
        _NUMPY_SCALARS[0] += 1
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_VALUE_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_plain_number)


def encode_value(value: Any) -> Tuple[str, Any]:
    """A task's value as JSON text, and the value rank 0 gets: numpy scalars become Python numbers. Only a
    value that held one is read back from its text, so a plain value costs one encode, as before."""
    seen = _NUMPY_SCALARS[0]
    text = _VALUE_ENCODER.encode(value)
    if _NUMPY_SCALARS[0] != seen:
        return text, json.loads(text)
    if type(value) is not float and isinstance(value, float):  # np.float64 is a float: json took it as one
        return text, float(value)
    return text, value


def _library_dirs() -> Tuple[str, ...]:
    import sysconfig

    dirs = {_PACKAGE_DIR}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            dirs.add(os.path.realpath(path))
            dirs.add(path)
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


def _has_user_frame(exc: BaseException) -> bool:
    """Whether any frame of the traceback is the user's code (not mpipipe's, the standard library's or an
    installed package's; a compiled package's frames name its Cython sources, e.g. pyarrow/error.pxi)."""
    libs = _library_dirs()
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith("<") and not name.startswith(libs) and not name.endswith((".pyx", ".pxi", ".pxd")):
            return True
        tb = tb.tb_next
    return False


def _is_class(exc: BaseException, name: str, modules: Tuple[str, ...]) -> bool:
    return any(c.__name__ == name and c.__module__.lstrip("_").startswith(modules) for c in type(exc).__mro__)


def _reported_traceback(exc: BaseException, tb: str) -> str:
    """The traceback the failure report shows: the user's code's. A data, SQL or file system error that
    mpipipe's own steps ran into (a corrupt file, a failed query, a full disk) says in its message what and
    where, and shows none; the task's log keeps it either way."""
    described = (isinstance(exc, OSError) or _is_class(exc, "DataError", ("mpipipe.",))
                 or _is_class(exc, "Error", ("duckdb",)))
    return "" if described and not _has_user_frame(exc) else tb


def _out_of_memory(exc: BaseException) -> bool:
    """A memory failure, which is retried with more memory: Python's MemoryError, or DuckDB's out-of-memory
    error (DuckDB stops at its memory limit instead of raising MemoryError)."""
    return isinstance(exc, MemoryError) or _is_class(exc, "OutOfMemoryException", ("duckdb",))


def describe_failure(exc: BaseException) -> Tuple[str, Dict[str, Any]]:
    """(the traceback for the task's log, the failure's info for its Result: error, traceback, oom)."""
    tb = _user_traceback(exc)
    if isinstance(exc, TypeError) and "JSON serializable" in str(exc):
        msg = (f"the task returned a value that is not JSON-serializable ({exc}); return paths, numbers, strings, "
               "lists or dicts")
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return tb, {"error": msg, "traceback": _reported_traceback(exc, tb), "oom": _out_of_memory(exc)}


def maybe_strike(faults: Any, key: str, attempt: int) -> None:
    """Testing (--inject-faults): fail the attempt the way the fault plan says, after the body ran and before
    its output is committed."""
    fault = faults.choose(key, attempt) if faults is not None else None
    if fault is not None:
        print(f"mpipipe: injecting a fault ({fault}) into this attempt", file=sys.stderr, flush=True)
        from mpipipe.execution.faults import strike

        strike(fault)


def spill(text: str, job_dir: str, node_name: str, partition: int, attempt: int, rank: int) -> Optional[str]:
    """A value above VALUE_INLINE_BYTES of JSON goes to a file that the journal names: its reference (None when
    the value stays inline)."""
    if len(text) <= VALUE_INLINE_BYTES:
        return None
    ref = value_ref(node_name, partition, attempt, rank)
    write_value(job_dir, ref, text)
    return ref


def drop_spilled(job_dir: str, ref: Optional[str]) -> None:
    """The value file of an attempt that failed after writing it."""
    if ref is not None:
        try:
            os.unlink(os.path.join(job_dir, ref))
        except OSError:
            pass
