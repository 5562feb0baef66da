"""`LocalConnector`, where experimaestro users import it from (`connectors.local`)."""
from __future__ import annotations

from mpipipe.launchers.connectors import LocalConnector

__all__ = ["LocalConnector"]
