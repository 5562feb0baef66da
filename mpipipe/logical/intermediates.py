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

from typing import Any

PARQUET = "parquet"


def choose_intermediates(plan: Any, shuffle_format: str) -> None:
    """Set `intermediate_format` on every node of `plan` that has one."""
    roots = getattr(plan, "roots", ())
    final = {id(r) for r in roots}
    for r in roots:
        if getattr(r, "kind", None) == "root":
            final.update(id(d) for d in r.inputs)
    nodes = list(getattr(plan, "nodes", ()))
    for node in nodes:
        if not hasattr(node, "intermediate_format"):
            continue
        readers = [n for n in nodes if any(d is node for d in getattr(n, "inputs", ()))]
        private = (id(node) not in final and not getattr(node, "named", False) and
                   not getattr(node, "publish_path", None) and
                   all(getattr(r, "reads_any_format", False) for r in readers))
        node.intermediate_format = shuffle_format if private else PARQUET
