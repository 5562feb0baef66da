"""smallpond's `utility` module path (the code is mpipipe.io.utility)."""
from __future__ import annotations

from mpipipe.io.utility import ConcurrentIter

__all__ = ["ConcurrentIter"]
