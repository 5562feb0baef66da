"""A node that logs the first rows of each of its input datasets (smallpond's `contrib.log_dataset`)."""
from __future__ import annotations

from typing import Any, List

from mpipipe.execution.task import PythonScriptTask
from mpipipe.logical.node import Context, PythonScriptNode


class LogDataSetTask(PythonScriptTask):
    """Logs `num_rows` rows of every input dataset into the task's log."""

    num_rows = 200

    @property
    def exec_on_scheduler(self) -> bool:
        """smallpond ran it on its scheduler; in mpipipe it runs as a task like any other."""
        return True

    def process(self, runtime_ctx: Any, input_datasets: List[Any], output_path: str) -> bool:
        for dataset in input_datasets:
            dataset.log(self.num_rows)
        return True


class LogDataSet(PythonScriptNode):
    """`LogDataSet(ctx, input_deps, num_rows=200, **node_options)`."""

    def __init__(self, ctx: Context, input_deps: Any, num_rows: int = 200, **kwargs: Any) -> None:
        super().__init__(ctx, input_deps, **kwargs)
        self.num_rows = num_rows

    def spawn(self, *args: Any, **kwargs: Any) -> LogDataSetTask:
        task = LogDataSetTask(*args, **kwargs)
        task.num_rows = self.num_rows
        return task
