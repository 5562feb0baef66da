"""mpipipe: one pipeline script for a laptop, an MPI world or a SLURM cluster."""
from __future__ import annotations

__version__ = "0.1.0"

from mpipipe.driver import Driver
from mpipipe.errors import (ConfigError, JobInterrupted, JournalError, MpipipeError, PlanError, PlatformError,
                            RequirementError, TaskFailedError)
from mpipipe.jobmanager import JobManager, JobResult
from mpipipe.launchers import DirectLauncher, Launcher, MpiLauncher, WorldLauncher
from mpipipe.module import Module, ModuleFailed, ShardFailure
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan, Node
from mpipipe.platform.base import Platform, World
from mpipipe.resources import Resources
from mpipipe.session import Session, init

__all__ = [
    "ComputeNode", "ConfigError", "Context", "DirectLauncher", "Driver", "Launcher", "Module", "ModuleFailed",
    "MpiLauncher", "ShardFailure", "WorldLauncher", "JobInterrupted", "JobManager", "JobResult", "JournalError",
    "LogicalPlan", "MpipipeError", "Node", "PlanError", "Platform", "PlatformError", "RequirementError", "Resources",
    "Session",
    "TaskFailedError", "World", "init",
]
