"""A task range's successes stand in the graph as one block of columns; every way of reading a node's outcomes
(its records, its outputs in order, a child's inputs, what a run returns) gives what one record per task gave."""
from mpipipe.execution.graph import NodeRecords, PlanGraph
from mpipipe.execution.journal import RangeBlock, RangeOk, ok_record
from mpipipe.logical.plan import NodeInfo


def _graph(tmp_path, n=6, pointwise_child=False):
    infos = [NodeInfo(1, "src", "compute", n, (), False, "f00d", "src"),
             NodeInfo(2, "next", "compute", n, (1,), pointwise_child, "beef", "next")]
    routed = []
    g = PlanGraph(infos, str(tmp_path), lambda nid, p, a, front: routed.append((nid, p)))
    return g, routed


def _block(first, n, outputs, log="/j/logs/w.log"):
    t0 = [10.0 + i for i in range(n)]
    return RangeBlock("f00d", "src", first, 0, 2, t0, [t + 0.5 for t in t0], outputs, list(range(first, first + n)),
                      log, [100 + 10 * i for i in range(n + 1)])


def test_records_outputs_and_inputs_read_through_blocks(tmp_path):
    g, _ = _graph(tmp_path)
    outs = [f"/j/outputs/src/{p:06d}" if p % 2 == 0 else None for p in range(6)]
    g.complete_run(1, 0, _block(0, 3, outs[:3]))
    single = ok_record("f00d:3", "src", 3, 1, 1, 20.0, 20.5, outs[3], value=3)
    g.complete(1, 3, single)
    g.complete_run(1, 4, _block(4, 2, outs[4:]))
    assert g.outputs_in_order(1) == [o for o in outs if o]
    assert g.input_groups(2, 0) == (tuple(o for o in outs if o),)
    assert g.in_order(1)[3] is single and [g.output(1, p) for p in range(6)] == outs
    r1 = g.in_order(1)[1]
    assert type(r1) is RangeOk and dict(r1) == {"s": "ok", "k": "f00d:1", "n": "src", "p": 1, "a": 0, "r": 2,
                                               "t0": 11.0, "t1": 11.5, "o": None, "v": 1,
                                               "log": ("/j/logs/w.log", 110, 120)}
    assert [r["p"] for r in g.in_order(1)] == list(range(6))
    returned = NodeRecords(g, 1)
    assert len(returned) == 6 and returned == g.in_order(1) and returned[-1]["o"] == outs[5]
    assert [r.get("v") for r in returned[1:3]] == [1, 2]


def test_a_pointwise_child_is_released_partition_by_partition(tmp_path):
    g, routed = _graph(tmp_path, n=3, pointwise_child=True)
    g.nodes[2].active = True
    g.complete_run(1, 0, _block(0, 3, [None, "/j/outputs/src/000001", None]))
    assert sorted(p for nid, p in routed if nid == 2) == [0, 1, 2]
    assert all(type(g.nodes[1].outputs[p]) is RangeOk for p in range(3))  # records made: each child reads its own
