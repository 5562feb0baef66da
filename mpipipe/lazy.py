"""Names of a package that load their module on first use (PEP 562), so importing the package costs nothing.

A worker process unpickles every node it runs, which imports the node's module
and so its package: a package that imported all of its modules up front would
make each worker pay for every kind of node at start-up.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_names(package: str, namespace: Dict[str, Any],
               exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """The `__getattr__` and `__dir__` of `package`: `exports` maps each name to the module that defines it;
    a name, once loaded, is kept in `namespace` (the package's globals) so later lookups are plain reads."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
