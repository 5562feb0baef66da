"""Partial aggregation before a hash shuffle, in a plan: which SQL nodes combine partial rows.

An SqlEngineNode whose one input is a HashPartitionNode and whose query splits (mpipipe.steps.partial_agg)
gets a twin of that input: a copy that aggregates each map task's slice by the group keys before bucketing
it. The twin is made with the SQL node, so its id comes before the SQL node's as the plan's order needs;
it is a node of its own because executors keep every node they were sent by id, so the plain hash node must
stay plain for any other plan that reads it. The first plan that holds the SQL node decides, once: when
the hash node is read by nothing else in that plan and is not one of its results, the SQL node reads the
twin and runs the combining query; otherwise it runs as written. `partial_aggregate=False` on the SQL node
turns this off.
"""
from __future__ import annotations

import copy
from typing import Any, List, Optional, Sequence, Tuple

from mpipipe.logical.bucketing import HashPartitionNode
from mpipipe.logical.datanode import output_schema_of, rows_written
from mpipipe.logical.plan import Context, Node, new_node_id
from mpipipe.steps.partial_agg import Split, map_select, split_aggregate


class PartialHashPartitionNode(HashPartitionNode):
    """A hash partition whose tasks aggregate their slice by the group keys first (the map query of a
    Split); made for one SqlEngineNode, which combines the partial rows of each bucket."""

    split: Split
    combined_by: Optional[str] = None  # the SQL node whose query this twin runs the first half of

    def step_fingerprint(self) -> str:
        return f"{super().step_fingerprint()}|partial|{self.split.map_query}|{self.split.rows_query}"

    def describe(self) -> str:
        when = " where keys repeat" if self.split.rows_query else ""
        return f"{super().describe()}, each task's rows aggregated first{when} " \
               f"({', '.join(aggregate_names(self.split))})"

    def output_schema(self) -> Any:
        return None  # partial columns; only the SQL node that combines them reads them

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        """HashPartitionNode's body, bucketing the partial rows of the task's slice instead of the slice
        (aggregated, or row by row when its keys hardly repeat); the summary says which."""
        from mpipipe.steps.partition import SLICE_VIEW, bucket_with_sql

        form = []

        def select(con: Any) -> str:
            query, how = map_select(self.split, con, SLICE_VIEW)
            form.append(how)
            return query

        threads, memory = self.task_resources(task)
        try:
            bucket_with_sql(task, inputs[0], self.bucket_sql(), self.nbuckets, self.partition_column, threads,
                            memory, check=not self.buckets_in_range, select=select, fmt=self.intermediate_format)
        except Exception as e:
            if type(e).__module__.split(".")[0].lstrip("_") != "duckdb" or not self.combined_by:
                raise
            # the query is the SQL node's: say so, or the user looks for the mistake in the hash partition
            raise type(e)(f"in node {self.combined_by!r}'s query, whose aggregates run first in this map task: "
                          f"{e}") from None
        return dict(rows_written(task.output_dir), partial=form[0])


def aggregate_names(split: Split) -> Sequence[str]:
    return list(dict.fromkeys(split.aggregates))


def prepare(ctx: Context, deps: Sequence[Node], query: str, labels: Sequence[str], udfs: Sequence[Any],
            enabled: bool) -> Tuple[Optional[Node], Optional[Split], str]:
    """(twin, split, "") when an SQL node over `deps` may combine partial aggregates, else (None, None, why);
    why is "" when partial aggregation is not a question (the input is no hash partition)."""
    if len(deps) != 1 or type(deps[0]) is not HashPartitionNode:
        return None, None, ""
    h = deps[0]
    if not enabled:
        return None, None, "turned off (partial_aggregate=False)"
    if h.random_shuffle or not h.hash_columns:
        return None, None, "rows are spread at random"
    if udfs:
        return None, None, "the query calls Python functions"
    if h.publish_path:
        return None, None, f"{h.name!r} publishes its partitions (output_path)"
    split, why = split_aggregate(query, h.hash_columns, output_schema_of(h.inputs[0]), labels, h.partition_column)
    if split is None:
        return None, None, why
    return _twin(ctx, h, split), split, ""


def _twin(ctx: Context, h: HashPartitionNode, split: Split) -> Node:
    twin = PartialHashPartitionNode.__new__(PartialHashPartitionNode)
    twin.__dict__.update(copy.copy(h.__dict__))
    twin.split = split
    twin.named = False  # its partial rows are read by the SQL node that combines them, never as a result
    twin.id = new_node_id()
    twin.name = ctx._register(twin, f"{h.name}.partial")
    return twin


def settle(node: Any, plan: Any) -> bool:
    """Decide, at the first plan holding `node`, whether it reads its twin; True when its input changed."""
    twin = node._partial_twin
    if node._partial_settled or twin is None:
        node._partial_settled = True
        return False
    node._partial_settled = True
    h = node.inputs[0]
    readers = sorted(n.name for n in plan.nodes if n is not node and any(d is h for d in n.inputs))
    if any(r is h for r in plan.roots):
        node._partial_reason = f"{h.name!r} is also a result of the plan"
    elif readers:
        node._partial_reason = f"{h.name!r} is also read by {', '.join(readers)}"
    else:
        node.inputs = (twin,)
        twin.combined_by = node.name
        node._partial_used = True
        node._statements = None
        return True
    return False
