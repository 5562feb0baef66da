"""Which shuffles of a plan move their buckets over MPI (`--shuffle mpi`, or `shuffle="mpi"` on a node), and
which tasks must then run where their buckets are.

An MPI shuffle keeps a partitioning node's buckets out of the job directory: each map task's bucket q goes to
the executor rank that will run partition q of the next node (mpipipe.execution.mpi_shuffle), and that
partition is pinned to that rank (owner_rank). It applies to a node when every reader takes its buckets the
plain way (partition q reads bucket q of each map task, through PartitionData), and when nobody may read its
files: not a plan root, not named, no output_path=, as for Arrow IPC intermediates
(mpipipe.logical.intermediates). Readers that state needs of their own (cpus=, memory=, a launcher) are placed
by those needs, so their shuffle keeps files. Other nodes keep files, with a note in the log when the user
asked for MPI by name.

Only the job manager knows, once the world is open, whether it is an MPI world; it calls choose_transports
there, before the nodes are sent to the executors.
"""
from __future__ import annotations

import logging
from typing import Any, Collection, Dict, List, Optional, Set

from mpipipe.logical.intermediates import plan_results, readers_of, user_may_read

log = logging.getLogger("mpipipe.shuffle")

MPI = "mpi"
FILES = "files"


def owner_rank(partition: int, world_size: int) -> int:
    """The executor rank that runs partition `partition` of a node reading an MPI shuffle (ranks 1..size-1)."""
    return 1 + partition % max(1, world_size - 1)


def choose_transports(plan: Any, default: str, mpi_world: bool, launched: Collection[str] = ()) -> Set[int]:
    """Set `shuffle_transport` on every partitioning node of `plan`; returns the ids of the nodes whose
    partitions are pinned to their owner rank. `launched`: names of nodes a launcher runs."""
    nodes = list(getattr(plan, "nodes", ()))
    results = plan_results(plan)
    pinned: Set[int] = set()
    said: Set[str] = set()
    for node in nodes:
        if not hasattr(node, "shuffle_transport"):
            continue
        asked = getattr(node, "shuffle", None) or default
        node.shuffle_transport = FILES
        if asked != MPI:
            continue
        readers = readers_of(node, nodes)
        why = _keeps_files(node, readers, user_may_read(node, results), mpi_world, launched)
        if why is not None:
            if why not in said:
                log.info("shuffle of %s keeps files: %s", node.name, why)
            if not mpi_world:
                said.add(why)  # once for the whole plan
            continue
        node.shuffle_transport = MPI
        pinned.update(r.id for r in readers)
    return pinned


def _keeps_files(node: Any, readers: List[Any], readable: bool, mpi_world: bool,
                 launched: Collection[str]) -> Optional[str]:
    """Why the buckets of `node` cannot move over MPI, or None."""
    if not mpi_world:
        return "the job does not run in an MPI world (--shuffle mpi applies to MPI worlds)"
    if readable:
        return "its files are an output the user may read (a plan root, a named node, or output_path=)"
    from mpipipe.logical.datanode import num_outputs

    if num_outputs(node) < 2:
        return "the next node reads it as one partition"
    if not readers:
        return "no node reads it"
    for r in readers:
        index = [i for i, d in enumerate(r.inputs) if d is node]
        if not getattr(r, "reads_any_format", False):
            return f"{r.name} reads its files by their paths"
        if getattr(r, "gathers", False) or getattr(r, "pointwise", False) or \
                any(i in getattr(r, "_dim_map", {}) for i in index):
            return f"{r.name} reads more than one bucket in a task"
        if r.npartitions != num_outputs(node):
            return f"{r.name} does not read one bucket per task"
        if getattr(r, "resources", None) is not None or r.name in launched:
            return f"{r.name} is placed by needs of its own"
    return None


def shuffle_exchange(nodes: List[Any]) -> Optional[Dict[str, Any]]:
    """What executor ranks need to know of the MPI shuffles among `nodes`: of each shuffle, its name (its
    outputs' folder), bucket count, nesting and map tasks per input partition, to send its buckets; of each
    node reading one, which inputs are such shuffles, to wait for their buckets. None when there is none."""
    senders = {n.id: {"name": n.name, "nbuckets": int(n.nbuckets), "nested": bool(getattr(n, "nested", False)),
                      "split": int(getattr(n, "map_split", 1))}
               for n in nodes if getattr(n, "shuffle_transport", FILES) == MPI}
    readers = {}
    for n in nodes:
        shuffled = [(i, d.id) for i, d in enumerate(getattr(n, "inputs", ()))
                    if getattr(d, "shuffle_transport", FILES) == MPI]
        if shuffled:
            readers[n.id] = shuffled
    return {"senders": senders, "readers": readers} if senders or readers else None
