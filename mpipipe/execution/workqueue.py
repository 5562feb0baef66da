"""smallpond's `execution.workqueue` module path: WorkStatus (the code is mpipipe.execution.manager)."""
from __future__ import annotations

from mpipipe.execution.manager import WorkStatus

__all__ = ["WorkStatus"]
