"""smallpond's `execution.manager.JobManager`: its constructor and `run(plan, **options) -> ExecutionPlan`.

It runs the plan with mpipipe's JobManager (mpipipe.jobmanager), turning
smallpond's options into mpipipe's config: `num_executors`, `data_root`,
`job_id`, `platform`, `max_fail_count` (retries), `fail_fast_on_failure`;
`fault_inject_prob`, `random_seed`, `secs_executor_probe_interval` and the
other task-facing settings reach the tasks' RuntimeContext. Options that have
no meaning in mpipipe (memory allocators, NUMA binding, log analytics, ...) are
accepted and ignored; each is listed in NO_EFFECT_OPTIONS.
"""
from __future__ import annotations

import enum
import os
from typing import Any, Dict, Optional

from mpipipe.errors import ConfigError, TaskFailedError
from mpipipe.execution.task import ExecutionPlan as _ExecutionPlan

# smallpond JobManager.run() options that change nothing in mpipipe (where they differ, mpipipe's own way is
# named in the README's "Coming from smallpond" table)
NO_EFFECT_OPTIONS = frozenset({
    "job_time", "job_name", "job_priority", "num_executors_per_task", "resource_group", "env_variables", "sidecars",
    "user_tags", "max_retry_count", "prioritize_retry", "speculative_exec", "stop_executor_on_failure",
    "enable_sched_state_dump", "remove_output_root", "manifest_only_final_results", "memory_allocator",
    "memory_purge_delay", "bind_numa_node", "enforce_memory_limit", "share_log_analytics", "console_log_level",
    "file_log_level", "disable_log_rotation", "sched_state_observers", "secs_wq_poll_interval",
    "max_num_missed_probes", "max_usable_memory_size", "tags", "runtime_ctx"})

# options the tasks see on their RuntimeContext
TASK_SETTINGS = ("fault_inject_prob", "random_seed", "secs_executor_probe_interval", "enable_profiling",
                 "enable_diagnostic_metrics", "remove_empty_parquet", "skip_task_with_empty_input",
                 "nonzero_exitcode_as_oom", "max_usable_cpu_count", "max_usable_gpu_count")


class WorkStatus(enum.Enum):
    """smallpond's status of a piece of work; mpipipe's journal says the same with its record kinds."""

    INCOMPLETE = 1
    SUCCEED = 2
    FAILED = 3
    CRASHED = 4
    EXEC_FAILED = 5


class ExecutionPlan(_ExecutionPlan):
    """What smallpond's JobManager.run returns: whether the job succeeded, and each node's output as a
    dataset (`final_output`: the plan's root, `get_output(name)`: a node by name, smallpond's `output_name`)."""

    def __init__(self, plan: Any, result: Any = None, error: Optional[BaseException] = None,
                 job_dir: str = "") -> None:
        super().__init__(plan, result, error, job_dir)
        self._nodes = {n.name: n for n in plan.nodes}

    @property
    def ctx(self) -> Any:
        """A RuntimeContext whose output_root is the job's outputs folder (one sub-folder per node)."""
        from mpipipe.execution.task import RuntimeContext

        rc = RuntimeContext(job_id=os.path.basename(self.job_dir), data_root=os.path.dirname(self.job_dir))
        rc.job_root = self.job_dir
        return _Outputs(rc, os.path.join(self.job_dir, "outputs"))

    def get_output(self, output_name: str) -> Any:
        """The dataset a node wrote (all its partitions, in partition order); None for a node not in the plan."""
        from mpipipe.logical.datanode import num_outputs, partition_dims, partition_folders
        from mpipipe.logical.dataset import ParquetDataSet
        from mpipipe.steps.partio import PartitionData

        node = self._nodes.get(output_name)
        if node is None or self.result is None:
            return None
        paths = self.result.outputs(output_name)
        dims = partition_dims(node)
        frags, keys = [], {}
        for j in range(num_outputs(node)):
            folders = partition_folders(node, paths, j) if len(paths) > 1 or num_outputs(node) > 1 else paths
            index = _indexes(j, [n for _, n in dims])
            for f in PartitionData.from_folders(folders).fragments:
                if f.format == "parquet":
                    frags.append(f)
                    keys[f.path] = {name: i for (name, _), i in zip(dims, index)}
        ds = ParquetDataSet._from_fragments(frags)
        ds._partition_keys = keys  # which partition of each dimension a file holds (load_partitioned_datasets)
        return ds


def _indexes(j: int, sizes: list) -> list:
    """Partition j's index in each dimension (the last dimension varies fastest)."""
    out = []
    for n in reversed(sizes):
        out.append(j % n)
        j //= n
    return list(reversed(out))


