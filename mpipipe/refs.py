"""Large inputs passed by reference: store a big value once, ship a small handle.

Tasks are pickled (cloudpickle) and sent to other processes and hosts; a task
that captures a 50 MB value would send 50 MB every time. Instead the value is
stored once in a folder every host can see (a shared filesystem), and the
task carries a reference of a few hundred bytes that loads the value lazily
where it is used:

    ref = store(big_model, "/shared/refs")      # ValueRef, written once
    arr = store_array(samples, "/shared/refs")   # ArrayRef over many elements
    arr.element(7)                               # ElementRef: loads element 7 only

Files are content-addressed (named after a sha256 of their bytes), so storing
the same content twice writes once, and `Ref.digest` is a stable cache-key
component that stands for the value without hashing it again.

Loading a ref unpickles a file, which runs code: the folder is made
owner-only, and a file that the current user does not own, or that sits in a
folder others can write, is refused (PlanError) instead of loaded.

This module is engine-free on purpose: only the standard library and
cloudpickle (imported lazily), so refs can be made and loaded anywhere.
"""
from __future__ import annotations

import array
import hashlib
import operator
import os
import pickle
import struct
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mpipipe.errors import JournalError, PlanError
from mpipipe.ownership import PRIVATE_DIR, check_private_dir, check_trusted_file, is_trusted_file
from mpipipe import context

__all__ = ["ArrayRef", "ElementRef", "Ref", "ValueRef", "resolve", "store", "store_array"]

_UNSET: Any = object()  # memo sentinel: None is a legitimate stored value
_OFFSET = struct.Struct("<Q")  # index entries: little-endian uint64 byte offsets
_ARRAY_TAG = b"mpipipe-array-v1\0"  # keeps array digests apart from value digests
_PROTOCOL = 5


def _dumps(value: Any, what: str) -> bytes:
    """Cloudpickle, so lambdas and classes defined in __main__ load on other hosts."""
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=_PROTOCOL)
    except Exception as exc:  # a user's __reduce__ may raise anything; say which value it was
        raise PlanError(f"{what} cannot be pickled ({type(exc).__name__}: {exc}); store only values cloudpickle "
                        "can pickle (no locks, open files, sockets or live connections)") from exc


def _missing(path: str) -> JournalError:
    return JournalError(f"the reference points to {path}, which is missing; store the value again")


def _damaged(path: str, what: str) -> JournalError:
    return JournalError(f"the reference points to {path}, which is {what}; store the value again")


def _unreadable(path: str, exc: OSError) -> JournalError:
    if isinstance(exc, FileNotFoundError):
        return _missing(path)
    return JournalError(f"the reference points to {path}, which cannot be read ({exc.strerror or exc}); "
                        "check the folder is mounted and readable on this host, or store the value again")


def _loads(data: bytes, path: str) -> Any:
    """Unpickle, turning a damaged file into a one-line JournalError instead of a pickle traceback."""
    try:
        return pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, OverflowError,
            struct.error) as exc:
        raise _damaged(path, f"truncated or damaged ({type(exc).__name__})") from None


def _check_trusted(path: str) -> None:
    """Refuse a file someone else could have written: unpickling it would run their code as this user."""
    if is_trusted_file(path):
        return
    try:
        os.stat(path)
    except OSError:
        return  # the read that follows says it is missing or unreadable
    try:
        check_trusted_file(path, "the reference file")
    except JournalError as exc:
        raise PlanError(f"{exc}; store the value again in a folder of your own") from None
    raise PlanError(f"the reference file {path} is not loaded: it is not a regular file; store the value again")


def _read_range(path: str, start: int, size: int) -> bytes:
    """Read exactly `size` bytes at `start`: the only way element bytes are read (tests spy on it)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if len(data) != size:
        raise _damaged(path, f"truncated (wanted {size} bytes at offset {start}, got {len(data)})")
    return data


def _read_all(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _has_size(path: str, size: int) -> bool:
    """An existing file of the right size is the content (the name is its hash); anything else is rewritten."""
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


def _load_element(path: str, index_path: str, i: int) -> Any:
    """Read two offsets from the index, then only element i's bytes from the data file."""
    _check_trusted(index_path)  # the offsets decide which bytes are unpickled
    _check_trusted(path)
    raw = _read_range(index_path, i * _OFFSET.size, 2 * _OFFSET.size)
    start, end = _OFFSET.unpack_from(raw, 0)[0], _OFFSET.unpack_from(raw, _OFFSET.size)[0]
    if end < start:
        raise _damaged(index_path, f"damaged (offsets of element {i} go backwards)")
    return _loads(_read_range(path, start, end - start), path)


