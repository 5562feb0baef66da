"""Results of module runs, kept across jobs: one pickled result per shard key.

Layout: <root>/<module label>/<key[:2]>/<key>.pkl, written atomically (a
temporary file renamed into place), so a run killed while writing leaves no
result that looks complete. A run writes its result where the launcher says
(`result_path`); the cache is just that folder read back.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Tuple

from mpipipe.module import Module, Shard, module_label

log = logging.getLogger("mpipipe.modules")

_MISSING = object()


def write_result(path: str, value: Any) -> None:
    """Pickle `value` to `path` atomically (the folder is made if needed)."""
    import cloudpickle

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        cloudpickle.dump(value, f)
    os.replace(tmp, path)


def read_result(path: str) -> Any:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


class ResultCache:
    """Where module results live; `lookup` honours the module's validate()."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def result_path(self, module: Module, shard: Shard) -> str:
        return os.path.join(self.root, module_label(module), shard.key[:2], f"{shard.key}.pkl")

    def lookup(self, module: Module, shard: Shard) -> Tuple[bool, Any]:
        """(found, result): found only if a readable result exists and validate() accepts it."""
        path = self.result_path(module, shard)
        if not os.path.exists(path):
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
