"""Platforms: where the world of ranks comes from (local processes, MPI, SLURM, your own).

`Platform` and `MPI` are also smallpond's names; `get_platform(name)` is its
look-up (a built-in name or a dotted path, as `--platform` takes).
"""
from typing import Optional

from mpipipe.platform.base import Platform, World
from mpipipe.platform.mpi import MpiPlatform

MPI = MpiPlatform


def get_platform(name: Optional[str] = None) -> Platform:
    """A platform by built-in name or dotted path; without a name, the one auto-detection picks."""
    from mpipipe.platform import registry

    if name is None:
        name, _reason = registry.detect()
    return registry.load_platform(name)()


__all__ = ["MPI", "MpiPlatform", "Platform", "World", "get_platform"]