class _AtomicFile:
    """A temporary file in the target folder, renamed over the target on success.

    Readers on other hosts must never see a half-written file, and the rename
    is only atomic within one filesystem, hence the temporary file sits in the
    same folder. Concurrent writers of the same content are harmless: both
    rename identical bytes onto the same name.
    """

    def __init__(self, directory: str, final: str) -> None:
        self.final = final
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        self.f = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())  # so a crash cannot leave a right-named, empty file behind
        self.f.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self.f.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _prepare_dir(directory: "str | os.PathLike[str]") -> str:
    """Create the folder owner-only, or refuse an existing one that others may write (its files would be refused)."""
    directory = os.path.abspath(os.fspath(directory))
    try:
        os.makedirs(directory, mode=PRIVATE_DIR, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the reference folder {directory} ({exc.strerror or exc}); "
                           "pass a writable folder on a filesystem every host can see") from None
    check_private_dir(directory, "the reference folder")
    return directory


def _cannot_write(directory: str, exc: OSError) -> JournalError:
    return JournalError(f"cannot write to the reference folder {directory} ({exc.strerror or exc}); "
                        "pass a writable folder with enough free space")


def _write_atomic(directory: str, final: str, data: bytes) -> None:
    try:
        out = _AtomicFile(directory, final)
    except OSError as exc:
        raise _cannot_write(directory, exc) from None
    try:
        out.f.write(data)
        out.commit()
    except OSError as exc:
        out.abort()
        raise _cannot_write(directory, exc) from None
    except BaseException:
        out.abort()
        raise


class Ref:
    """A small, picklable stand-in for a stored value.

    `digest` identifies the content, so caches and plan keys can use it instead
    of hashing (or even loading) the big value. Equal digests mean equal content.
    """

    __slots__ = ("_memo",)

    @property
    def digest(self) -> str:
        raise NotImplementedError

    def load(self) -> Any:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.digest == self.digest  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.digest))

    def _state(self) -> dict:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        """Everything but the memo: a pickled ref must stay small even after load()."""
        return self._state()

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._memo = _UNSET


class ValueRef(Ref):
    """A reference to one value stored by `store()`; `load()` reads it once per process."""

    __slots__ = ("path", "_digest", "size")

    def __init__(self, path: str, digest: str, size: int) -> None:
        self.path = path
        self._digest = digest
        self.size = size  # bytes of the pickled value, to detect a truncated file early
        self._memo = _UNSET

    @property
    def digest(self) -> str:
        return self._digest

    def _state(self) -> dict:
        return {"path": self.path, "_digest": self._digest, "size": self.size}

    def load(self) -> Any:
        """Read, check and unpickle the value; memoized in this object (never pickled with it)."""
        if self._memo is _UNSET:
            _check_trusted(self.path)
            data = _read_all(self.path)
            if len(data) != self.size or hashlib.sha256(data).hexdigest() != self._digest:
                raise _damaged(self.path, f"truncated or damaged ({len(data)} bytes, expected {self.size} "
                                          "with a matching sha256)")
            self._memo = _loads(data, self.path)
        return self._memo

    def __repr__(self) -> str:
        return f"ValueRef({self.path!r}, digest={self._digest[:16]}, {self.size} bytes)"


class ArrayRef:
    """A reference to a list stored by `store_array()`: one data file plus an offsets index.

    The index holds len+1 little-endian uint64 byte offsets into the data file,
    so element i is the bytes [offset[i], offset[i+1]) and reading it seeks
    past everything else. The length lives in the ref itself, so `len()`
    touches no file, and the ref stays small for millions of elements.
    """

    __slots__ = ("path", "index_path", "digest", "_length")

    def __init__(self, path: str, index_path: str, digest: str, length: int) -> None:
        self.path = path
        self.index_path = index_path
        self.digest = digest
        self._length = length

    def __getstate__(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def shape(self) -> "tuple[int]":
        """(len,): what array-like consumers (pipefunc's mapspec inputs) ask of an input they map over."""
        return (len(self),)

    def __len__(self) -> int:
        return self._length

    def _normalize(self, i: Any) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"ArrayRef indices must be integers, not {type(i).__name__}") from None
        j = i + self._length if i < 0 else i
        if not 0 <= j < self._length:
            raise IndexError(f"ArrayRef index {i} out of range for {self._length} elements")
        return j

    def __getitem__(self, i: Any) -> Any:
        """Load element i alone (negative indices count from the end)."""
        return _load_element(self.path, self.index_path, self._normalize(i))

    def element(self, i: Any) -> "ElementRef":
        """A small reference to element i alone, to send to the one task that needs it."""
        return ElementRef(self, self._normalize(i))

    def __iter__(self) -> Iterator[Any]:
        """Stream the elements in order: one pass over each file, one element in memory at a time."""
        if self._length == 0:
            return
        _check_trusted(self.index_path)
        _check_trusted(self.path)
        try:
            idx = open(self.index_path, "rb")
        except OSError as exc:
            raise _unreadable(self.index_path, exc) from None
        try:
            try:
                data = open(self.path, "rb")
            except OSError as exc:
                raise _unreadable(self.path, exc) from None
            with data:
                raw = idx.read(_OFFSET.size)
                if len(raw) != _OFFSET.size:
                    raise _damaged(self.index_path, "truncated")
                prev = _OFFSET.unpack(raw)[0]
                data.seek(prev)
                for i in range(self._length):
                    raw = idx.read(_OFFSET.size)
                    if len(raw) != _OFFSET.size:
                        raise _damaged(self.index_path, "truncated")
                    end = _OFFSET.unpack(raw)[0]
                    if end < prev:
                        raise _damaged(self.index_path, f"damaged (offsets of element {i} go backwards)")
                    chunk = data.read(end - prev)
                    if len(chunk) != end - prev:
                        raise _damaged(self.path, f"truncated (element {i} is cut short)")
                    prev = end
                    yield _loads(chunk, self.path)
        finally:
            idx.close()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArrayRef) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(("ArrayRef", self.digest))

    def __repr__(self) -> str:
        return f"ArrayRef({self.path!r}, digest={self.digest[:16]}, {self._length} elements)"


