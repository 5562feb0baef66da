"""Tests for mpipipe.logical.node (Context, ComputeNode, LogicalPlan, fingerprints) and task paths."""
from __future__ import annotations

import functools
import os

import pytest

from mpipipe.errors import PlanError
from mpipipe.execution.task import replace_into_place, staging_path
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan, Node


def noop(task):
    return None


def other(task):
    return 1


def make_fn(body: str):
    """A function named `step` whose code is `return <body>` (no source file, like code typed in a REPL)."""
    ns = {"__name__": "generated"}
    exec(f"def step(task):\n    return {body}\n", ns)
    return ns["step"]


# --- Context and names -------------------------------------------------------------------------------


def test_default_names_and_unique_suffixes():
    ctx = Context()
    a = ComputeNode(ctx, noop)
    b = ComputeNode(ctx, noop)
    c = ComputeNode(ctx, noop, name="noop")
    d = ComputeNode(ctx, other, name="x")
    e = ComputeNode(ctx, other, name="x")
    assert [n.name for n in (a, b, c, d, e)] == ["noop", "noop-2", "noop-3", "x", "x-2"]
    assert ctx.nodes == [a, b, c, d, e]
    ids = [n.id for n in ctx.nodes]
    assert ids == sorted(ids) and len(set(ids)) == 5  # process-wide ids: unique, in creation order


def test_a_callable_without_a_name_is_named_compute():
    ctx = Context()
    assert ComputeNode(ctx, functools.partial(noop)).name == "compute"
    assert ComputeNode(ctx, functools.partial(noop)).name == "compute-2"


def test_a_lambda_without_a_name_gets_a_usable_default_name():
    node = ComputeNode(Context(), lambda task: None)
    assert "<" not in node.name and ">" not in node.name


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden", "-dash", "with space", "x" * 101, "tab\t", "é"])
def test_invalid_names(name):
    ctx = Context()
    with pytest.raises(PlanError, match="not usable as a folder name"):
        ComputeNode(ctx, noop, name=name)
    assert ctx.nodes == []


@pytest.mark.parametrize("name", ["a", "A_b-c.d", "0", "_x", "x" * 100])
def test_valid_names(name):
    assert ComputeNode(Context(), noop, name=name).name == name


def test_name_with_trailing_newline_is_rejected():
    with pytest.raises(PlanError):
        ComputeNode(Context(), noop, name="abc\n")


@pytest.mark.parametrize("npartitions", [0, -1, 1.0, 2.5, "3", None, True])
def test_bad_npartitions(npartitions):
    with pytest.raises(PlanError, match="npartitions"):
        ComputeNode(Context(), noop, npartitions=npartitions)


def test_pointwise_needs_equal_partition_counts():
    ctx = Context()
    a = ComputeNode(ctx, noop, npartitions=4, name="a")
    with pytest.raises(PlanError, match="pointwise with 3 partitions but input 'a' has 4"):
        ComputeNode(ctx, noop, inputs=[a], npartitions=3, pointwise=True)
    # fine when pointwise with the same count, or not pointwise
    assert ComputeNode(ctx, noop, inputs=[a], npartitions=4, pointwise=True).inputs == (a,)
    assert ComputeNode(ctx, noop, inputs=[a], npartitions=3).inputs == (a,)


def test_input_from_another_context():
    a = ComputeNode(Context(), noop, name="a")
    with pytest.raises(PlanError, match="another Context"):
        ComputeNode(Context(), noop, inputs=[a])


def test_inputs_must_be_nodes():
    with pytest.raises(PlanError, match="inputs must be nodes"):
        ComputeNode(Context(), noop, inputs=["a"])


@pytest.mark.parametrize("fn", [None, 3, "noop"])
def test_non_callable_fn(fn):
    ctx = Context()
    with pytest.raises(PlanError, match="needs a callable"):
        ComputeNode(ctx, fn)
    assert ctx.nodes == []


def test_node_needs_a_context():
    with pytest.raises(PlanError, match="Context"):
        ComputeNode(None, noop)


# --- LogicalPlan ---------------------------------------------------------------------------------------


