"""StopesModule and Requirements where stopes' documentation imports them from; see mpipipe.core.stopes_module."""
from __future__ import annotations

from mpipipe.core.stopes_module import Requirements, StopesModule

__all__ = ["Requirements", "StopesModule"]
