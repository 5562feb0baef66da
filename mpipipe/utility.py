"""smallpond's `utility` module path (the code is mpipipe.io.utility and mpipipe.io.command)."""
from __future__ import annotations

from mpipipe.io.command import execute_command
from mpipipe.io.utility import ConcurrentIter

__all__ = ["ConcurrentIter", "execute_command"]