def test_plan_has_only_reachable_nodes_in_dependency_order():
    ctx = Context()
    unused = ComputeNode(ctx, noop, name="unused")
    a = ComputeNode(ctx, noop, name="a", npartitions=2)
    b = ComputeNode(ctx, noop, name="b")
    c = ComputeNode(ctx, noop, inputs=[b, a], name="c", npartitions=3)
    dead_end = ComputeNode(ctx, noop, inputs=[c], name="dead_end")
    d = ComputeNode(ctx, noop, inputs=[c, a], name="d")
    plan = LogicalPlan(ctx, d)
    assert [n.name for n in plan.nodes] == ["a", "b", "c", "d"]
    assert unused not in plan.nodes and dead_end not in plan.nodes
    position = {n.id: i for i, n in enumerate(plan.nodes)}
    for n in plan.nodes:
        assert all(position[dep.id] < position[n.id] for dep in n.inputs)
    assert [i.name for i in plan.infos] == ["a", "b", "c", "d"]
    assert plan.infos[2].inputs == (b.id, a.id)
    assert plan.total_tasks == 2 + 1 + 3 + 1


def test_plan_with_several_roots():
    ctx = Context()
    a = ComputeNode(ctx, noop, name="a")
    b = ComputeNode(ctx, noop, name="b")
    c = ComputeNode(ctx, noop, name="c", inputs=[a])
    plan = LogicalPlan(ctx, [c, b])
    assert [n.name for n in plan.nodes] == ["a", "b", "c"]
    assert plan.roots == (c, b)


def test_plan_errors():
    ctx = Context()
    a = ComputeNode(ctx, noop)
    with pytest.raises(PlanError, match="at least one node"):
        LogicalPlan(ctx, [])
    with pytest.raises(PlanError, match="not a node of this Context"):
        LogicalPlan(Context(), a)
    with pytest.raises(PlanError, match="not a node of this Context"):
        LogicalPlan(ctx, [a, "b"])


def test_explain_mentions_every_node_and_partition_count():
    ctx = Context()
    src = ComputeNode(ctx, noop, name="source", npartitions=7)
    mid = ComputeNode(ctx, other, inputs=[src], name="middle", npartitions=7, pointwise=True)
    out = ComputeNode(ctx, noop, inputs=[mid, src], name="sink", npartitions=1)
    text = LogicalPlan(ctx, out).explain()
    lines = text.splitlines()
    assert lines[0] == "plan: 3 nodes, 15 tasks"
    assert "source: compute 'noop'; 7 partitions; inputs: -" in text
    assert "middle: compute 'other'; 7 partitions; inputs: source (pointwise)" in text
    assert "sink: compute 'noop'; 1 partition; inputs: middle, source" in text


# --- fingerprints ----------------------------------------------------------------------------------------


def chain(fn_a=noop, fn_b=other, args_a=None, version_a="", version_b="", npartitions_a=2):
    """A two-node plan a -> b; returns the fingerprints (a, b)."""
    ctx = Context()
    a = ComputeNode(ctx, fn_a, name="a", args=args_a, version=version_a, npartitions=npartitions_a)
    b = ComputeNode(ctx, fn_b, inputs=[a], name="b", version=version_b)
    infos = LogicalPlan(ctx, b).infos
    return infos[0].fingerprint, infos[1].fingerprint


def test_identical_plans_have_identical_fingerprints():
    assert chain() == chain()
    assert chain(args_a={"x": 1, "y": [2]}) == chain(args_a={"y": [2], "x": 1})
    assert chain(fn_a=make_fn("1")) == chain(fn_a=make_fn("1"))


def test_fingerprint_changes_with_function_code():
    a1, b1 = chain(fn_a=make_fn("1"))
    a2, b2 = chain(fn_a=make_fn("2"))
    assert a1 != a2
    assert b1 != b2  # the change flows downstream


def test_fingerprint_changes_with_a_different_function():
    assert chain(fn_a=noop)[0] != chain(fn_a=other)[0]


