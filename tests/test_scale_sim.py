"""Rank 0 at scale, in one process: the real scheduler and journal drive a simulated world of 1,000 executors
(mpipipe.execution.sim_transport). Tasks travel as ranges and come back as columns; every partition must be
journaled once, resume must reuse all of them, and the figures are printed (scripts/bench/scale_sim.py measures
them properly)."""
import os
import time

from mpipipe.execution.journal import Journal, read_records
from mpipipe.execution.scheduler import Scheduler, SchedulerOptions
from mpipipe.execution.sim_transport import SimTransport
from mpipipe.execution.task import TaskRange
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan


def _plan(n):
    ctx = Context()
    node = ComputeNode(ctx, lambda task: None, npartitions=n, name="noop")
    return node, LogicalPlan(ctx, node)


def _run(job_dir, plan, node, fresh, executors=1000):
    t = SimTransport(executors + 1)
    options = SchedulerOptions(job_id="sim", job_dir=job_dir, platform="sim", fresh=fresh, progress_interval=0)
    return t, Scheduler(t, plan.infos, [node.id], options, Journal(job_dir)).run()


def test_a_thousand_simulated_executors_run_and_journal_every_task_once(tmp_path):
    job_dir = str(tmp_path / "job")
    os.makedirs(os.path.join(job_dir, "logs"))
    node, plan = _plan(20_000)
    t0 = time.perf_counter()
    t, out = _run(job_dir, plan, node, fresh=True)
    took = time.perf_counter() - t0
    print(f"20,000 tasks on 1,000 simulated executors: {took:.2f} s ({20_000 / took:,.0f} tasks/s at rank 0), "
          f"{t.sent_messages:,} messages")
    assert out["stats"]["ran"] == 20_000 and out["stats"]["failed"] == 0
    assert t.sent_messages < 20_000  # tasks travel in ranges, not one message each
    oks = [r for r in read_records(os.path.join(job_dir, "journal.log")) if r.get("s") == "ok"]
    assert sorted(r["p"] for r in oks) == list(range(20_000))
    # the same plan again: everything from the journal, nothing sent
    t2, again = _run(job_dir, plan, node, fresh=False)
    assert again["stats"]["cached"] == 20_000 and again["stats"]["ran"] == 0
    assert t2.sent_messages == 0  # no task went out


def test_task_ranges_split_and_expand_to_the_same_tasks():
    rng = TaskRange(100, 7, 10, 5, 0, "fp", (("a",),), "/out/part-", 5)
    first, rest = rng.split(2)
    assert [t.partition for t in first.tasks()] == [10, 11] and [t.partition for t in rest.tasks()] == [12, 13, 14]
    assert [t.tid for t in first.tasks() + rest.tasks()] == [t.tid for t in rng.tasks()] == list(range(100, 105))
    t = rng.task(3)
    assert (t.key, t.output, t.inputs, t.attempt) == ("fp:13", "/out/part-00013", (("a",),), 0)
    assert rng.split(5) == (rng, None)


def test_a_node_handed_to_a_launcher_is_not_limited_by_the_executors(tmp_path):
    """A launcher-run step needing more than any executor offers is its launcher's to place: the run starts
    and its tasks are handed over (not refused as unservable)."""
    from mpipipe.execution.task import OK, Result

    job_dir = str(tmp_path / "job")
    os.makedirs(os.path.join(job_dir, "logs"))
    ctx = Context()
    node = ComputeNode(ctx, lambda task: None, npartitions=3, name="big", resources="cpu(cores=64, mem=512GiB)")
    plan = LogicalPlan(ctx, node)
    t = SimTransport(3)
    options = SchedulerOptions(job_id="sim", job_dir=job_dir, platform="sim", fresh=True, progress_interval=0)
    hosts = {r: {"host": "sim", "cores": 2, "memory": 4 << 30, "accelerators": []} for r in (1, 2)}
    s = Scheduler(t, plan.infos, [node.id], options, Journal(job_dir), resources={node.id: node.resources},
                  hosts=hosts)
    handed = []

    def submit(tasks):
        handed.extend(tasks)
        for task in tasks:
            s.handover.results.put(Result(task.tid, OK, {"output": None, "value": task.partition, "t0": 0.0,
                                                         "t1": 0.0, "log": None}))

    s.hand_over({node.id: submit})
    out = s.run()
    assert sorted(t.partition for t in handed) == [0, 1, 2]
    assert [r.get("v") for r in out["nodes"]["big"]] == [0, 1, 2]
