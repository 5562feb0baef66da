"""mpipipe: one pipeline script for a laptop, an MPI world or a SLURM cluster."""
from __future__ import annotations

__version__ = "0.1.0"

from mpipipe.driver import Driver
from mpipipe.errors import (ConfigError, JobInterrupted, JournalError, MpipipeError, PlanError, PlatformError,
                            RequirementError, TaskFailedError)
from mpipipe.jobmanager import JobManager, JobResult
from mpipipe.module import Module, ModuleFailed, ShardFailure
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan, Node
from mpipipe.platform.base import Platform, World
from mpipipe.resources import Resources
from mpipipe.session import Session, init

__all__ = [
    "ComputeNode", "ConfigError", "Context", "DirectLauncher", "Driver", "DynamicLauncher", "Launcher",
    "LauncherMap", "Module", "ModuleFailed", "MpiLauncher", "ShardFailure", "SlurmLauncher", "SlurmOptions",
    "WorldLauncher", "find_launcher", "JobInterrupted", "JobManager", "JobResult", "JournalError",
    "LogicalPlan", "MpipipeError", "Node", "PlanError", "Platform", "PlatformError", "RequirementError", "Resources",
    "Session",
    "TaskFailedError", "World", "init",
]


# Launchers load on first use: a script that only runs plans does not pay for importing them at start-up.
_LAUNCHER_NAMES = ("DirectLauncher", "DynamicLauncher", "Launcher", "LauncherMap", "MpiLauncher", "SlurmLauncher",
                   "SlurmOptions", "WorldLauncher", "find_launcher")


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name in _LAUNCHER_NAMES:
        import mpipipe.launchers as launchers

        return getattr(launchers, name)
    raise AttributeError(f"module 'mpipipe' has no attribute {name!r}")
