"""Platforms: where the world of ranks comes from (local processes, MPI, SLURM, your own)."""
from mpipipe.platform.base import Platform, World

__all__ = ["Platform", "World"]
