"""CallFuture (a Future that makes its Condition on first use) against the concurrent.futures API."""
import concurrent.futures as cf
import threading
import time

import pytest

from mpipipe.callfuture import CallFuture, settle_many


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.start()
    return t


def test_result_and_exception_set_before_anyone_waits():
    ok, bad = CallFuture(), CallFuture()
    settle_many([(ok, True, 3), (bad, False, KeyError("k"))])
    assert ok._cond is None and bad._cond is None  # finished without a Condition
    assert ok.done() and not ok.running() and not ok.cancelled()
    assert ok.result() == 3 and ok.exception() is None
    assert isinstance(bad.exception(), KeyError)
    with pytest.raises(KeyError):
        bad.result()
    assert "returned int" in repr(ok) and "raised KeyError" in repr(bad)


@pytest.mark.timeout(30)
def test_waiters_are_woken_by_results_set_later():
    futs = [CallFuture() for _ in range(3)]
    assert all(f.set_running_or_notify_cancel() for f in futs) and futs[0].running()
    later(0.1, settle_many, [(futs[0], True, "a")])
    assert futs[0].result(timeout=10) == "a"
    later(0.1, futs[1].set_exception, ValueError("v"))
    assert isinstance(futs[1].exception(timeout=10), ValueError)
    later(0.1, futs[2].set_result, None)
    done, not_done = cf.wait(futs, timeout=10)
    assert done == set(futs) and not not_done


@pytest.mark.timeout(30)
def test_timeouts():
    f = CallFuture()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0.05)
    done, not_done = cf.wait([f], timeout=0.05)
    assert not done and not_done == {f}
    with pytest.raises(cf.TimeoutError):
        list(cf.as_completed([f], timeout=0.05))
    f.set_result(1)  # waiters removed after the timeouts: finishing it still works
    assert f.result() == 1


@pytest.mark.timeout(30)
def test_as_completed_and_first_exception():
    futs = [CallFuture() for _ in range(4)]
    settle_many([(futs[2], True, 2)])  # one already done, before as_completed
    order = []
    later(0.1, settle_many, [(futs[0], True, 0), (futs[3], True, 3)])
    later(0.3, futs[1].set_result, 1)
    for f in cf.as_completed(futs, timeout=10):
        order.append(f.result())
    assert order[0] == 2 and sorted(order) == [0, 1, 2, 3]
    g = [CallFuture(), CallFuture()]
    later(0.1, g[0].set_exception, RuntimeError("x"))
    done, not_done = cf.wait(g, timeout=10, return_when=cf.FIRST_EXCEPTION)
    assert done == {g[0]} and not_done == {g[1]}


def test_callbacks():
    seen = []
    f = CallFuture()
    f.add_done_callback(lambda fut: seen.append(("before", fut.result())))
    settle_many([(f, True, 5)])
    f.add_done_callback(lambda fut: seen.append(("after", fut.result())))  # runs at once
    assert seen == [("before", 5), ("after", 5)]
    g = CallFuture()
    g.add_done_callback(lambda fut: seen.append(("cancelled", fut.cancelled())))
    assert g.cancel()
    assert seen[-1] == ("cancelled", True)


def test_cancel_and_invalid_states():
    f = CallFuture()
    assert f.cancel() and f.cancelled() and f.done()
    assert not f.set_running_or_notify_cancel()
    with pytest.raises(cf.CancelledError):
        f.result()
    with pytest.raises(cf.InvalidStateError):
        f.set_result(1)
    g = CallFuture()  # cancelled before it ran, with no Condition made by cancel: never runs
    g._state = "CANCELLED"
    assert not g.set_running_or_notify_cancel() and g._cond is None
    r = CallFuture()
    assert r.set_running_or_notify_cancel() and not r.cancel()  # a running future cannot be cancelled
    r.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        settle_many([(r, True, 3)])
    assert r.result() == 2


def test_plain_futures_are_settled_too():
    f = cf.Future()
    settle_many([(f, False, OSError("o"))])
    assert isinstance(f.exception(), OSError)


@pytest.mark.timeout(60)
def test_no_lost_wakeups_under_races():
    for _ in range(200):
        f = CallFuture()
        got = []
        t = threading.Thread(target=lambda: got.append(f.result(timeout=10)))
        t.start()
        time.sleep(0)
        settle_many([(f, True, 7)])
        t.join(15)
        assert got == [7]


def test_start_many_skips_cancelled_futures():
    from mpipipe.callfuture import start_many

    a, b, c, d = CallFuture(), CallFuture(), CallFuture(), cf.Future()
    assert b.cancel()
    seen = []
    c.add_done_callback(seen.append)  # has a Condition: started through the base class
    assert start_many([a, b, c, d]) == [True, False, True, True]
    assert a.running() and c.running() and d.running() and b.cancelled()
    done, _ = cf.wait([b], timeout=1)
    assert done == {b}
