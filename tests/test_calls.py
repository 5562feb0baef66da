"""A call node travels to the workers in columns when it can, and every call runs as submitted either way."""
import pickle
import types

import cloudpickle

from mpipipe.calls import CallNode, unpack_outcome
from mpipipe.logical.node import Context


def _add(a, b=0):
    return a + b


def _neg(a):
    return -a


def _shipped(calls, tmp_path):
    node = CallNode(Context(), calls, "calls-1", str(tmp_path))
    return node, cloudpickle.loads(cloudpickle.dumps(node))


def _run(node, p):
    return node.run_task(types.SimpleNamespace(partition=p, attempt=0))


def test_same_function_without_keywords_ships_in_columns(tmp_path):
    calls = [(_add, (i, i), {}) for i in range(50)]
    node, shipped = _shipped(calls, tmp_path)
    assert type(shipped.calls) is tuple  # the function once, then each call's arguments
    assert len(pickle.dumps(shipped.calls[1])) < len(cloudpickle.dumps(node.calls))
    assert [_run(shipped, p) for p in range(50)] == [2 * i for i in range(50)]
    assert [shipped.call(p) for p in range(50)] == calls


def test_mixed_calls_ship_as_submitted(tmp_path):
    calls = [(_add, (1,), {"b": 2}), (_neg, (5,), {}), (_add, (3, 4), {})]
    _, shipped = _shipped(calls, tmp_path)
    assert type(shipped.calls) is list
    assert [_run(shipped, p) for p in range(3)] == [3, -5, 7]


def test_an_exception_is_the_outcome(tmp_path):
    _, shipped = _shipped([(_neg, ("x",), {})], tmp_path)
    ok, exc = unpack_outcome(_run(shipped, 0))
    assert not ok and isinstance(exc, TypeError)
    assert "_neg" in str(exc.__cause__)  # the remote traceback names the function that raised
