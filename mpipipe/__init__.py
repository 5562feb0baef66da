"""mpipipe: one pipeline script for a laptop, an MPI world or a SLURM cluster."""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Names load on first use: a worker process imports mpipipe.execution.worker, which must not pay for the
# driver, the job manager and the launchers (each rank starts several workers, and they start in every run).
_EXPORTS = {
    "Driver": "mpipipe.driver",
    "ConfigError": "mpipipe.errors", "JobInterrupted": "mpipipe.errors", "JournalError": "mpipipe.errors",
    "MpipipeError": "mpipipe.errors", "PlanError": "mpipipe.errors", "PlatformError": "mpipipe.errors",
    "RequirementError": "mpipipe.errors", "TaskFailedError": "mpipipe.errors",
    "JobManager": "mpipipe.jobmanager", "JobResult": "mpipipe.jobmanager",
    "DelayedSubmission": "mpipipe.module", "Module": "mpipipe.module", "ModuleFailed": "mpipipe.module",
    "ShardFailure": "mpipipe.module",
    # the plan's base names from where they are defined: a script of ComputeNodes loads no data node
    "ComputeNode": "mpipipe.logical.plan", "Context": "mpipipe.logical.plan", "LogicalPlan": "mpipipe.logical.plan",
    "Node": "mpipipe.logical.plan",
    "Platform": "mpipipe.platform.base", "World": "mpipipe.platform.base",
    "Resources": "mpipipe.resources",
    "Session": "mpipipe.session", "init": "mpipipe.session", "DataFrame": "mpipipe.dataframe",
    "RuntimeContext": "mpipipe.execution.task",
    **{name: "mpipipe.experiment" for name in ("Experiment", "ExperimentFailed", "Meta", "Param", "Task",
                                               "experiment")},
    **{name: "mpipipe.launchers" for name in ("DirectLauncher", "DynamicLauncher", "Launcher", "LauncherMap",
                                               "LocalConnector", "MpiLauncher", "SlurmLauncher", "SlurmOptions",
                                               "WorldLauncher", "find_launcher")},
}

__all__ = sorted(_EXPORTS)

from mpipipe.execution.early import begin as _begin_early  # noqa: E402
from mpipipe.lazy import lazy_names as _lazy_names  # noqa: E402

__getattr__, __dir__ = _lazy_names("mpipipe", globals(), _EXPORTS)

# under an MPI launcher, an executor rank's first worker starts now and boots while the script imports the
# rest and builds its plan (mpipipe.execution.early); after the names above, since a worker forked here
# imports the plan's modules, which import names from this package
_begin_early()


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from mpipipe.driver import Driver
    from mpipipe.errors import (ConfigError, JobInterrupted, JournalError, MpipipeError, PlanError, PlatformError,
                                RequirementError, TaskFailedError)
    from mpipipe.jobmanager import JobManager, JobResult
    from mpipipe.launchers import (DirectLauncher, DynamicLauncher, Launcher, LauncherMap, MpiLauncher, SlurmLauncher,
                                   SlurmOptions, WorldLauncher, find_launcher)
    from mpipipe.logical.plan import ComputeNode, Context, LogicalPlan, Node
    from mpipipe.module import DelayedSubmission, Module, ModuleFailed, ShardFailure
    from mpipipe.platform.base import Platform, World
    from mpipipe.resources import Resources
    from mpipipe.dataframe import DataFrame
    from mpipipe.execution.task import RuntimeContext
    from mpipipe.session import Session, init
