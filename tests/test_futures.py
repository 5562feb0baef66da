"""The concurrent.futures face of the scheduler, on local processes and under mpiexec."""
import json
import os

import pytest

from helpers import BIN, REPO, mpiexec, python

JOB = os.path.join(REPO, "tests", "pipelines", "futures_job.py")
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))


def check(done, executors):
    assert done.returncode == 0, done.stderr
    out = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert out["error"] == ["KeyError", "'thirteen'", True]  # the task's exception, its traceback as the cause
    assert out["big"] == 200_000  # large results travel by file
    assert out["pids"] >= min(2, executors)  # six 0.2 s calls spread over the executors
    assert out["crash"] == "TaskFailedError"  # a worker that died on every attempt
    assert out["kwargs"] == 255
    assert out["after_shutdown"] == "cannot schedule new futures after shutdown"
    return out


@pytest.mark.timeout(120)
def test_executor_locally(tmp_path):
    done = python(JOB, "--platform", "local", "--num-executors", "3", "--n", "12", "--max-retries", "1",
                  "--data-root", str(tmp_path))
    out = check(done, 3)
    assert out["map"] == [x * x for x in range(12)]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_executor_under_mpiexec(tmp_path):
    done = mpiexec(3, JOB, "--platform", "mpi", "--n", "500", "--max-retries", "0", "--data-root", str(tmp_path),
                   timeout=100)
    out = check(done, 2)
    assert out["map"] == [x * x for x in range(500)]


@pytest.mark.timeout(120)
def test_map_raises_the_first_failing_call(tmp_path):
    code = ("import mpipipe, sys; sys.path.insert(0, %r); from futures_job import square; "
            "from mpipipe.futures import Executor\n"
            "mpipipe.Driver().get_arguments()\n"
            "with Executor() as ex:\n"
            "    try:\n"
            "        list(ex.map(square, range(-20, 0)))\n"
            "    except KeyError as e:\n"
            "        print('raised', e)\n") % os.path.dirname(JOB)
    script = tmp_path / "map_fails.py"
    script.write_text(code)
    done = python(str(script), "--platform", "local", "--num-executors", "2", "--data-root", str(tmp_path / "jobs"))
    assert done.returncode == 0, done.stderr
    assert "raised 'thirteen'" in done.stdout


@pytest.mark.timeout(120)
def test_calls_with_resources_are_placed_and_run_on_other_launchers(tmp_path):
    job = os.path.join(REPO, "tests", "pipelines", "futures_resources.py")
    from helpers import env_for_tests
    from mpipipe.execution.worker import THREAD_VARIABLES

    env = {k: v for k, v in env_for_tests().items() if k not in THREAD_VARIABLES}  # unplaced calls see none
    done = python(job, "--platform", "local", "--num-executors", "2", "--hosts", "1-2=cpu(cores=2, mem=8GiB)",
                  "--data-root", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert out["world"] == [[i, "2"] for i in range(3)]  # placed: two cores held, two threads
    assert out["one"] == [9, "1"] and out["plain"] == [5, None]
    assert out["arrays"] == [[i, "2"] for i in range(3)]  # a module array on a DynamicLauncher
    assert out["error"] == ["ValueError", "bad 4", True]
    assert "module arrays: 3 run(s), 0 found in the cache, 3 to run on local" in done.stderr
