"""A launcher per step of a data plan: a mapped node's tasks run through its launcher, the others on the world."""
import json
import os

import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python
from mpipipe.execution.journal import read_records

JOB = os.path.join(REPO, "tests", "pipelines", "plan_steps_job.py")
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))


def out_of(done):
    assert done.returncode == 0, done.stderr
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def oks(data_root):
    (job,) = [d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d)) and d != "cache"]
    return [r for r in read_records(os.path.join(data_root, job, "journal.log")) if r.get("s") == "ok"]


@pytest.mark.timeout(120)
def test_mapped_step_runs_on_its_launcher_and_resumes_from_the_journal(tmp_path):
    root = str(tmp_path / "jobs")
    out = out_of(python(JOB, "--platform", "local", "--num-executors", "2", "--data-root", root))
    assert out["total"] == 1000 and out["stats"] == {"ran": 9, "cached": 0}
    assert set(out["heavy"]) == {out["rank0"]}  # the launcher ran them (in the scheduling process here)
    assert out["rank0"] not in out["gen"]  # the others ran on the world's executors
    recs = oks(root)
    assert {r["r"] for r in recs if r["n"] == "heavy"} == {0} and {r["r"] for r in recs if r["n"] == "gen"} <= {1, 2}
    again = out_of(python(JOB, "--platform", "local", "--num-executors", "2", "--data-root", root))
    assert again["total"] == 1000 and again["stats"] == {"ran": 0, "cached": 9}


@pytest.mark.timeout(120)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_mapped_step_under_mpiexec(tmp_path):
    out = out_of(mpiexec(3, JOB, "--platform", "mpi", "--data-root", str(tmp_path), timeout=100))
    assert out["total"] == 1000 and set(out["heavy"]) == {out["rank0"]}


@pytest.mark.timeout(120)
def test_failure_on_the_step_launcher_fails_the_job_with_its_error(tmp_path):
    done = python(JOB, "--platform", "local", "--num-executors", "2", "--data-root", str(tmp_path),
                  env=env_for_tests({"HEAVY_FAILS": "1"}))
    assert done.returncode == 1
    assert "task heavy[2] failed after 1 attempt(s): RuntimeError: heavy step refuses partition 2" in done.stderr
    recs = oks(str(tmp_path))
    assert not [r for r in recs if r["n"] == "total"]  # what depends on the failed step did not run


@pytest.mark.timeout(60)
def test_unknown_node_in_the_mapping_is_one_line(tmp_path):
    done = python(JOB, "--platform", "local", "--where", "nosuch", "--data-root", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == ("mpipipe: error: launchers name node(s) 'nosuch', which the plan does not have; "
                                   "its nodes: gen, heavy, total")
