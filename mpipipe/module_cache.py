"""Results of module runs, kept across jobs: one pickled result per shard key.

Layout: <root>/<module label>/<key[:2]>/<key>.pkl, written atomically (a
temporary file renamed into place), so a run killed while writing leaves no
result that looks complete. A run writes its result where the launcher says
(`result_path`); the cache is just that folder read back.

A cached result is a pickle, and loading a pickle runs code: folders are made
owner-only, results are written 0600, and a result file that someone else
could have written is never unpickled (a cache miss, with a warning).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Tuple

from mpipipe.atomic import atomic_file
from mpipipe.errors import JournalError
from mpipipe.module import Module, Shard, module_label
from mpipipe.ownership import check_trusted_file, is_trusted_file, make_private_dir

log = logging.getLogger("mpipipe")


def make_result_dirs(directory: str) -> None:
    """Create `directory` and its missing parents owner-only, and refuse it if others may write to it."""
    directory = os.path.abspath(directory)
    missing = []
    d = directory
    while not os.path.isdir(d) and os.path.dirname(d) != d:
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):  # one level at a time: os.makedirs would give the parents the umask's mode
        make_private_dir(d, "the result folder")
    make_private_dir(directory, "the result folder")


def write_result(path: str, value: Any) -> None:
    """Pickle `value` to `path` atomically, readable by its owner only (the folder is made if needed)."""
    import cloudpickle

    directory = os.path.dirname(os.path.abspath(path))
    make_result_dirs(directory)
    with atomic_file(path) as f:
        cloudpickle.dump(value, f)


def distrust(path: str) -> str:
    """Why `path` must not be unpickled, or '' if only the current user can have written it."""
    if is_trusted_file(path):
        return ""
    try:
        check_trusted_file(path, "the result")
    except JournalError as e:
        return str(e)
    return f"the result {path} is not a regular file"


def read_result(path: str) -> Any:
    """Unpickle a result; one that someone else could have written is refused (PermissionError), never loaded."""
    import pickle

    why = distrust(path)
    if why:
        raise PermissionError(why)
    with open(path, "rb") as f:
        return pickle.load(f)


class ResultCache:
    """Where module results live; `lookup` honours the module's validate()."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._ready = False

    def _prepare(self) -> None:
        """Make the root owner-only, or refuse one that others may write (once per cache object)."""
        if not self._ready:
            make_result_dirs(self.root)
            self._ready = True

    def result_path(self, module: Module, shard: Shard) -> str:
        self._prepare()
        return os.path.join(self.root, module_label(module), shard.key[:2], f"{shard.key}.pkl")

    def lookup(self, module: Module, shard: Shard) -> Tuple[bool, Any]:
        """(found, result): found only if a trusted, readable result exists and validate() accepts it."""
        path = self.result_path(module, shard)
        if not os.path.exists(path):
            return False, None
        why = distrust(path)
        if why:
            log.warning("%s; running it again", why)
            return False, None
        try:
            value = read_result(path)
        except Exception as e:  # noqa: BLE001  a damaged or unloadable result is computed again
            log.warning("cached result %s cannot be read (%s: %s); running it again", path, type(e).__name__, e)
            return False, None
        from mpipipe.refs import resolve

        try:
            ok = module.validate(value, resolve(shard.value), shard.index)
        except Exception as e:  # noqa: BLE001
            log.warning("%s.validate() raised %s: %s; running it again", type(module).__name__, type(e).__name__, e)
            ok = False
        return (True, value) if ok else (False, None)

    def store(self, module: Module, shard: Shard, value: Any) -> str:
        path = self.result_path(module, shard)
        write_result(path, value)
        return path
