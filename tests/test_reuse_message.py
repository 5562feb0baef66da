"""A run that reuses what a run on another platform journaled says so in its closing summary, and how to compute
it again (the job id does not name the platform: `mpiexec` after a local run of the same script reuses it all)."""
import io
import os

import pytest

from helpers import BIN, QUICKSTART, mpiexec, python
from mpipipe.execution.journal import Journal, encode_ok_batch, run_record
from mpipipe.execution.progress import Progress, reused_elsewhere


def ok(fp, p, t=1795240646.5):
    return {"s": "ok", "k": f"{fp}:{p}", "n": "node", "p": p, "a": 0, "r": 1, "t0": t, "t1": t + 0.1, "o": None,
            "log": None}


def write(job_dir, records):
    j = Journal(str(job_dir))
    j.open()
    for rec in records:
        if isinstance(rec, bytes):
            j.append_line(rec)
        else:
            j.append(rec)
    j.close()


def test_replay_knows_the_platform_of_the_run_behind_each_outcome(tmp_path):
    write(tmp_path, [
        run_record("j", {"node": "f00d"}, 2, "local", 4),
        encode_ok_batch("f00d", "node", 1, [ok("f00d", p) for p in range(3)]),
        run_record("j", {"node": "f00d"}, 2, "mpi", 4),
        ok("f00d", 1),  # run again on mpi: its outcome is the one a replay keeps
        encode_ok_batch("f00d", "node", 1, [ok("f00d", 3)]),
        run_record("j", {"node": "f00d"}, 2, "mysite.Cluster", 4),
        ok("beef", 0),
    ])
    j = Journal(str(tmp_path))
    j.replay_by_node()
    o = j.origins
    assert o.mixed and o.first == "local"
    assert [o.platform_of("f00d", p) for p in range(4)] == ["local", "mpi", "local", "mpi"]
    assert o.platform_of("beef", 0) == "mysite.Cluster"


def test_one_platform_and_old_run_records_keep_no_per_task_origin(tmp_path):
    old = dict(run_record("j", {"node": "f00d"}, 2, "local", 2))
    del old["platform"]  # a run record of a version that did not name the platform
    write(tmp_path, [old, ok("f00d", 0), run_record("j", {"node": "f00d"}, 2, "local", 2), ok("f00d", 1)])
    j = Journal(str(tmp_path))
    j.replay_by_node()
    assert j.origins.mixed  # "" then "local"
    assert j.origins.platform_of("f00d", 0) == "" and j.origins.platform_of("f00d", 1) == "local"
    same = tmp_path / "same"
    same.mkdir()
    write(same, [run_record("j", {"node": "f00d"}, 2, "mpi", 2), ok("f00d", 0), run_record("j", {}, 2, "mpi", 2)])
    j = Journal(str(same))
    j.replay_by_node()
    assert not j.origins.mixed and j.origins.platform_of("f00d", 0) == "mpi"


def stats(**kw):
    base = {"job_id": "j", "status": "succeeded", "ran": 0, "cached": 17, "retried": 0, "failed": 0,
            "executors": 3, "platform": "mpi", "job_dir": "/tmp/j", "reused_from": {"local": 17}}
    base.update(kw)
    return base


def test_the_summary_names_the_other_platform_and_the_way_to_compute_again():
    out = io.StringIO()
    Progress(17, 0, stream=out, tty=False).summary(stats(), [])
    lines = out.getvalue().splitlines()
    assert lines[1] == ("[mpipipe] the 17 reused tasks were run earlier on local, not on mpi: to compute them "
                        "again on mpi, run with --fresh (or another --job-id)")
    assert reused_elsewhere(stats(reused_from={"mpi": 17})) == ""  # reused from a run on this platform: no word
    assert reused_elsewhere(stats(reused_from={"": 17})) == ""  # an old journal that does not say: no guess
    some = reused_elsewhere(stats(reused_from={"mpi": 10, "local": 5, "slurm": 2}))
    assert some.startswith("7 of the 17 reused tasks were run earlier on local and slurm, not on mpi")


def test_a_notebook_summary_stays_one_line_and_names_init():
    out = io.StringIO()
    Progress(17, 0, stream=out, mode="notebook", display=lambda *a, **k: None).summary(stats(platform="local",
                                                                                          reused_from={"mpi": 17}), [])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "run earlier on mpi, not on local" in lines[0]
    assert "mpipipe.init(fresh=True)" in lines[0]


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mpiexec")), reason="the virtualenv has no mpiexec")
def test_mpiexec_after_a_local_run_says_the_work_was_reused_from_local(data_root):
    args = ("--data-root", data_root, "-n", "4", "-w", "500")
    local = python(QUICKSTART, *args, check=True, timeout=120)
    assert "run earlier on" not in local.stderr
    done = mpiexec(3, QUICKSTART, *args, check=True, timeout=120)
    assert "0 tasks ran" in done.stderr and "9 reused from the journal" in done.stderr
    assert ("[mpipipe] the 9 reused tasks were run earlier on local, not on mpi: to compute them again on mpi, "
            "run with --fresh (or another --job-id)") in done.stderr, done.stderr
    fresh = mpiexec(3, QUICKSTART, *args, "--fresh", check=True, timeout=120)
    assert "9 tasks ran" in fresh.stderr and "run earlier on" not in fresh.stderr
    again = mpiexec(3, QUICKSTART, *args, check=True, timeout=120)  # reused from the mpi run: nothing to say
    assert "9 reused from the journal" in again.stderr and "run earlier on" not in again.stderr
