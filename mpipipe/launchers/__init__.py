"""Launchers: where the runs of a module go (a world's executors, SLURM, a choice among them, a config file)."""
from __future__ import annotations

from mpipipe.launchers.base import Launcher, ShardJob, run_shard
from mpipipe.launchers.world import DirectLauncher, MpiLauncher, WorldLauncher
from mpipipe.launchers.build import from_config, hydra_argv, instantiate, load_launcher_config
from mpipipe.launchers.by_name import LauncherMap
from mpipipe.launchers.connectors import LocalConnector
from mpipipe.launchers.dynamic import DynamicLauncher
from mpipipe.launchers.finder import find_launcher
from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions

__all__ = ["DirectLauncher", "DynamicLauncher", "Launcher", "LauncherMap", "LocalConnector", "MpiLauncher", "ShardJob",
           "SlurmLauncher", "SlurmOptions", "WorldLauncher",
           "find_launcher", "from_config", "hydra_argv", "instantiate", "load_launcher_config", "run_shard"]
