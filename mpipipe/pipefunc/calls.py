"""The calls pipefunc hands an executor, told apart so each function's resources can be honoured.

`pipeline.map` submits either `functools.partial(_process_chunk,
process_index=...)(chunk)` for a chunk of a mapspec'd function's elements, or
`_execute_single(func, kwargs, ...)` for a function without a mapspec. Both
carry the PipeFunc, whose `resources` and `resources_scope` say what each call
needs. This is the one place that knows those shapes; a pipefunc whose calls
look different is an error naming the versions this was written for, never a
run that silently ignores resources.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mpipipe.errors import ConfigError

SUPPORTED = "pipefunc>=0.90"


@dataclass
class MapChunk:
    """Elements `indices` of a mapspec'd function; `fn((i, j, ...))` runs them and returns one output each."""

    fn: Any
    func: Any  # the PipeFunc
    process_index: Any
    indices: Tuple[int, ...]


@dataclass
class Single:
    """One call of a function without a mapspec; `evaluated` is pipefunc's Resources for it, if any."""

    func: Any
    kwargs: Dict[str, Any]


def _internals() -> Tuple[Any, Any, Any, str]:
    """pipefunc's chunk runner, single-call runner, PipeFunc class and evaluated-resources key."""
    from pipefunc import PipeFunc
    from pipefunc.map import _run

    return _run._process_chunk, _run._execute_single, PipeFunc, _run._EVALUATED_RESOURCES


def _holds_pipefunc(fn: Any, args: Sequence[Any], pipefunc_class: Any) -> bool:
    seen = list(args)
    while isinstance(fn, functools.partial):
        seen.extend(fn.args)
        seen.extend(fn.keywords.values())
        fn = fn.func
    for value in seen:
        if isinstance(value, pipefunc_class):
            return True
        if isinstance(value, functools.partial) and isinstance(value.keywords.get("func"), pipefunc_class):
            return True
    return False


def classify(fn: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> "MapChunk | Single | None":
    """What a submitted call is: a chunk of a map, a single call, or None for a call that is not pipefunc's."""
    import sys

    if "pipefunc" not in sys.modules:
        return None
    process_chunk, execute_single, pipefunc_class, _ = _internals()
    if isinstance(fn, functools.partial) and fn.func is process_chunk and len(args) == 1 and not kwargs:
        process_index = fn.keywords.get("process_index")
        func = getattr(process_index, "keywords", {}).get("func")
        if isinstance(func, pipefunc_class):
            return MapChunk(fn, func, process_index, tuple(args[0]))
    if fn is execute_single and len(args) >= 2 and isinstance(args[0], pipefunc_class) and not kwargs:
        return Single(args[0], args[1])
    if _holds_pipefunc(fn, args, pipefunc_class):
        import pipefunc

        raise ConfigError(f"pipefunc {pipefunc.__version__} submitted a call mpipipe does not recognise "
                          f"({getattr(fn, '__qualname__', type(fn).__name__)}); mpipipe.pipefunc supports "
                          f"{SUPPORTED} as of 0.93: install one of those versions, or use mpipipe.futures.Executor "
                          "(which ignores per-function resources)")
    return None


def evaluated_resources(call: Single) -> Any:
    """pipefunc's Resources of a single call: evaluated before submission (a callable), or static."""
    _, _, _, key = _internals()
    resources = call.func.resources
    if key in call.kwargs and call.kwargs[key] is not None:
        return call.kwargs[key]
    if callable(resources):
        return resources(dict(call.kwargs))
    return resources


def element_resources(chunk: MapChunk, index: int) -> Any:
    """pipefunc's Resources of one element: the function's resources called with that element's inputs."""
    from pipefunc.map._run import _select_kwargs

    kw = chunk.process_index.keywords
    selected = _select_kwargs(chunk.func, kw["kwargs"], kw["shape"], kw["shape_mask"], index)
    return chunk.func.resources(selected)


def map_resources(chunk: MapChunk) -> Any:
    """pipefunc's Resources of a whole map: the function's resources called once with the map's inputs."""
    return chunk.func.resources(chunk.process_index.keywords["kwargs"])


def error_handling(chunk: "MapChunk | Single") -> str:
    if isinstance(chunk, MapChunk):
        return str(chunk.process_index.keywords.get("error_handling", "raise"))
    return "raise"


def output_label(func: Any) -> str:
    name = func.output_name
    return "-".join(name) if isinstance(name, tuple) else str(name)


# --- in the task: the elements of a "map"-scoped chunk ---------------------------------------------------------

_LOADED: Dict[str, Any] = {}


def _load(blob: Optional[bytes]) -> None:
    """A pool process's start: it dies with the task, runs each element on one thread, and has the chunk runner
    (inherited when forked, else unpickled)."""
    from mpipipe.execution.osutil import die_with_parent
    from mpipipe.execution.worker import THREAD_VARIABLES

    die_with_parent()
    os.environ.update((k, "1") for k in THREAD_VARIABLES)
    if blob is not None:
        import cloudpickle

        _LOADED["fn"] = cloudpickle.loads(blob)


def _run_loaded(indices: Tuple[int, ...]) -> List[Any]:
    return _LOADED["fn"](indices)


def run_elements(fn: Any, indices: Sequence[int], processes: int) -> List[Any]:
    """Run elements of a map in this task: in turn, or on a pool of `processes` processes (the task holds that
    many cores). Outputs come back in the order of `indices`."""
    indices = tuple(indices)
    if processes <= 1 or len(indices) <= 1:
        return fn(indices)
    import concurrent.futures
    import multiprocessing
    import threading

    blob: Optional[bytes] = None
    context: multiprocessing.context.BaseContext
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")  # a worker runs one thread: forking it is safe and quick
        _LOADED["fn"] = fn
    else:
        import cloudpickle

        context = multiprocessing.get_context("spawn")
        blob = cloudpickle.dumps(fn)
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(processes, len(indices)), mp_context=context,
                                                    initializer=_load, initargs=(blob,)) as pool:
            parts = list(pool.map(_run_loaded, [(i,) for i in indices]))
    finally:
        _LOADED.pop("fn", None)
    return [output for part in parts for output in part]
