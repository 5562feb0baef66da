"""smallpond's `Planner(runtime_ctx).create_exec_plan(plan)`: the checks made before a plan runs.

mpipipe has no separate execution plan (the scheduler turns nodes into tasks
lazily); create_exec_plan checks the plan as a run would, adds smallpond's
check that the inputs of a node are partitioned alike (same dimensions), and
returns the plan with the runtime context it is to run in (an ExecutionPlan,
which smallpond's `Scheduler(exec_plan)` runs). Its errors are PlanErrors that
are also AssertionErrors, as smallpond's planner raised assertions.
"""
from __future__ import annotations

from typing import Any, List, Tuple

from mpipipe.errors import PlanError
from mpipipe.execution.task import ExecutionPlan
from mpipipe.logical.datanode import DataNode, PartitionNode, align_by_dimensions, num_outputs, partition_dims
from mpipipe.logical.plan import LogicalPlan


class PlanAssertionError(PlanError, AssertionError):
    """A plan that cannot run, raised where smallpond's planner asserted."""


class Planner:
    def __init__(self, runtime_ctx: Any = None) -> None:
        self.runtime_ctx = runtime_ctx

    def create_exec_plan(self, plan: LogicalPlan, manifest_only_final_results: bool = True) -> ExecutionPlan:
        """The plan, checked: every node's own checks, then the partition dimensions of multi-input nodes."""
        try:
            for node in plan.nodes:
                check = getattr(node, "check_plan", None)
                if check is not None:
                    check()
            plan.infos  # noqa: B018 - partition counts are checked as a run checks them
            check_dimensions(plan)
        except PlanAssertionError:
            raise
        except PlanError as e:
            raise PlanAssertionError(str(e)) from None
        return ExecutionPlan(plan, runtime_ctx=self.runtime_ctx)


def check_dimensions(plan: LogicalPlan) -> None:
    """A node that works partition by partition on several inputs needs them partitioned by the same
    dimensions (same names, same sizes), or each by some of the dimensions of the most partitioned one (nested
    partitions line up: partition (h, u) reads host partition h); inputs with one partition go to every task."""
    for node in plan.nodes:
        if not isinstance(node, DataNode) or node.gathers or isinstance(node, PartitionNode) or len(node.inputs) < 2:
            continue
        if align_by_dimensions(node.inputs) is not None:
            continue
        seen: List[Tuple[str, List[Tuple[str, int]]]] = []
        for dep in node.inputs:
            if num_outputs(dep) > 1:
                seen.append((dep.name, partition_dims(dep)))
        for name, dims in seen[1:]:
            if dims != seen[0][1]:
                raise PlanAssertionError(
                    f"node {node.name!r}: its inputs are partitioned differently ({seen[0][0]!r} by {seen[0][1]}, "
                    f"{name!r} by {dims}); partition them by the same dimension and count")
