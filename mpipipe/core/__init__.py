"""stopes' `stopes.core` names: StopesModule and Requirements (`from mpipipe.core import StopesModule`)."""
from __future__ import annotations

from mpipipe.core.stopes_module import Requirements, StopesModule

__all__ = ["Requirements", "StopesModule"]
