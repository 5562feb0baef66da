"""Which partitioning nodes of a plan write their buckets in the job's shuffle format, and which write Parquet.

A shuffle's bucket files are intermediates when only the plan's next nodes read them: those readers take any
form (mpipipe.steps.partio), so the job's `shuffle_format` (Arrow IPC by default, the fastest to write and read
back) applies. A node whose output the user may read as files keeps Parquet: a plan root (or an input of a
RootNode), a node the user named (smallpond's `get_output(name)` lists Parquet files), and one with
`output_path=` (its partitions are published there). So does a node read by a node that may look at its
files themselves (a PythonScriptNode's user code, a zero-copy node passing the files on, a manifest sink):
only nodes with `reads_any_format` read every form. The choice is made where the job's config is known (the
Driver and the session, before the plan is run) and travels with the node to the executors.
"""
from __future__ import annotations

from typing import Any, List, Set

PARQUET = "parquet"


def plan_results(plan: Any) -> Set[int]:
    """Python ids of the nodes whose files are the plan's result: its roots, and the inputs of a RootNode."""
    roots = getattr(plan, "roots", ())
    final = {id(r) for r in roots}
    for r in roots:
        if getattr(r, "kind", None) == "root":
            final.update(id(d) for d in r.inputs)
    return final


def user_may_read(node: Any, results: Set[int]) -> bool:
    """Whether the user may read `node`'s files: a result of the plan, a node the user named (smallpond's
    `get_output(name)`), or one published with `output_path=`."""
    return id(node) in results or bool(getattr(node, "named", False)) or bool(getattr(node, "publish_path", None))


def readers_of(node: Any, nodes: List[Any]) -> List[Any]:
    """The nodes among `nodes` that take `node` as an input."""
    return [n for n in nodes if any(d is node for d in getattr(n, "inputs", ()))]


def choose_intermediates(plan: Any, shuffle_format: str) -> None:
    """Set `intermediate_format` on every node of `plan` that has one."""
    results = plan_results(plan)
    nodes = list(getattr(plan, "nodes", ()))
    for node in nodes:
        if not hasattr(node, "intermediate_format"):
            continue
        private = not user_may_read(node, results) and \
            all(getattr(r, "reads_any_format", False) for r in readers_of(node, nodes))
        node.intermediate_format = shuffle_format if private else PARQUET
