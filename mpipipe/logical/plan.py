"""Nodes of a logical plan and the plan itself.

A node says what one step computes and how many partitions it has; the
scheduler turns each (node, partition) into a task lazily, so a node with a
million partitions costs nothing until its tasks are due.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from mpipipe.errors import PlanError

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

# Node ids are unique in the whole process, not per Context: one process may run several
# plans on the same executors, whose workers keep every node they were sent by id.
# They still grow in creation order, which LogicalPlan relies on.
_NODE_IDS = itertools.count()


def new_node_id() -> int:
    """A fresh node id, for a node made by copying another (mpipipe.logical.partial's twin)."""
    return next(_NODE_IDS)


SCOPES = ("element", "map")


class Context:
    """Owns the nodes of one plan and hands out unique node names."""

    def __init__(self) -> None:
        self.nodes: List["Node"] = []
        self._names: Dict[str, "Node"] = {}
        self.udfs: Dict[str, Any] = {}

    def create_function(self, name: str, func: Callable[..., Any], params: Any = None, return_type: Any = None,
                        use_arrow_type: bool = False) -> str:
        """A Python function the SQL of this plan's nodes may call by `name` (list it in the node's `udfs`);
        types as in mpipipe.logical.udf. Returns the name."""
        from mpipipe.logical.udf import PythonUDF

        self.udfs[name] = PythonUDF(name, func, params, return_type, use_arrow_type)
        return name

    def udf(self, name: str) -> Any:
        if name not in self.udfs:
            raise PlanError(f"no function {name!r} was made with ctx.create_function; "
                            f"made: {sorted(self.udfs) or 'none'}")
        return self.udfs[name]

    def _register(self, node: "Node", wanted: str) -> str:
        if not _NAME_RE.fullmatch(wanted):
            raise PlanError(
                f"node name {wanted!r} is not usable as a folder name; "
                "use letters, digits, '_', '-' or '.' (at most 100 characters)"
            )
        name = wanted
        suffix = 2
        while name in self._names:
            name = f"{wanted}-{suffix}"
            suffix += 1
        self._names[name] = node
        self.nodes.append(node)
        return name


class Node:
    """A step of the plan: `npartitions` tasks that read its inputs' outputs.

    `pointwise=True` makes partition p depend only on partition p of each input
    (inputs then need the same partition count), so work flows without a barrier;
    otherwise every partition sees all outputs of every input.
    """

    kind = "node"
    # set by __init__; declared here because __init__ reads them on its inputs before setting its own
    ctx: Context
    name: str
    npartitions: int

    def __init__(
        self,
        ctx: Context,
        inputs: "Node | Iterable[Node]" = (),
        npartitions: int = 1,
        name: Optional[str] = None,
        pointwise: bool = False,
        version: str = "",
        resources: Any = None,
        size_per_task: int = 1,
        scope: str = "element",
    ) -> None:
        inputs = (inputs,) if isinstance(inputs, Node) else tuple(inputs)
        if not isinstance(ctx, Context):
            raise PlanError(f"a node needs a Context as its first argument, got {type(ctx).__name__}")
        if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
            raise PlanError(f"node {name or self.kind!r}: npartitions must be a whole number >= 1, got {npartitions!r}")
        for dep in inputs:
            if not isinstance(dep, Node):
                raise PlanError(f"node {name or self.kind!r}: inputs must be nodes, got {type(dep).__name__}")
            if dep.ctx is not ctx:
                raise PlanError(f"node {name or self.kind!r}: input {dep.name!r} belongs to another Context")
            if pointwise and dep.npartitions != npartitions:
                raise PlanError(
                    f"node {name or self.kind!r} is pointwise with {npartitions} partitions but input "
                    f"{dep.name!r} has {dep.npartitions}; give them the same count or set pointwise=False"
                )
        self.resources = self._resources(resources, name or self.default_name(),
                                         tuple(d.name for d in inputs if isinstance(d, Node)))
        if scope not in SCOPES:
            raise PlanError(f"node {name or self.kind!r}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if isinstance(size_per_task, bool) or not isinstance(size_per_task, int) or size_per_task < 1:
            raise PlanError(f"node {name or self.kind!r}: size_per_task must be a whole number >= 1, "
                            f"got {size_per_task!r}")
        self.scope = scope
        self.size_per_task = size_per_task
        self.ctx = ctx
        self.inputs: Tuple[Node, ...] = tuple(inputs)
        self.npartitions = npartitions
        self.pointwise = pointwise
        self.version = str(version)
        self.id = next(_NODE_IDS)
        self.name = ctx._register(self, name or self.default_name())

    def default_name(self) -> str:
        return self.kind

    @property
    def group_size(self) -> int:
        """Tasks that share one placement: all of them for scope="map", else size_per_task."""
        return self.npartitions if self.scope == "map" else self.size_per_task

    @staticmethod
    def _resources(spec: Any, name: str, input_names: Tuple[str, ...] = ()) -> Any:
        """What each task needs (a requirement string, Resources, dict, or a function of the task's inputs,
        taken as one argument or by the input nodes' names)."""
        if spec is None:
            return None
        from mpipipe.errors import RequirementError
        from mpipipe.resources import NodeResources

        try:
            return NodeResources(spec, name, input_names)
        except RequirementError as e:
            raise PlanError(str(e)) from None

    def config_fingerprint(self) -> str:
        """What, besides inputs, decides this node's output: hashed into task keys."""
        return f"{self.kind}|{self.name}|{self.npartitions}|{self.pointwise}|{self.version}"

    def describe(self) -> str:
        return self.kind

    def run_task(self, task: Any) -> Any:
        """The task body, run in a worker process; `task` is a TaskContext."""
        raise NotImplementedError(f"{type(self).__name__} does not define run_task()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} x{self.npartitions}>"

    def __getstate__(self) -> Dict[str, Any]:
        """Shipped to workers without its Context: a node carries only what its tasks need."""
        state = dict(self.__dict__)
        state.pop("ctx", None)
        return state


TaskFunction = Callable[[Any], Any]


def _code_text(code: Any) -> str:
    """Bytecode, names and constants (nested code objects included), without memory addresses."""
    consts = [_code_text(c) if inspect.iscode(c) else repr(c) for c in code.co_consts]
    return repr((code.co_code, code.co_names, consts))


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A stable digest of a callable's code, so editing it re-runs its tasks (same across processes)."""
    if isinstance(fn, functools.partial):
        inner = code_fingerprint(fn.func)
        return hashlib.sha1(f"{inner}|{fn.args!r}|{sorted(fn.keywords.items())!r}".encode()).hexdigest()[:16]
    target = getattr(fn, "__func__", fn)
    if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.isbuiltin(target)):
        target = type(target)  # a callable object: its class's code decides what it does
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        text = _code_text(code) if code is not None else f"{type(target).__name__}"
    qual = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(target).__name__)}"
    return hashlib.sha1((qual + "\n" + text).encode()).hexdigest()[:16]


