"""Pickling the user's code for other processes, keeping its file names, and saying what cannot be pickled.

cloudpickle sends functions defined in a script by value. Since 3.1.3 it renames
their code's file to `<dynamic-code>`, so a remote traceback loses the user's file
name and source line. The pickler here sends code objects as `marshal` bytes
instead, which keep every file name and line table (all ranks of a job run the
same Python, which cloudpickle requires anyway), and the traceback shows the
user's file and line text wherever that file can be read.

When something cannot be pickled, `find_unpicklable` walks the object (attributes,
closures, globals the code names, containers) to name the part that fails, so the
error can say which attribute to fix instead of showing a pickler traceback.
"""
from __future__ import annotations

import io
import marshal
import pickle
import types
from typing import Any, Iterator, Optional, Sequence, Set, Tuple

from mpipipe.errors import PlanError

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _load_code(data: bytes) -> types.CodeType:
    return marshal.loads(data)


def _make_pickler(stream: io.BytesIO) -> pickle.Pickler:
    import cloudpickle

    class CodeKeepingPickler(cloudpickle.Pickler):  # type: ignore[misc,name-defined]
        """cloudpickle, except that code objects keep their real file names."""

        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is types.CodeType:
                return _load_code, (marshal.dumps(obj),)
            return super().reducer_override(obj)

    return CodeKeepingPickler(stream, protocol=_PROTOCOL)


def dumps(value: Any) -> bytes:
    """cloudpickle.dumps, with code objects that remember where they were written."""
    stream = io.BytesIO()
    _make_pickler(stream).dump(value)
    return stream.getvalue()


def dump(value: Any, file: Any) -> None:
    file.write(dumps(value))


def _children(value: Any) -> Iterator[Tuple[str, Any]]:
    """The parts of `value` a pickler would descend into, each with the path step that names it."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"[{k!r}]", v
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            yield f"[{i}]", v
        return
    if isinstance(value, types.MethodType):
        yield ".__self__", value.__self__
        yield ".__func__", value.__func__
        return
    if isinstance(value, types.FunctionType):
        code = value.__code__
        for name, cell in zip(code.co_freevars, value.__closure__ or ()):
            try:
                yield f" (closure variable {name!r})", cell.cell_contents
            except ValueError:
                continue
        names = _global_names(code)
        for name in sorted(names):
            if name in value.__globals__:
                yield f" (global {name!r})", value.__globals__[name]
        for i, d in enumerate(value.__defaults__ or ()):
            yield f" (default {i})", d
        for k, d in (value.__kwdefaults__ or {}).items():
            yield f" (default {k!r})", d
        return
    if isinstance(value, (type, types.ModuleType)):
        return
    try:
        state = value.__reduce_ex__(_PROTOCOL)
    except Exception:  # noqa: BLE001 - the object refuses; it is the culprit
        return
    if isinstance(state, tuple) and len(state) > 2 and state[2] is not None:
        st = state[2]
        if isinstance(st, tuple) and len(st) == 2:  # (dict state, slots state)
            st = {**(st[0] or {}), **(st[1] or {})}
        if isinstance(st, dict):
            for k, v in st.items():
                yield f".{k}", v
            return
        yield " (state)", st


def _global_names(code: types.CodeType) -> Set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _fails(value: Any) -> Optional[BaseException]:
    try:
        dumps(value)
    except Exception as e:  # noqa: BLE001 - any failure of the pickler is what we look for
        return e
    except RecursionError as e:
        return e
    return None


def find_unpicklable(value: Any, path: str = "") -> Tuple[str, Any, Optional[BaseException]]:
    """The deepest part of `value` that cannot be pickled: (its path, the part, the error), or ('', None, None)."""
    error = _fails(value)
    if error is None:
        return "", None, None
    seen: Set[int] = set()
    here, part = path, value
    for _ in range(50):  # deep enough for any real object; a cycle stops earlier through `seen`
        seen.add(id(part))
        for step, child in _children(part):
            if id(child) in seen:
                continue
            child_error = _fails(child)
            if child_error is not None:
                here, part, error = here + step, child, child_error
                break
        else:
            break
    return here, part, error


def describe_unpicklable(value: Any, path: str) -> str:
    """One phrase naming what cannot be pickled in `value` and why, e.g. "fn (global 'conn'), a socket: ..."."""
    where, part, error = find_unpicklable(value, path)
    if error is None:
        return ""
    kind = type(part).__module__ + "." + type(part).__qualname__
    if kind.startswith("builtins."):
        kind = kind[len("builtins."):]
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{where} (a {kind}) cannot be pickled: {reason}"



def pickle_nodes(nodes: Sequence[Any]) -> bytes:
    """The plan's nodes as one payload for the executors; a node that cannot be pickled is a one-line PlanError."""
    try:
        return dumps(list(nodes))
    except Exception as whole:  # noqa: BLE001 - turned into the user's error below
        for node in nodes:
            label = f"node {getattr(node, 'name', '?')!r}"
            what = describe_unpicklable(node, "").lstrip(".")
            if what:
                raise PlanError(f"{label}: {what}; executors receive a copy of each node, so make that value "
                                "picklable or create it inside the function") from whole
        raise PlanError(f"the plan's nodes cannot be pickled ({type(whole).__name__}: {whole})") from whole
