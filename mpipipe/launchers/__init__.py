"""Launchers: where the runs of a module go (a world's executors, SLURM, a dynamic choice among them)."""
from __future__ import annotations

from mpipipe.launchers.base import Launcher, ShardJob, run_shard
from mpipipe.launchers.world import DirectLauncher, MpiLauncher, WorldLauncher

__all__ = ["DirectLauncher", "Launcher", "MpiLauncher", "ShardJob", "WorldLauncher", "run_shard"]