class ComputeNode(Node):
    """Calls `fn(task)` once per partition; `task` is a TaskContext.

    The function reads `task.inputs` (one list of upstream outputs per input
    node), writes files under `task.output_dir` (a private staging folder that
    is renamed into place when it returns) and may return a small JSON-able
    value that is journaled with the outcome.
    """

    kind = "compute"

    def __init__(
        self,
        ctx: Context,
        fn: TaskFunction,
        inputs: "Node | Iterable[Node]" = (),
        npartitions: int = 1,
        name: Optional[str] = None,
        pointwise: bool = False,
        version: str = "",
        args: Optional[Dict[str, Any]] = None,
        resources: Any = None,
        resources_variable: Optional[str] = None,
        size_per_task: int = 1,
        scope: str = "element",
        parallelization_mode: str = "split",
    ) -> None:
        if not callable(fn):
            raise PlanError(f"ComputeNode needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.args = dict(args or {})
        default = getattr(fn, "__name__", "")
        if not _NAME_RE.fullmatch(default):
            default = "compute"  # lambdas, partials and callable objects
        if parallelization_mode not in ("split", "internal"):
            raise PlanError(f"node {name or 'compute'!r}: parallelization_mode must be 'split' or 'internal', "
                            f"got {parallelization_mode!r}")
        # "internal": the function gets its allocation (cores, memory, devices) and runs its own parallelism
        if parallelization_mode == "internal" and not resources_variable:
            resources_variable = "resources"
        self.parallelization_mode = parallelization_mode
        self.resources_variable = resources_variable
        super().__init__(ctx, inputs, npartitions, name or default, pointwise, version, resources, size_per_task, scope)

    def config_fingerprint(self) -> str:
        return f"{super().config_fingerprint()}|{code_fingerprint(self.fn)}|{sorted(self.args.items())!r}"

    def describe(self) -> str:
        return f"compute {getattr(self.fn, '__qualname__', self.fn)!r}"

    def run_task(self, task: Any) -> Any:
        if self.resources_variable:  # the function manages its own parallelism with what it was given
            return self.fn(task, **{self.resources_variable: dict(task.resources)})
        return self.fn(task)


@dataclass(frozen=True)
class NodeInfo:
    """What the scheduler keeps of a node: no user code, just the shape of the graph."""

    id: int
    name: str
    kind: str
    npartitions: int
    inputs: Tuple[int, ...]
    pointwise: bool
    fingerprint: str
    describe: str
    reuse_check: str = ""  # a path in the output folder that must exist for a journaled output to be reused


class LogicalPlan:
    """The nodes reachable from the given roots, in dependency order."""

    def __init__(self, ctx: Context, roots: "Node | Iterable[Node]") -> None:
        roots_t = (roots,) if isinstance(roots, Node) else tuple(roots)
        if not roots_t:
            raise PlanError("a plan needs at least one node to compute")
        for r in roots_t:
            if not isinstance(r, Node) or r.ctx is not ctx:
                raise PlanError(f"plan root {r!r} is not a node of this Context")
        self.ctx = ctx
        self.roots = roots_t
        self.nodes = self._reachable(roots_t)
        for n in self.nodes:  # checks a node leaves to the plan (a query is bound once its inputs are known)
            check = getattr(n, "check_plan", None)
            if check is not None:
                check()
        # a node may read other inputs once its plan is known (an SQL aggregate combining partial aggregates)
        settled = [settle(self) for settle in (getattr(n, "settle_inputs", None) for n in self.nodes) if settle]
        if any(settled):
            self.nodes = self._reachable(roots_t)
        self._infos_made: Optional[List[NodeInfo]] = None

    @property
    def infos(self) -> List[NodeInfo]:
        """What the scheduler keeps of each node; made when the plan is submitted (or explained), which is when
        partition counts that do not line up are reported, as smallpond's planner reports them."""
        if self._infos_made is None:
            for n in self.nodes:
                check = getattr(n, "check_partitions", None)
                if check is not None:
                    check()
            self._infos_made = self._infos()
        return self._infos_made

    @property
    def root_node(self) -> Node:
        """smallpond's name for the (first) root."""
        return self.roots[0]

    def __str__(self) -> str:
        """The nodes and how they connect (no checks run: printing a plan never fails)."""
        lines = [f"plan: {len(self.nodes)} nodes"]
        for n in self.nodes:
            deps = ", ".join(d.name for d in n.inputs) or "-"
            lines.append(f"  {n.name}: {n.describe()}; {n.npartitions} partition(s); inputs: {deps}")
        return "\n".join(lines)

    @staticmethod
    def _reachable(roots: Tuple[Node, ...]) -> List[Node]:
        seen: Dict[int, Node] = {}
        stack = list(roots)
        while stack:
            n = stack.pop()
            if n.id not in seen:
                seen[n.id] = n
                stack.extend(n.inputs)
        # node ids grow in creation order, and a node can only take existing nodes as inputs
        return [seen[i] for i in sorted(seen)]

    def _infos(self) -> List[NodeInfo]:
        fps: Dict[int, str] = {}
        infos = []
        for n in self.nodes:
            h = hashlib.sha1(n.config_fingerprint().encode())
            for dep in n.inputs:
                h.update(fps[dep.id].encode())
            fps[n.id] = h.hexdigest()[:16]
            infos.append(
                NodeInfo(n.id, n.name, n.kind, n.npartitions, tuple(d.id for d in n.inputs), n.pointwise, fps[n.id],
                         n.describe(), getattr(n, "reuse_check", ""))
            )
        return infos

    @property
    def total_tasks(self) -> int:
        return sum(n.npartitions for n in self.nodes)

    def explain(self) -> str:
        lines = [f"plan: {len(self.nodes)} nodes, {self.total_tasks} tasks"]
        names = {n.id: n.name for n in self.nodes}
        for node, info in zip(self.nodes, self.infos):
            deps = ", ".join(names[d] for d in info.inputs) or "-"
            mode = " (pointwise)" if info.pointwise and info.inputs else ""
            buckets = getattr(node, "nbuckets", None)
            shape = (f"{info.npartitions} tasks writing {buckets} partitions" if buckets
                     else f"{info.npartitions} partition{'s' if info.npartitions != 1 else ''}")
            needs = f"; needs {node.resources}" if node.resources is not None else ""
            group = f"; {node.group_size} tasks per placement" if node.group_size > 1 else ""
            lines.append(f"  {info.name}: {info.describe}; {shape}; inputs: {deps}{mode}{needs}{group}")
        return "\n".join(lines)