def test_fingerprint_changes_with_args():
    base = chain(args_a={"x": 1})
    changed = chain(args_a={"x": 2})
    assert base[0] != changed[0] and base[1] != changed[1]
    assert chain(args_a={})[0] != chain(args_a={"x": None})[0]


def test_fingerprint_changes_with_version():
    base = chain()
    changed = chain(version_a="2")
    assert base[0] != changed[0] and base[1] != changed[1]


def test_fingerprint_changes_with_partition_count():
    assert chain(npartitions_a=2)[0] != chain(npartitions_a=3)[0]


def test_upstream_change_changes_downstream_only():
    base_a, base_b = chain()
    a, b = chain(version_b="2")
    assert a == base_a  # upstream unchanged
    assert b != base_b


def test_same_node_in_different_contexts_has_the_same_fingerprint():
    fps = set()
    for _ in range(3):
        ctx = Context()
        ComputeNode(ctx, other, name="padding")  # ids differ, fingerprints must not
        n = ComputeNode(ctx, noop, name="n")
        fps.add(LogicalPlan(ctx, n).infos[0].fingerprint)
    assert len(fps) == 1


def test_distinct_nodes_of_one_plan_have_distinct_fingerprints():
    ctx = Context()
    a = ComputeNode(ctx, noop, name="a")
    b = ComputeNode(ctx, noop, name="b")
    infos = LogicalPlan(ctx, [a, b]).infos
    assert infos[0].fingerprint != infos[1].fingerprint


class CallableStep:
    def __call__(self, task):
        return 1


def test_callable_objects_fingerprint_by_code_not_identity():
    first, second = CallableStep(), CallableStep()  # both alive: different addresses
    assert chain(fn_a=first) == chain(fn_a=second)


# --- staging paths ---------------------------------------------------------------------------------------


def test_staging_path_is_beside_the_final_path():
    final = os.path.join("/jobs", "j1", "outputs", "node", "part-00003")
    p = staging_path(final, attempt=0, rank=2)
    assert os.path.dirname(p) == os.path.join("/jobs", "j1", "outputs", "node", ".staging")
    assert os.path.basename(p).startswith("part-00003.")
    assert staging_path(final, 1, 2) != p
    assert staging_path(final, 0, 3) != p
    assert staging_path(final, 0, 2) == p  # stable for the same attempt in the same process


def test_replace_into_place_when_nothing_is_there(tmp_path):
    staging = tmp_path / ".staging" / "part-0.a0"
    staging.mkdir(parents=True)
    (staging / "data").write_text("new")
    final = tmp_path / "part-0"
    replace_into_place(str(staging), str(final))
    assert (final / "data").read_text() == "new"
    assert not staging.exists()


def test_replace_into_place_replaces_an_existing_directory(tmp_path):
    final = tmp_path / "part-0"
    final.mkdir()
    (final / "data").write_text("old")
    (final / "stale").write_text("from the crashed run")
    staging = tmp_path / ".staging" / "part-0.a1"
    staging.mkdir(parents=True)
    (staging / "data").write_text("new")
    replace_into_place(str(staging), str(final))
    assert sorted(os.listdir(final)) == ["data"]
    assert (final / "data").read_text() == "new"
    assert sorted(os.listdir(tmp_path / ".staging")) == []  # no .old left behind


def test_replace_into_place_replaces_an_existing_file(tmp_path):
    final = tmp_path / "part-0"
    final.write_text("old file")
    staging = tmp_path / "staging-dir"
    staging.mkdir()
    (staging / "data").write_text("new")
    replace_into_place(str(staging), str(final))
    assert (final / "data").read_text() == "new"
    assert not (tmp_path / "staging-dir.old").exists()


def test_replace_into_place_missing_staging_raises(tmp_path):
    with pytest.raises(OSError):
        replace_into_place(str(tmp_path / "nope"), str(tmp_path / "final"))


def test_node_base_class_has_no_task_body():
    ctx = Context()
    n = Node(ctx, name="plain")
    assert n.name == "plain" and n.kind == "node"
    with pytest.raises(NotImplementedError):
        n.run_task(None)