class _Outputs:
    def __init__(self, rc: Any, output_root: str) -> None:
        self._rc = rc
        self.output_root = output_root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rc, name)


class JobManager:
    """smallpond's JobManager over mpipipe's: `JobManager(data_root, python_venv, task_image, platform)`."""

    def __init__(self, data_root: Optional[str] = None, python_venv: Optional[str] = None,
                 task_image: str = "default", platform: Optional[str] = None) -> None:
        self.data_root = data_root
        self.python_venv = python_venv
        self.task_image = task_image
        self.platform = platform

    def config(self, num_executors: Optional[int] = None, job_id: Optional[str] = None,
               max_fail_count: Optional[int] = None, fail_fast_on_failure: bool = False,
               output_path: Optional[str] = None) -> Any:
        """mpipipe's JobConfig: the command line and SP_* win, as everywhere; then these arguments."""
        from mpipipe import context
        from mpipipe.config import build_config

        given: Dict[str, Any] = {"platform": self.platform, "data_root": self.data_root, "job_id": job_id,
                                 "num_executors": num_executors or None}
        if max_fail_count is not None:
            given["max_retries"] = max(0, int(max_fail_count))
        if fail_fast_on_failure:
            given["fail_fast"] = True
        init = dict(context.current().init)
        init.update({k: v for k, v in given.items() if v is not None})
        return build_config(context.current().command_line, init=init)

    def run(self, plan: Any, job_id: Optional[str] = None, num_executors: int = 1,
            max_fail_count: Optional[int] = None, fail_fast_on_failure: bool = False,
            output_path: Optional[str] = None, **options: Any) -> ExecutionPlan:
        """Run `plan`; returns an ExecutionPlan (failed tasks make it unsuccessful rather than raise).

        Each call is one job (a new job id unless `job_id` is given), and the executors it started on this
        host stop when it returns, as smallpond's do; inside an MPI world the world's ranks serve it.
        """
        from mpipipe import context
        from mpipipe.jobmanager import JobManager as _Manager
        from mpipipe.launchers.plan_steps import step_launchers

        unknown = sorted(set(options) - NO_EFFECT_OPTIONS - set(TASK_SETTINGS))
        if unknown:
            raise ConfigError(f"JobManager.run: unknown option(s) {', '.join(unknown)}; see "
                              "mpipipe.execution.manager.NO_EFFECT_OPTIONS and TASK_SETTINGS for the ones accepted")
        config = self.config(num_executors, job_id, max_fail_count, fail_fast_on_failure, output_path)
        if not config.job_id:
            from mpipipe.execution.task import JobId

            config = config.with_(job_id=str(JobId.new()))
        settings = {k: options[k] for k in TASK_SETTINGS if k in options}
        for node in plan.nodes:
            node.runtime_settings = dict(getattr(node, "runtime_settings", None) or {}, **settings)
        manager = _Manager(config, dict(context.current().user_args))
        try:
            result = manager.run(plan, step_launchers(None))
        except TaskFailedError as e:
            self._close(manager)
            return ExecutionPlan(plan, None, e, os.path.join(config.data_root, config.job_id))
        self._close(manager)
        exec_plan = ExecutionPlan(plan, result)
        if output_path and result is not None:
            _link_outputs(exec_plan, output_path)
        return exec_plan

    @staticmethod
    def _close(manager: Any) -> None:
        """Stop the executors this job started on this host (an MPI world's ranks stay for later runs)."""
        from mpipipe import jobmanager

        job_dir = os.path.abspath(os.path.join(manager.config.data_root, manager.job_id))
        for rt in list(getattr(jobmanager, "_RUNTIMES", {}).values()):
            if os.path.abspath(rt.job_dir) == job_dir and rt.reopenable:
                rt.close("done")


def _link_outputs(exec_plan: ExecutionPlan, output_path: str) -> None:
    """smallpond's `output_path`: the root's output under FinalResults/, and each node that names its output
    (anything not called after its kind) under its name, as links to the files in the job directory."""
    os.makedirs(output_path, exist_ok=True)
    roots = {n.name for n in exec_plan.logical_plan.roots}
    for name, node in exec_plan._nodes.items():
        final = name in roots
        if not final and name.split("-")[0] == node.default_name():
            continue
        ds = exec_plan.get_output(name)
        dest = os.path.join(output_path, "FinalResults" if final else name)
        os.makedirs(dest, exist_ok=True)
        for i, path in enumerate(dict.fromkeys(ds.resolved_paths if ds is not None else [])):
            link = os.path.join(dest, f"{i:06d}-{os.path.basename(path)}")
            if not os.path.lexists(link):
                try:
                    os.link(path, link)
                except OSError:
                    os.symlink(path, link)

