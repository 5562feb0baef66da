"""smallpond's `common` module path: sizes, defaults and helpers (the code is mpipipe.io.common)."""
from __future__ import annotations

from mpipipe.execution.task import InjectedFault  # noqa: F401
from mpipipe.io.common import *  # noqa: F401,F403
