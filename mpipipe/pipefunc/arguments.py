"""The arguments adaptive_scheduler's SlurmExecutor takes, as mpipipe's pipefunc executors read them.

Code written for `adaptive_scheduler.SlurmExecutor(...)` keeps working with the
import changed: the arguments that mean something here are used, those that
steer adaptive_scheduler's own machinery (database, learners, log intervals)
are accepted and have no effect, those that would change what runs (`goal`,
`runner_kwargs`) are refused unless left at their defaults, and any other name
is an error listing the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mpipipe.errors import ConfigError, RequirementError
from mpipipe.pipefunc.needs import Need, check_executor_type

#: used: what each does is in the README's "Coming from pipefunc"
USED = ("name", "folder", "partition", "nodes", "cores_per_node", "num_threads", "exclusive", "executor_type",
        "extra_scheduler", "size_per_learner", "max_simultaneous_jobs", "max_fails_per_job", "job_manager_interval")
#: adaptive_scheduler's run manager, database and learners: accepted, no effect
NO_EFFECT = ("check_goal_on_start", "save_interval", "log_interval", "kill_interval", "kill_on_error", "overwrite_db",
             "job_manager_kwargs", "kill_manager_kwargs", "loky_start_method", "cleanup_first", "save_dataframe",
             "dataframe_format", "max_log_lines", "quiet", "extra_run_manager_kwargs", "extra_scheduler_kwargs")
#: would change what runs: only their defaults are accepted
REFUSED = ("goal", "runner_kwargs", "url")


@dataclass(frozen=True)
class Arguments:
    """The executor's settings, checked: defaults for every call, chunking and SLURM array settings."""

    name: str
    defaults: Need
    size_per_learner: Optional[int]
    executor_type: str
    folder: Optional[str]
    max_parallel: Optional[int]
    max_retries: Optional[int]
    poll_interval: Optional[float]


def _whole(value: Any, name: str, owner: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        raise ConfigError(f"{owner}: {name} must be a whole number, got a {type(value).__name__} (per-job tuples are "
                          f"what pipefunc gives adaptive_scheduler internally); give one number")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be a whole number >= 1, got {value!r}")
    return value


def read_arguments(owner: str, given: Dict[str, Any], default_name: str) -> Arguments:
    """Check an executor's keyword arguments (see the module docstring)."""
    unknown = sorted(k for k in given if k not in USED + NO_EFFECT + REFUSED)
    if unknown:
        raise ConfigError(f"{owner} has no argument {', '.join(map(repr, unknown))}; valid arguments: "
                          f"{', '.join(USED)} (and, with no effect here, {', '.join(NO_EFFECT)})")
    for name in REFUSED:
        if given.get(name) is not None:
            raise ConfigError(f"{owner}: {name}= is adaptive_scheduler's (it steers adaptive learners), but mpipipe "
                              f"runs each call once; leave {name} out")
    name = given.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{owner}: name must be a non-empty string, got {name!r}")
    cores = _whole(given.get("cores_per_node"), "cores_per_node", owner)
    nodes = _whole(given.get("nodes"), "nodes", owner)
    _whole(given.get("num_threads"), "num_threads", owner)
    extra = given.get("extra_scheduler") or []
    if isinstance(extra, str) or not isinstance(extra, (list, tuple)) or not all(isinstance(e, str) for e in extra):
        raise ConfigError(f"{owner}: extra_scheduler must be a list of sbatch options such as ['--exclusive'], "
                          f"got {extra!r}")
    extra_lines: Tuple[str, ...] = tuple(extra) + (("--exclusive",) if given.get("exclusive") else ())
    partition = given.get("partition")
    if partition is not None and not isinstance(partition, str):
        raise ConfigError(f"{owner}: partition must be a name, got {partition!r}")
    try:
        executor_type = check_executor_type(given.get("executor_type", "process-pool"), owner)
    except RequirementError as e:
        raise ConfigError(str(e)) from None
    interval = given.get("job_manager_interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0):
        raise ConfigError(f"{owner}: job_manager_interval must be a number of seconds > 0, got {interval!r}")
    retries = given.get("max_fails_per_job")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise ConfigError(f"{owner}: max_fails_per_job must be a whole number >= 0, got {retries!r}")
    folder = given.get("folder")
    return Arguments(
        name=name,
        defaults=Need(cpus=cores or 0, nodes=nodes if nodes and nodes > 1 else 0, partition=partition,
                      extra=extra_lines),
        size_per_learner=_whole(given.get("size_per_learner"), "size_per_learner", owner),
        executor_type=executor_type,
        folder=str(folder) if folder else None,
        max_parallel=_whole(given.get("max_simultaneous_jobs"), "max_simultaneous_jobs", owner),
        max_retries=retries,
        poll_interval=float(interval) if interval is not None else None,
    )