class ElementRef(Ref):
    """A reference to element `index` of a stored array; `load()` reads that element only."""

    __slots__ = ("path", "index_path", "array_digest", "index")

    def __init__(self, arr: ArrayRef, index: int) -> None:
        self.path = arr.path
        self.index_path = arr.index_path
        self.array_digest = arr.digest
        self.index = index
        self._memo = _UNSET

    @property
    def digest(self) -> str:
        """The array's digest plus the index: stable across processes and hosts."""
        return f"{self.array_digest}[{self.index}]"

    def _state(self) -> dict:
        return {"path": self.path, "index_path": self.index_path, "array_digest": self.array_digest,
                "index": self.index}

    def load(self) -> Any:
        """Seek to this element and unpickle it; memoized in this object (never pickled with it)."""
        if self._memo is _UNSET:
            self._memo = _load_element(self.path, self.index_path, self.index)
        return self._memo

    def __repr__(self) -> str:
        return f"ElementRef({self.path!r}, digest={self.array_digest[:16]}, index={self.index})"


def resolve(x: Any) -> Any:
    """The value behind a ValueRef/ElementRef, or x itself: lets task code accept either."""
    return x.load() if isinstance(x, Ref) else x


def default_directory() -> str:
    """<data root>/<job id>/refs: the job directory, shared with the executors like everything else there."""
    config = context.current().config()
    return os.path.join(config.data_root, str(config.job_id), "refs")


def store(value: Any, directory: "str | os.PathLike[str] | None" = None) -> ValueRef:
    """Store `value` once under `directory` and return a small reference to it.

    The file is `value-<first 16 hex of sha256>.pkl`; if it already exists with
    the right size (same content, e.g. stored by an earlier run or another
    host) nothing is written, so re-running a job does not rewrite big inputs.
    Without `directory`, the job directory's refs/ folder.
    """
    directory = _prepare_dir(directory if directory is not None else default_directory())
    data = _dumps(value, "the value passed to store()")
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(directory, f"value-{digest[:16]}.pkl")
    if not (_has_size(path, len(data)) and is_trusted_file(path)):  # a planted file is replaced, not kept
        _write_atomic(directory, path, data)
    return ValueRef(path, digest, len(data))


def _check_items(items: Any) -> Iterable[Any]:
    if isinstance(items, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(items, Iterable):
        raise PlanError(f"store_array() needs a list, tuple or other iterable of elements, got "
                        f"{type(items).__name__}; pass a list of elements, or use store() for a single value")
    return items


def store_array(items: Iterable[Any], directory: "str | os.PathLike[str] | None" = None) -> ArrayRef:
    """Store each element separately so a task can load element i without the rest.

    Elements are pickled one by one and streamed into a temporary data file
    while the digest is computed (sha256 over each element's length and bytes),
    so a generator of millions of elements is never held in memory pickled.
    The files are `array-<hex16>.bin` (elements) and `array-<hex16>.idx`
    (offsets); existing files of the right sizes are kept, as with store().
    """
    items = _check_items(items)
    directory = _prepare_dir(directory if directory is not None else default_directory())
    h = hashlib.sha256(_ARRAY_TAG)
    offsets = array.array("Q", [0])  # 8 bytes per element, not a Python int each
    try:
        out = _AtomicFile(directory, "")
    except OSError as exc:
        raise _cannot_write(directory, exc) from None
    committed = False
    try:
        end = 0
        for i, item in enumerate(items):
            data = _dumps(item, f"element {i} passed to store_array()")
            h.update(_OFFSET.pack(len(data)))
            h.update(data)
            out.f.write(data)
            end += len(data)
            offsets.append(end)
        digest = h.hexdigest()
        stem = os.path.join(directory, f"array-{digest[:16]}")
        data_path, index_path = stem + ".bin", stem + ".idx"
        if sys.byteorder != "little":
            offsets.byteswap()
        index_bytes = offsets.tobytes()
        if all(_has_size(p, n) and is_trusted_file(p) for p, n in ((data_path, end), (index_path, len(index_bytes)))):
            out.abort()
        else:
            out.final = data_path
            out.commit()  # data before index: an index on disk implies its data is there
            _write_atomic(directory, index_path, index_bytes)
        committed = True
    except OSError as exc:
        raise _cannot_write(directory, exc) from None
    finally:
        if not committed:
            out.abort()
    return ArrayRef(data_path, index_path, digest, len(offsets) - 1)
