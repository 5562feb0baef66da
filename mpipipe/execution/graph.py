"""The plan as rank 0 sees it while it runs: which partitions are done, due, failed, and what follows.

Tasks of a node are made due only when asked for (a cursor over its
partitions), so plans with millions of partitions never exist as a list. What
an earlier run journaled is taken on the way (when its output is still there),
finished partitions release their pointwise children at once, and a node
whose inputs all finished starts. A failed partition blocks what depends on
it, nothing else. Due partitions go to the `route` callback; the graph does
not know how they are sent.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from mpipipe.errors import JournalError
from mpipipe.execution.journal import RangeBlock, output_of, resolve
from mpipipe.logical.plan import NodeInfo

log = logging.getLogger("mpipipe.scheduler")

SPECULATIVE_SUFFIX = ".speculative"  # a speculative copy commits beside the original, never over it

Route = Callable[[int, int, int, bool], None]  # (node, partition, attempt, to the front)


@dataclass
class NodeState:
    info: NodeInfo
    children: List[int] = field(default_factory=list)
    # partition -> outcome record, or the RangeBlock of the task range it finished in (journal.resolve reads either)
    outputs: Dict[int, Any] = field(default_factory=dict)
    cursor: int = 0  # next partition to expand (non-pointwise nodes)
    active: bool = False
    blocked: bool = False  # an input failed for good
    failed: Set[int] = field(default_factory=set)  # partitions that failed for good

    @property
    def settled(self) -> bool:
        """Every partition finished or failed for good (or an input failed): nothing more will come."""
        return self.blocked or len(self.outputs) + len(self.failed) >= self.info.npartitions

    @property
    def complete(self) -> bool:
        return len(self.outputs) == self.info.npartitions


class NodeRecords(Sequence):  # type: ignore[type-arg]
    """A node's outcome records in partition order, as a run returns them: each made when read (a script of
    tiny tasks reads few of them, and making a million would cost the run seconds)."""

    def __init__(self, graph: "PlanGraph", nid: int) -> None:
        st = graph.nodes[nid]
        self._outputs = dict(st.outputs)  # as the run left them: a later run of a live world adds its own
        self._order: Optional[List[int]] = None if len(self._outputs) == st.info.npartitions else sorted(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def _partition(self, i: int) -> int:
        return i if self._order is None else self._order[i]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        p = self._partition(i)
        return resolve(self._outputs[p], p)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, (str, bytes)) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


class PlanGraph:
    """Node states, expansion of due partitions, reuse of journaled ones, completion and blocking."""

    def __init__(self, infos: List[NodeInfo], job_dir: str, route: Route) -> None:
        self.job_dir = job_dir
        self.route = route
        self.nodes: Dict[int, NodeState] = {}
        self.active: Deque[int] = deque()  # nodes whose cursors still have partitions
        self.done_before: Dict[str, Dict[int, Dict[str, Any]]] = {}  # fingerprint -> partition -> record
        self.always_run: Set[int] = set()  # nodes whose tasks run whatever the journal says
        # nodes whose outputs lived in an MPI world's memory (the map side of an MPI shuffle), and whether
        # every node reading each of them is taken whole from the journal
        self.memory_outputs: Set[int] = set()
        self._readers_reused: Dict[int, bool] = {}
        self.watched: Set[int] = set()  # nodes whose settling someone waits for
        self.on_settled: Optional[Callable[[int], None]] = None
        # (node, first, count): due partitions of a node with nothing to reuse, as one run (else route() each)
        self.route_run: Optional[Callable[[int, int, int], None]] = None
        self.reused = 0  # partitions taken from the journal
        self._out_shape: Dict[int, Tuple[str, str, int]] = {}  # node -> (fingerprint, output prefix, digits)
        self._all_inputs: Dict[int, Tuple[Tuple[str, ...], ...]] = {}  # non-pointwise node -> its input paths
        self._warned_paths = False
        self.insert(infos)

    # --- shape ----------------------------------------------------------------------------

    def insert(self, infos: List[NodeInfo]) -> List[NodeInfo]:
        """Add nodes (their inputs known already or among them); returns the ones that were new."""
        new = [i for i in infos if i.id not in self.nodes]
        for i in new:
            self.nodes[i.id] = NodeState(i)
        for i in new:
            for dep in dict.fromkeys(i.inputs):  # a node may read one input twice ({0} and {1}): one child link
                if dep not in self.nodes:
                    raise JournalError(f"node {i.name!r} takes an input that this run does not know")
                self.nodes[dep].children.append(i.id)
        return new

    @property
    def total(self) -> int:
        return sum(st.info.npartitions for st in self.nodes.values())

    def name(self, nid: int) -> str:
        return self.nodes[nid].info.name

    def shape(self, nid: int) -> Tuple[str, str, int]:
        """(fingerprint, output path prefix, partition digits) of a node: joining paths for every task would
        cost more than the rest of making it."""
        shape = self._out_shape.get(nid)
        if shape is None:
            info = self.nodes[nid].info
            shape = self._out_shape[nid] = (info.fingerprint, os.path.join(self.job_dir, "outputs", info.name, "part-"),
                                            max(5, len(str(info.npartitions - 1))))
        return shape

    def key(self, nid: int, p: int) -> str:
        return f"{self.shape(nid)[0]}:{p}"

    def output_path(self, nid: int, p: int) -> str:
        _fp, prefix, digits = self.shape(nid)
        return f"{prefix}{p:0{digits}d}"

    def input_groups(self, nid: int, p: int) -> Tuple[Tuple[str, ...], ...]:
        """Per input node, the output paths partition p reads."""
        info = self.nodes[nid].info
        if not info.inputs:
            return ()
        if not info.pointwise:  # every partition reads all of its inputs, complete by now: built once per node
            groups = self._all_inputs.get(nid)
            if groups is None:
                groups = self._all_inputs[nid] = tuple(tuple(self.outputs_in_order(d)) for d in info.inputs)
            return groups
        return tuple(tuple(o for o in (output_of(self.nodes[d].outputs[p], p),) if o) for d in info.inputs)

    # --- what is due ------------------------------------------------------------------------

    def activate(self, candidates: List[int]) -> None:
        """Start the nodes among `candidates` whose inputs have all finished."""
        for nid in candidates:
            st = self.nodes[nid]
            if st.active or st.blocked or st.info.pointwise and st.info.inputs:
                continue
            if all(self.nodes[d].complete for d in st.info.inputs):
                st.active = True
                self.active.append(nid)

    @property
    def expanding(self) -> bool:
        """Some node still has partitions not yet made due."""
        return bool(self.active)

    def expand(self, want: int) -> None:
        """Make up to `want` partitions of active nodes due (what an earlier run finished is taken from the
        journal on the way, and not counted)."""
        while want > 0 and self.active:
            nid = self.active[0]
            st = self.nodes[nid]
            n = st.info.npartitions
            done = self._done_of(nid)
            if done is None and self.route_run is not None and st.cursor < n:
                k = min(want, n - st.cursor)
                self.route_run(nid, st.cursor, k)
                st.cursor += k
                want -= k
            while want > 0 and st.cursor < n:
                p = st.cursor
                st.cursor += 1
                if done is not None:
                    rec = done.get(p)
                    if rec is not None and self._still_there(nid, p, rec):
                        self.reused += 1
                        self.complete(nid, p, rec)
                        continue
                self.route(nid, p, 0, False)
                want -= 1
            if st.cursor >= n:
                self.active.popleft()

    # --- reuse of what the journal says -------------------------------------------------------

    def _done_of(self, nid: int) -> Optional[Dict[int, Dict[str, Any]]]:
        """What earlier runs finished of a node (partition -> record), None if nothing is to be reused."""
        if not self.done_before or nid in self.always_run:
            return None
        return self.done_before.get(self.nodes[nid].info.fingerprint)

    def _still_there(self, nid: int, p: int, rec: Dict[str, Any]) -> bool:
        """A journaled partition is reused only while its output (and its value file) is still there, and only
        when the record names the very folder this partition writes: a record is never trusted with a path
        of its own choosing."""
        out = rec.get("o")
        vf = rec.get("vf")
        if vf is not None and not os.path.exists(os.path.join(self.job_dir, vf)):
            return False
        check = self.nodes[nid].info.reuse_check  # a file in the output that says what it wrote elsewhere is there
        if out is None:
            return not check
        if not self._is_own_output(nid, p, out):
            return False
        if not os.path.exists(out):
            return nid in self.memory_outputs and self._read_by_reused_only(nid)
        return not check or os.path.exists(os.path.join(out, check))

    def _read_by_reused_only(self, nid: int) -> bool:
        """A map task of an MPI shuffle left its buckets in the memory of a world that is gone: its record
        stands only when every node reading it is taken whole from the journal (nobody reads the buckets)."""
        got = self._readers_reused.get(nid)
        if got is None:
            got = True
            for r in self.nodes[nid].children:
                done = self._done_of(r)
                n = self.nodes[r].info.npartitions
                if done is None or len(done) < n or not all(
                        q in done and self._still_there(r, q, done[q]) for q in range(n)):
                    got = False
                    break
            self._readers_reused[nid] = got
        return got

    def _is_own_output(self, nid: int, p: int, out: str) -> bool:
        """Whether a journaled output is the folder partition p of the node writes (or its speculative copy)."""
        expected = self.output_path(nid, p)
        if out == expected or out == expected + SPECULATIVE_SUFFIX:
            return True
        if os.path.basename(out) in (os.path.basename(expected), os.path.basename(expected) + SPECULATIVE_SUFFIX) \
                and os.path.realpath(os.path.dirname(out)) == os.path.realpath(os.path.dirname(expected)):
            return True  # the same folder by another name (a symbolic link on the way to the data root)
        if not self._warned_paths:
            self._warned_paths = True
            log.warning("the journal names %s as the output of %s[%d], which writes %s; it runs again", out,
                        self.nodes[nid].info.name, p, expected)
        return False

    def _reuse(self, nid: int, p: int) -> bool:
        """A partition an earlier run finished (journaled, output still there) is not run again."""
        done = self._done_of(nid)
        rec = done.get(p) if done else None
        if rec is None or not self._still_there(nid, p, rec):
            return False
        self.reused += 1
        self.complete(nid, p, rec)
        return True

    # --- outcomes -------------------------------------------------------------------------------

    def complete(self, nid: int, p: int, rec: Any) -> None:
        """Partition p of the node finished: release what waited for it."""
        st = self.nodes[nid]
        st.outputs[p] = rec
        for cid in st.children:
            child = self.nodes[cid]
            if child.info.pointwise and not child.blocked:
                if all(p in self.nodes[d].outputs for d in child.info.inputs):
                    if not self._reuse(cid, p):
                        self.route(cid, p, 0, False)
        if st.complete:
            self.activate(st.children)
        if nid in self.watched:
            self.settle(nid)

    def complete_run(self, nid: int, first: int, block: RangeBlock) -> None:
        """Partitions first, first+1, ... of the node finished (a task range's successes): complete() for each,
        in one go when no pointwise child waits for them one by one (the block stands for each record)."""
        st = self.nodes[nid]
        n = len(block)
        if any(self.nodes[cid].info.pointwise for cid in st.children):
            for p in range(first, first + n):
                self.complete(nid, p, block.record(p))
            return
        st.outputs.update(dict.fromkeys(range(first, first + n), block))
        if st.complete:
            self.activate(st.children)
        if nid in self.watched:
            self.settle(nid)

    def fail(self, nid: int, p: int) -> None:
        """Partition p failed for good: the node's other partitions still run (their results are wanted);
        what depends on it cannot."""
        self.nodes[nid].failed.add(p)
        stack = list(self.nodes[nid].children)
        newly: List[int] = []
        while stack:
            cid = stack.pop()
            c = self.nodes[cid]
            if not c.blocked:
                c.blocked = True
                newly.append(cid)
                stack.extend(c.children)
        for cid in newly:
            self.settle(cid)
        if newly:
            self.active = deque(n for n in self.active if not self.nodes[n].blocked)
        self.settle(nid)

    def is_blocked(self, nid: int) -> bool:
        return self.nodes[nid].blocked

    def settle(self, nid: int) -> None:
        """Tell the live run's owner when a watched node has nothing more to come."""
        if self.nodes[nid].settled and nid in self.watched:
            self.watched.discard(nid)
            if self.on_settled is not None:
                self.on_settled(nid)

    def in_order(self, nid: int) -> List[Dict[str, Any]]:
        """A node's outcome records in partition order (with a million partitions, sorting would cost seconds)."""
        return [resolve(rec, p) for p, rec in self._entries(nid)]

    def outputs_in_order(self, nid: int) -> List[str]:
        """The output paths of a node's finished partitions, in partition order (partitions without one left out),
        read without making their records: a task range's block gives its column at once."""
        outputs = self.nodes[nid].outputs
        if len(outputs) != self.nodes[nid].info.npartitions:
            return [o for o in (output_of(rec, p) for p, rec in self._entries(nid)) if o]
        out: List[str] = []
        p, n = 0, len(outputs)
        while p < n:
            rec = outputs[p]
            if type(rec) is RangeBlock:
                block: RangeBlock = rec
                end = block.first + len(block)
                if end <= n and outputs.get(end - 1) is block:
                    out.extend(filter(None, block.outputs[p - block.first:]))
                    p = end
                    continue
            o = output_of(rec, p)
            if o:
                out.append(o)
            p += 1
        return out

    def output(self, nid: int, p: int) -> Optional[str]:
        """The output path of partition p (None: not finished, or it wrote none)."""
        rec = self.nodes[nid].outputs.get(p)
        return None if rec is None else output_of(rec, p)

    def _entries(self, nid: int) -> List[Tuple[int, Any]]:
        outputs = self.nodes[nid].outputs
        if len(outputs) == self.nodes[nid].info.npartitions:
            return [(p, outputs[p]) for p in range(len(outputs))]
        return [(p, outputs[p]) for p in sorted(outputs)]

    def changed_since(self, previous: Dict[str, str], infos: Optional[List[NodeInfo]] = None) -> List[str]:
        """Names of nodes whose fingerprint differs from the one the journal's earlier runs recorded."""
        infos = [st.info for st in self.nodes.values()] if infos is None else infos
        return [i.name for i in infos if i.name in previous and previous[i.name] != i.fingerprint]
