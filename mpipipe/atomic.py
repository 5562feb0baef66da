"""Writing a file whole or not at all.

Readers (another rank, `mpipipe status`, a job resumed after a crash) must never
see half a file, so the bytes go to a temporary file beside the target (a rename
is atomic only within one filesystem) which is then renamed over it. The
temporary file is created with its final mode, never reused from a crash
(whose mode could be anything), and removed when the write fails.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import BinaryIO, Iterator, Optional, Union

PRIVATE_FILE = 0o600


def temp_path(path: str) -> str:
    """The temporary file a write of `path` goes through: hidden, in the same folder, one per process and
    thread (two writers of one path never share it)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_file(path: str, mode: Optional[int] = PRIVATE_FILE, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write that replaces `path` when the block ends without an exception (and is removed
    when it raises), for writers that stream (pickle.dump, json.dump into a file).

    `mode`: the file's permission bits whatever the umask (owner-only by default); None: what open() gives
    (0666 less the umask), for files meant to be shared. `sync`: fsync before the rename, so that a crash of
    the machine cannot leave the target named but empty."""
    tmp = temp_path(path)
    try:
        os.unlink(tmp)  # a crash's leftover: never written through with its old mode
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # the umask may have taken bits that were asked for
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path: str, data: Union[bytes, str], mode: Optional[int] = PRIVATE_FILE, sync: bool = False) -> None:
    """Write `data` (str as UTF-8) to `path` whole or not at all; `mode` and `sync` as for atomic_file."""
    with atomic_file(path, mode, sync) as f:
        f.write(data.encode() if isinstance(data, str) else data)
