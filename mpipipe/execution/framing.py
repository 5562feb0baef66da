"""Length-prefixed pickles over a pipe: the executor <-> worker wire format."""
from __future__ import annotations

import os
import pickle
import struct
from typing import Any, List

_HEADER = struct.Struct("!I")


def write_msg(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buf = memoryview(_HEADER.pack(len(data)) + data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_msg(fd: int) -> Any:
    (n,) = _HEADER.unpack(read_exact(fd, _HEADER.size))
    return pickle.loads(read_exact(fd, n))


class FrameReader:
    """Collects whatever bytes are available and yields the complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Any]:
        self._buf += data
        out = []
        pos = 0
        while len(self._buf) - pos >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self._buf, pos)
            if len(self._buf) - pos - _HEADER.size < n:
                break
            start = pos + _HEADER.size
            out.append(pickle.loads(bytes(self._buf[start:start + n])))
            pos = start + n
        if pos:
            del self._buf[:pos]
        return out
