"""Connectors: which machine a launcher starts its processes from.

Launchers accept `connector=` so that code written for experimaestro, whose
launchers take one, runs unchanged. mpipipe starts processes (and runs sbatch)
from the machine the script runs on, so the only connector is LocalConnector,
"this machine"; anything else is refused when the launcher is made rather than
ignored (a script meant for a remote cluster would otherwise run here).
"""
from __future__ import annotations

from typing import Any, Optional

from mpipipe.errors import ConfigError

__all__ = ["LocalConnector", "check_connector"]


class LocalConnector:
    """This machine: processes start here and see its filesystem. One instance (`LocalConnector.instance()`)."""

    _INSTANCE: Optional["LocalConnector"] = None

    @classmethod
    def instance(cls) -> "LocalConnector":
        """The connector of this machine (always the same object)."""
        if LocalConnector._INSTANCE is None:
            LocalConnector._INSTANCE = LocalConnector()
        return LocalConnector._INSTANCE

    def __reduce__(self) -> Any:
        return (LocalConnector.instance, ())  # unpickles as the receiving process's own instance

    def __repr__(self) -> str:
        return "LocalConnector()"


def check_connector(connector: Any, launcher: str) -> LocalConnector:
    """The connector a launcher keeps: None or a LocalConnector means this machine; anything else is an error."""
    if connector is None or isinstance(connector, LocalConnector):
        return LocalConnector.instance()
    name = type(connector).__name__
    raise ConfigError(f"{launcher}(connector={name}(...)): mpipipe starts processes and runs sbatch from this machine "
                      "only, so the supported connector is LocalConnector (or none); run the script on a machine of "
                      "the cluster (e.g. its login node) instead of connecting to it")
