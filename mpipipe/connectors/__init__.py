"""Connectors (which machine a launcher starts its processes from); the code is mpipipe.launchers.connectors."""
from __future__ import annotations

from mpipipe.launchers.connectors import LocalConnector

__all__ = ["LocalConnector"]
