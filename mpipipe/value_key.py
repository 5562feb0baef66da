"""Cache keys by value: turn a configuration value into digest bytes that equal values share in every process.

A module's result is reused when its key matches, so two values that could
give different results must never share a key, and a key must not depend on
memory addresses, hash seeds or dict/set iteration order. repr() fails the
first rule (a DataFrame or a big array prints elided), pickles fail the second
(set order, memo layout), so each value is fed into one sha256 stream as typed,
length-prefixed tokens: containers element by element, arrays and tables as
their raw buffers, objects as their class plus their state. A value whose
state cannot be read (an open file, a socket, a lock, a generator) is refused
with the path to it instead of being keyed by something that only looks like
its value.

numpy, pandas, pyarrow, omegaconf, attrs and pydantic are never imported here:
a value of their types can only exist once its library is in sys.modules.
"""
from __future__ import annotations

import array
import copyreg
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import os
import pathlib
import struct
import sys
import sysconfig
import types
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from mpipipe.errors import PlanError

__all__ = ["ValueKeyError", "value_digest", "value_hexdigest"]

_LEN = struct.Struct("<Q")
_FLOAT = struct.Struct("<d")
_FLUSH_AT = 1 << 16  # bytes buffered before they go to the hash: many small tokens, few update() calls

# Values of these modules are live resources (files, sockets, threads, locks, event loops), not data.
_RUNTIME_MODULES = frozenset({
    "_io", "io", "socket", "_socket", "ssl", "_ssl", "_thread", "threading", "queue", "_queue", "multiprocessing",
    "concurrent", "asyncio", "selectors", "select", "mmap", "sqlite3", "weakref", "_weakref", "_weakrefset",
})
_SUSPENDED = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType, types.FrameType,
              types.TracebackType)
_LRU_WRAPPER = type(functools.lru_cache()(lambda: None))
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodWrapperType, types.MethodDescriptorType,
                      types.WrapperDescriptorType, types.ClassMethodDescriptorType)


class ValueKeyError(PlanError):
    """A value that cannot be keyed by value; `path` leads to it from the root (e.g. `.config.db.conn`)."""

    def __init__(self, what: str, reason: str, hint: str) -> None:
        super().__init__(what)
        self.what = what
        self.reason = " ".join(reason.split())  # one line: the CLI prints errors as one line
        self.hint = hint
        self.root = "value"
        self.segments: List[str] = []  # innermost first: each level prepends itself while the error rises
        self.note = ""

    def __reduce__(self) -> Any:
        return type(self), (self.what, self.reason, self.hint), dict(vars(self))

    def within(self, segment: str) -> "ValueKeyError":
        self.segments.append(segment)
        return self

    @property
    def path(self) -> str:
        parts = list(reversed(self.segments))
        if len(parts) > 24:  # a deep chain: its start and its end say where it is
            parts = parts[:12] + ["..."] + parts[-12:]
        return "".join(parts)

    @property
    def top(self) -> str:
        """The first attribute on the path (what `transient` would name), or ''."""
        first = self.segments[-1] if self.segments else ""
        return first[1:] if first.startswith(".") and first[1:].isidentifier() else ""

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.root}{self.path}: {self.what} cannot be keyed by value{why}; {self.hint}{note}"


def value_digest(value: Any, root: str = "value") -> bytes:
    """The 32-byte sha256 of `value`'s content; `root` names it in a ValueKeyError's path."""
    keyer = _Keyer()
    try:
        keyer.feed(value)
    except ValueKeyError as e:
        e.root = root
        raise
    return keyer.digest()


def value_hexdigest(value: Any, root: str = "value") -> str:
    return value_digest(value, root).hex()


def _article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _library_dirs() -> Tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(sorted(dirs))


@functools.lru_cache(maxsize=None)
def _is_library_module(name: str) -> bool:
    """True for the standard library and installed packages: their functions are keyed by name, not code."""
    if name == "__main__":
        return False
    module = sys.modules.get(name)
    if module is None:
        return False  # made by exec() or loaded by value: its code is all there is
    path = getattr(module, "__file__", None)
    if not path:
        return True  # built into the interpreter
    path = os.path.realpath(path)
    return path.startswith(_library_dirs()) or any(f"{os.sep}{d}{os.sep}" in path
                                                   for d in ("site-packages", "dist-packages"))


class _Keyer:
    """One sha256 stream of tokens; `_stack` holds the containers being keyed, for cycles."""

    __slots__ = ("_h", "_buf", "_stack")

    def __init__(self, stack: Optional[Dict[int, int]] = None) -> None:
        self._h = hashlib.sha256(b"mpipipe-value-key-v1\0")
        self._buf = bytearray()
        self._stack: Dict[int, int] = {} if stack is None else stack

    # --- the token stream ---------------------------------------------------------------

    def digest(self) -> bytes:
        self._flush()
        return self._h.digest()

    def _flush(self) -> None:
        if self._buf:
            self._h.update(self._buf)
            self._buf.clear()

    def _put(self, tag: bytes, payload: bytes = b"") -> None:
        buf = self._buf
        buf += tag
        buf += _LEN.pack(len(payload))
        buf += payload
        if len(buf) >= _FLUSH_AT:
            self._flush()

    def _raw(self, tag: bytes, data: Any, nbytes: int) -> None:
        """A large buffer goes straight to the hash (no copy into the token buffer)."""
        self._put(tag, _LEN.pack(nbytes))
        self._flush()
        self._h.update(data)

    def _text(self, tag: bytes, text: str) -> None:
        self._put(tag, text.encode("utf-8", "surrogatepass"))

    def _count(self, tag: bytes, n: int) -> None:
        self._put(tag, _LEN.pack(n))

    def _name(self, qualified: str) -> None:
        self._text(b"G", qualified)

    def _header(self, kind: str, t: type) -> None:
        self._text(b"O", f"{kind}:{t.__module__}.{t.__qualname__}")

    def _sub_digest(self, value: Any) -> bytes:
        """`value` keyed on its own (same cycle stack), for order-independent collections."""
        sub = _Keyer(self._stack)
        sub.feed(value)
        return sub.digest()

    # --- atoms ------------------------------------------------------------------------------

    def _none(self, x: None) -> None:
        self._put(b"N")

    def _bool(self, x: bool) -> None:
        self._put(b"T" if x else b"F")

    def _int(self, x: int) -> None:
        self._put(b"i", x.to_bytes(x.bit_length() // 8 + 1, "little", signed=True))

    def _float(self, x: float) -> None:
        self._put(b"f", b"nan" if x != x else _FLOAT.pack(x))  # every NaN alike; -0.0 stays apart from 0.0

    def _complex(self, x: complex) -> None:
        self._put(b"j")
        self._float(x.real)
        self._float(x.imag)

    def _str(self, x: str) -> None:
        self._text(b"s", x)

    def _bytes(self, x: bytes) -> None:
        self._put(b"b", x)

    def _bytearray(self, x: bytearray) -> None:
        self._put(b"y", bytes(x))

    # --- entry ----------------------------------------------------------------------------------

    def feed(self, x: Any) -> None:
        atom = _ATOMS.get(type(x))
        if atom is not None:
            atom(self, x)
            return
        oid = id(x)
        depth = self._stack.get(oid)
        if depth is not None:  # a cycle: key the back-reference by how far up its target is
            self._count(b"R", depth)
            return
        self._stack[oid] = len(self._stack)
        try:
            self._compound(x)
        except RecursionError:
            raise ValueKeyError("a value nested this deeply", "Python's recursion limit was reached",
                                "store it with mpipipe.refs.store() and keep the reference instead") from None
        finally:
            del self._stack[oid]

    def _items(self, values: Iterable[Any], segment: Callable[[int], str]) -> None:
        for i, v in enumerate(values):
            try:
                self.feed(v)
            except ValueKeyError as e:
                raise e.within(segment(i))

    def _attributes(self, state: Mapping[str, Any]) -> None:
        """Named state (attributes, fields): sorted by name, since their order does not change a result."""
        if not all(type(k) is str for k in state):
            self._dict(state)
            return
        names = sorted(state)
        self._count(b"A", len(names))
        for name in names:
            self._text(b"a", name)
            try:
                self.feed(state[name])
            except ValueKeyError as e:
                raise e.within(f".{name}")

    def _compound(self, x: Any) -> None:
        t = type(x)
        if t is list:
            self._count(b"L", len(x))
            self._items(x, _index)
        elif t is tuple:
            self._count(b"U", len(x))
            self._items(x, _index)
        elif t is dict:
            self._dict(x)
        elif t is set or t is frozenset:
            self._set(x, b"S" if t is set else b"Z")
        else:
            self._object(x, t)

    def _dict(self, x: Mapping[Any, Any]) -> None:
        """Insertion order is part of a dict's key: code may depend on it (columns, argument order)."""
        self._count(b"D", len(x))
        for i, (k, v) in enumerate(x.items()):
            try:
                self.feed(k)
            except ValueKeyError as e:
                raise e.within(f"<key {i}>")
            try:
                self.feed(v)
            except ValueKeyError as e:
                raise e.within(_key_segment(k))

    def _set(self, x: Iterable[Any], tag: bytes) -> None:
        digests = []
        for v in x:
            try:
                digests.append(self._sub_digest(v))
            except ValueKeyError as e:
                raise e.within("{...}")
        digests.sort()  # iteration order follows the hash seed; sorted digests do not
        self._put(tag, b"".join(digests))

    # --- everything that is not a plain container ---------------------------------------------

    def _object(self, x: Any, t: type) -> None:
        if t.__module__ == "mpipipe.refs" and isinstance(getattr(x, "digest", None), str):
            self._text(b"Q", f"{t.__name__}:{x.digest}")  # a stored value: its content digest stands for it
            return
        if _is_mpipipe_module(t):
            self._header("module", t)
            self._text(b"v", str(x.version()))
            self._attributes(x.cache_config())
            return
        if isinstance(x, type):
            self._name(f"{x.__module__}.{x.__qualname__}")
            return
        if isinstance(x, types.ModuleType):
            self._name(f"module:{x.__name__}")
            return
        if isinstance(x, enum.Enum):
            self._header("enum", t)
            self._text(b"e", str(x.name))
            try:
                self.feed(x.value)
            except ValueKeyError as e:
                raise e.within(".value")
            return
        if self._callable(x, t):
            return
        if isinstance(x, _SUSPENDED) or _is_runtime(t) or _is_popen(x):
            raise self._refuse(x, t, "")
        root = t.__module__.partition(".")[0]
        if self._library_value(x, t, root):
            return
        if dataclasses.is_dataclass(x):
            self._header("dataclass", t)
            self._attributes({f.name: getattr(x, f.name) for f in dataclasses.fields(x)})
            return
        attrs_fields = getattr(t, "__attrs_attrs__", None)
        if attrs_fields is not None:
            self._header("attrs", t)
            self._attributes({a.name: getattr(x, a.name) for a in attrs_fields})
            return
        if self._pydantic(x, t):
            return
        if self._stdlib_value(x, t):
            return
        self._reduced(x, t)

    # --- code ---------------------------------------------------------------------------------

    def _callable(self, x: Any, t: type) -> bool:
        if t is types.FunctionType:
            self._function(x)
        elif t is types.MethodType:
            self._header("method", t)
            try:
                self.feed(x.__self__)
            except ValueKeyError as e:
                raise e.within(".__self__")
            self.feed(x.__func__)
        elif t is functools.partial:
            self._header("partial", t)
            self._items((x.func, x.args, x.keywords), lambda i: (".func", ".args", ".keywords")[i])
        elif isinstance(x, _BUILTIN_CALLABLES):
            owner = getattr(x, "__self__", None)
            where = getattr(x, "__module__", None) or getattr(getattr(x, "__objclass__", None), "__module__", "")
            self._name(f"builtin:{where}.{getattr(x, '__qualname__', getattr(x, '__name__', '?'))}")
            if owner is not None and not isinstance(owner, (types.ModuleType, type)):
                try:
                    self.feed(owner)  # a bound method of a value, such as a dict's .get
                except ValueKeyError as e:
                    raise e.within(".__self__")
        elif t is types.CodeType:
            self._code(x)
        elif t is _LRU_WRAPPER and isinstance(getattr(x, "__wrapped__", None), types.FunctionType):
            self._header("cached-function", t)
            self._function(x.__wrapped__)
        else:
            return False
        return True

    def _function(self, fn: types.FunctionType) -> None:
        """Code, defaults, closure values and the globals it reads; functions of installed packages by name."""
        if _is_library_module(fn.__module__ or ""):
            self._name(f"function:{fn.__module__}.{fn.__qualname__}")
            return
        self._text(b"F", f"{fn.__module__}.{fn.__qualname__}")
        self._code(fn.__code__)
        for segment, value in ((".__defaults__", fn.__defaults__), (".__kwdefaults__", fn.__kwdefaults__)):
            try:
                self.feed(value)
            except ValueKeyError as e:
                raise e.within(segment)
        cells = fn.__closure__ or ()
        self._count(b"c", len(cells))
        for name, cell in zip(fn.__code__.co_freevars, cells):
            self._text(b"a", name)
            try:
                value = cell.cell_contents
            except ValueError:  # a variable not assigned yet
                self._put(b"E")
                continue
            try:
                self.feed(value)
            except ValueKeyError as e:
                raise e.within(f".<closure {name}>")
        names = sorted(n for n in _global_names(fn.__code__) if n in fn.__globals__)
        self._count(b"g", len(names))
        for name in names:
            self._text(b"a", name)
            try:  # a global that is not data (a logger, a client) stands by its name: it is code's environment
                self._put(b"d", self._sub_digest(fn.__globals__[name]))
            except ValueKeyError:
                self._put(b"o")
        if fn.__dict__:
            try:
                self._attributes(fn.__dict__)
            except ValueKeyError as e:
                raise e.within(".__dict__")

    def _code(self, co: types.CodeType) -> None:
        """What the code does, not where it sits: bytecode, constants and names, no file or line numbers."""
        self._text(b"C", co.co_name)
        self._count(b"n", co.co_argcount)
        self._count(b"n", co.co_posonlyargcount)
        self._count(b"n", co.co_kwonlyargcount)
        self._count(b"n", co.co_flags)
        self._put(b"b", co.co_code)
        self._put(b"b", getattr(co, "co_exceptiontable", b""))
        for names in (co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars):
            self._count(b"U", len(names))
            for name in names:
                self._str(name)
        self.feed(co.co_consts)

    # --- numpy, pandas, pyarrow, omegaconf: by content ------------------------------------------

    def _library_value(self, x: Any, t: type, root: str) -> bool:
        np = sys.modules.get("numpy")
        if np is not None and isinstance(x, (np.ndarray, np.generic, np.dtype)):
            if isinstance(x, np.ndarray):
                self._ndarray(x, np)
            elif isinstance(x, np.generic):
                self._header("numpy-scalar", t)
                self._dtype(x.dtype)
                if x.dtype.hasobject or x.dtype.kind not in _RAW_KINDS:
                    self.feed(x.item())
                else:
                    self._put(b"b", np.asarray(x).tobytes())
            else:
                self._header("numpy-dtype", t)
                self._dtype(x)
            return True
        if root == "pandas" or _subclasses_module(t, "pandas"):
            return self._pandas(x)
        if root == "pyarrow":
            return self._arrow(x)
        if root == "omegaconf":
            return self._omegaconf(x, t)
        return False

    def _dtype(self, dtype: Any) -> None:
        self._text(b"t", dtype.str)
        if dtype.names is not None:  # structured: the field names, types and offsets
            self.feed(dtype.descr)

    def _ndarray(self, a: Any, np: Any) -> None:
        t = type(a)
        self._header("ndarray", t)
        self._dtype(a.dtype)
        self.feed(a.shape)
        if a.dtype.hasobject or a.dtype.kind not in _RAW_KINDS:
            flat = a.reshape(-1)
            values = flat.tolist() if a.dtype.names is None else [v.item() for v in flat]
            self._elements(values)
        else:
            c = np.ascontiguousarray(a)
            self._raw(b"r", c.reshape(-1).view(np.uint8), c.nbytes)
        if isinstance(a, np.ma.MaskedArray):
            self._ndarray(np.ma.getmaskarray(a), np)
            self.feed(a.fill_value)
        elif t is not np.ndarray and not isinstance(a, np.memmap) and getattr(a, "__dict__", None):
            self._attributes(vars(a))  # a subclass's own state (units, metadata)

    def _elements(self, values: List[Any]) -> None:
        """Object elements one by one; all-string columns (the common case) in one pass."""
        if values and set(map(type, values)) == {str}:
            encoded = [v.encode("utf-8", "surrogatepass") for v in values]
            lengths = array.array("Q", map(len, encoded))
            if sys.byteorder != "little":
                lengths.byteswap()
            self._count(b"W", len(encoded))
            self._put(b"l", lengths.tobytes())
            self._put(b"b", b"".join(encoded))
            return
        self._count(b"L", len(values))
        self._items(values, _index)

    def _pandas(self, x: Any) -> bool:
        pd = sys.modules["pandas"]
        if isinstance(x, pd.DataFrame):
            self._header("pandas", type(x))
            self.feed(x.shape)
            self._labels(x.columns, ".columns")
            self._labels(x.index, ".index")
            for j in range(x.shape[1]):
                try:
                    self._pandas_values(x.iloc[:, j].array, pd)
                except ValueKeyError as e:
                    raise e.within(_key_segment(x.columns[j]))
            self._attrs_of(x)
        elif isinstance(x, pd.Series):
            self._header("pandas", type(x))
            try:
                self.feed(x.name)
            except ValueKeyError as e:
                raise e.within(".name")
            self._labels(x.index, ".index")
            self._pandas_values(x.array, pd)
            self._attrs_of(x)
        elif isinstance(x, pd.Index):
            self._index(x, pd)
        elif isinstance(x, pd.api.extensions.ExtensionArray):
            self._header("pandas", type(x))
            self._pandas_values(x, pd)
        else:
            return False  # scalars (Timestamp, NA, Period): by their pickled state
        return True

    def _attrs_of(self, x: Any) -> None:
        try:
            self.feed(dict(x.attrs))
        except ValueKeyError as e:
            raise e.within(".attrs")

    def _labels(self, index: Any, segment: str) -> None:
        try:
            self.feed(index)
        except ValueKeyError as e:
            raise e.within(segment)

    def _index(self, idx: Any, pd: Any) -> None:
        self._header("pandas", type(idx))
        self.feed(list(idx.names))
        if isinstance(idx, pd.RangeIndex):
            self.feed((idx.start, idx.stop, idx.step))
        elif isinstance(idx, pd.MultiIndex):
            self._items(idx.levels, lambda i: f".levels[{i}]")
            self._items([c for c in idx.codes], lambda i: f".codes[{i}]")
        else:
            self.feed(getattr(idx, "freqstr", None))
            self._pandas_values(idx.array, pd)

    def _pandas_values(self, arr: Any, pd: Any) -> None:
        """One column's values: numpy-backed by their bytes, object by element, others through Arrow."""
        np = sys.modules["numpy"]
        dtype = arr.dtype
        self._text(b"t", f"{type(dtype).__name__}:{dtype}")
        if isinstance(arr, np.ndarray):
            self._ndarray(arr, np)
        elif isinstance(dtype, pd.CategoricalDtype):
            self._labels(dtype.categories, ".categories")
            self._bool(bool(dtype.ordered))
            self._ndarray(np.asarray(arr.codes), np)
        elif isinstance(dtype, np.dtype) or isinstance(arr, _numpy_backed(pd)):  # naive datetimes, timedeltas
            self._ndarray(arr.to_numpy(), np)
        else:
            converted = None
            if hasattr(arr, "__arrow_array__") or isinstance(dtype, pd.DatetimeTZDtype):
                import pyarrow as pa  # an install requirement of mpipipe; only needed for extension arrays

                try:
                    converted = pa.array(arr)
                except (pa.ArrowException, TypeError, ValueError):
                    converted = None
            if converted is not None:
                self._arrow(converted)
            else:
                self._elements(np.asarray(arr, dtype=object).tolist())

    def _arrow(self, x: Any) -> bool:
        pa = sys.modules["pyarrow"]
        t = type(x)
        if isinstance(x, (pa.Table, pa.RecordBatch, pa.Array, pa.ChunkedArray)):
            try:
                batch = _one_batch(x, pa)
            except pa.ArrowException:  # e.g. chunks that cannot be concatenated: their Python values then
                self._header("arrow-values", t)
                self._arrow(x.schema if hasattr(x, "schema") else x.type)
                self._elements(x.to_pylist())
                return True
        elif isinstance(x, pa.Schema):
            self._header("arrow", t)
            buf = x.serialize()
            self._raw(b"r", buf, buf.size)
            return True
        elif isinstance(x, (pa.DataType, pa.Field)):
            self._header("arrow", t)
            buf = pa.schema([x if isinstance(x, pa.Field) else pa.field("", x)]).serialize()
            self._raw(b"r", buf, buf.size)
            return True
        elif isinstance(x, pa.Scalar):
            column = pa.array([x], type=x.type)
            batch = pa.RecordBatch.from_arrays([column], schema=pa.schema([pa.field("", column.type)]))
        else:
            return False
        self._header("arrow", t)
        self._put(b"p")
        self._flush()
        sink = pa.PythonFile(_HashSink(self._h), mode="w")
        with pa.ipc.new_stream(sink, batch.schema) as writer:  # the IPC stream: schema, then each buffer
            writer.write_batch(batch)
        return True

    def _omegaconf(self, x: Any, t: type) -> bool:
        oc = sys.modules["omegaconf"]
        if not isinstance(x, (oc.DictConfig, oc.ListConfig)):
            return False
        self._header("omegaconf", t)
        kind = oc.OmegaConf.get_type(x)
        self._name(f"{kind.__module__}.{kind.__qualname__}" if isinstance(kind, type) else repr(kind))
        try:
            content = oc.OmegaConf.to_container(x, resolve=True, throw_on_missing=False)
        except Exception as e:  # noqa: BLE001  an interpolation that cannot be resolved
            raise ValueKeyError("an OmegaConf config that cannot be resolved", f"{type(e).__name__}: {e}",
                                "fix the interpolation, or resolve the config before keeping it") from None
        self.feed(content)
        return True

    # --- attrs-like libraries and the standard library -----------------------------------------

    def _pydantic(self, x: Any, t: type) -> bool:
        """Pydantic models by their field values (not model_dump: it drops excluded fields and applies serializers)."""
        if not _subclasses_module(t, "pydantic"):
            return False
        fields = t.__dict__.get("__pydantic_fields__") or getattr(t, "__pydantic_fields__", None)
        if fields is None:
            fields = getattr(t, "__fields__", None)  # pydantic v1 (and pydantic.v1)
        if not isinstance(fields, Mapping):
            return False
        self._header("pydantic", t)
        self._attributes({name: getattr(x, name) for name in fields})
        extra = getattr(x, "__pydantic_extra__", None)
        try:
            self.feed(dict(extra) if extra else None)
        except ValueKeyError as e:
            raise e.within(".__pydantic_extra__")
        return True

    def _stdlib_value(self, x: Any, t: type) -> bool:
        if t is datetime.datetime or t is datetime.time:
            self._header("time", t)
            self._text(b"s", x.isoformat())
            self._count(b"n", x.fold)
            self.feed(x.tzinfo)
        elif t is datetime.date:
            self._header("time", t)
            self._text(b"s", x.isoformat())
        elif t is datetime.timedelta:
            self._header("time", t)
            self.feed((x.days, x.seconds, x.microseconds))
        elif t is decimal.Decimal:
            self._header("decimal", t)
            self._text(b"s", str(x))  # exact, and keeps the exponent (1.0 and 1.00 format differently)
        elif isinstance(x, pathlib.PurePath):
            self._header("path", t)
            self._text(b"s", os.fspath(x))
        elif t is memoryview:
            self._header("memoryview", t)
            self._text(b"t", x.format)
            self.feed(x.shape)
            self._put(b"b", x.tobytes())
        elif t is range:
            self._header("range", t)
            self.feed((x.start, x.stop, x.step))
        elif "logging" in sys.modules and isinstance(x, sys.modules["logging"].Logger):
            self._header("logger", t)
            self._text(b"s", x.name)  # getLogger(name) gives it back: its name is what it is
        else:
            return False
        return True

    def _reduced(self, x: Any, t: type) -> None:
        """Any other object by what pickle would save: its class and its state.

        CPython refuses to pickle an object whose state lives in C fields it
        cannot see, so this reads a full state or raises; it never keys an
        object by its class alone.
        """
        try:
            reducer = copyreg.dispatch_table.get(t)  # where libraries register reducers (numpy's ufuncs)
            rv = reducer(x) if reducer is not None else x.__reduce_ex__(4)
        except Exception as e:  # noqa: BLE001  user __reduce__ may raise anything
            raise self._refuse(x, t, f"its state cannot be read: {type(e).__name__}: {e}") from None
        if isinstance(rv, str):  # pickled as a reference to a named global
            self._name(f"global:{getattr(x, '__module__', None) or t.__module__}.{rv}")
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise self._refuse(x, t, "its pickled form is not understood")
        func, args = rv[0], rv[1]
        state, listitems, dictitems = (tuple(rv[2:5]) + (None, None, None))[:3]
        self._text(b"P", _callable_name(func))
        if func is getattr(copyreg, "__newobj__", None) or func is getattr(copyreg, "__newobj_ex__", None):
            self._header("object", args[0] if args and isinstance(args[0], type) else t)
            args = args[1:]
        self._count(b"U", len(args))
        self._items(args, lambda i: f".<argument {i}>")
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            merged = dict(state[1] or {})  # __slots__ values
            merged.update(state[0] or {})
            state = merged
        if isinstance(state, dict) and all(type(k) is str for k in state):
            self._attributes(state)
        else:
            try:
                self.feed(state)
            except ValueKeyError as e:
                raise e.within(".<state>")
        self.feed(None if listitems is None else list(listitems))
        self.feed(None if dictitems is None else list(dictitems))

    def _refuse(self, x: Any, t: type, reason: str) -> ValueKeyError:
        name = _type_name(t)
        root = t.__module__.partition(".")[0]
        if isinstance(x, _SUSPENDED):
            what, hint = f"{_article(name)} (a running computation)", \
                "pass the values it would produce as a list, or make it inside run()"
        elif root in ("_io", "io") or root == "mmap":
            what, hint = f"{_article(name)} (an open file or stream)", \
                "keep its path on the module and open it inside run()"
        elif root in ("socket", "_socket", "ssl", "_ssl", "sqlite3", "select", "selectors"):
            what, hint = _article(name), "keep the address or path on the module and connect inside run()"
        elif _is_runtime(t) or _is_popen(x):
            what, hint = _article(name), "create it inside run(), or keep only plain settings on the module"
        else:
            what, hint = _article(name), ("keep what identifies it (a path, a name, numbers) on the module "
                                          "and build it inside run()")
        return ValueKeyError(what, reason, hint)


class _HashSink:
    """A write-only file for pyarrow's IPC writer that feeds a hash instead of storing the bytes."""

    closed = False

    def __init__(self, h: Any) -> None:
        self._h = h

    def write(self, data: Any) -> int:
        self._h.update(data)
        return len(memoryview(data))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


# numpy kinds whose bytes are the values (object and StringDType arrays hold pointers)
_RAW_KINDS = frozenset("biufcmMSUV")


def _numpy_backed(pd: Any) -> type:
    arrays = pd.arrays
    return getattr(arrays, "NumpyExtensionArray", None) or arrays.PandasArray  # the latter in pandas 2.0


def _one_batch(x: Any, pa: Any) -> Any:
    """A table, batch or column as one record batch of unsliced arrays: chunking and slicing do not change a key."""
    if isinstance(x, (pa.Table, pa.RecordBatch)):
        return pa.RecordBatch.from_arrays([_whole(c, pa) for c in x.columns], schema=x.schema)
    column = _whole(x, pa)
    return pa.RecordBatch.from_arrays([column], schema=pa.schema([pa.field("", column.type)]))


def _whole(column: Any, pa: Any) -> Any:
    """One unsliced array for a column: chunking and slice offsets must not change the key."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return pa.concat_arrays(chunks) if chunks else pa.array([], type=column.type)


def _index(i: int) -> str:
    return f"[{i}]"


def _key_segment(key: Any) -> str:
    if type(key) in (str, int, bool, float) or key is None:
        text = repr(key)
        return f"[{text[:60]}...]" if len(text) > 64 else f"[{text}]"
    return f"[<{type(key).__name__} key>]"


def _callable_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def _global_names(co: types.CodeType) -> Iterable[str]:
    """Names the code (and the code nested in it: lambdas, comprehensions) may read as globals."""
    yield from co.co_names
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _subclasses_module(t: type, root: str) -> bool:
    return any(c.__module__.partition(".")[0] == root for c in t.__mro__)


def _is_mpipipe_module(t: type) -> bool:
    return any(c.__module__ == "mpipipe.module" and c.__qualname__ == "Module" for c in t.__mro__)


def _is_runtime(t: type) -> bool:
    return any(c.__module__.partition(".")[0] in _RUNTIME_MODULES for c in t.__mro__)


def _is_popen(x: Any) -> bool:
    subprocess = sys.modules.get("subprocess")
    return subprocess is not None and isinstance(x, subprocess.Popen)


_ATOMS: Dict[type, Callable[[_Keyer, Any], None]] = {
    type(None): _Keyer._none,
    bool: _Keyer._bool,
    int: _Keyer._int,
    float: _Keyer._float,
    complex: _Keyer._complex,
    str: _Keyer._str,
    bytes: _Keyer._bytes,
    bytearray: _Keyer._bytearray,
}
