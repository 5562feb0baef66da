"""pipefunc pipelines on mpipipe: its SLURM guide with only the adaptive_scheduler import replaced, locally, under
`mpiexec -n 3` and on the real SLURM cluster; each function's resources reaching its tasks; executor dicts; the
executors' arguments; and mpipipe.Resources written the way pipefunc users write resources."""
from __future__ import annotations

import json
import os
import sys

import pytest

from helpers import BIN, REPO, env_for_tests, mpiexec, python, run
from mpipipe import context
from mpipipe.errors import ConfigError, MpipipeError, RequirementError
from mpipipe.execution.journal import read_records
from mpipipe.execution.worker import THREAD_VARIABLES
from mpipipe.resources import NodeResources, Resources

pipefunc = pytest.importorskip("pipefunc")

SEED = os.path.join(REPO, "tests", "pipelines", "pipefunc_seed.py")
PLACEMENT = os.path.join(REPO, "tests", "pipelines", "pipefunc_placement.py")
SLURM_DICT = os.path.join(REPO, "tests", "pipelines", "pipefunc_slurm_dict.py")
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))
# ranks claim 8 cores and 16 GiB, so the guide's {"cpus": 8} and {"cpus": 4, "memory": "8GB"} can be placed here
BIG_HOSTS = "1-2=cpu(cores=8, mem=16GiB)"


def last_json(done):
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def check_seed(out):
    assert out["tldr"] == 2
    assert out["using"] == {"z": [2 * x + 1 for x in range(10)], "z_sum": 100}
    static = out["static_dynamic"]
    assert static["geo"] == [1.0, 2.0]
    assert static["voltages"] == [[[v, w] for w in (0, 2)] for v in (0, 1, 2)]
    assert static["threads"] == [[abs(v - w) + 1 for w in (0, 2)] for v in (0, 1, 2)]  # per element, as asked
    split = out["split"]
    assert split["y"] == list(range(1, 101))
    assert split["chunks"] == 2  # size_per_learner=50: two tasks of 50 elements...
    # ...each on a pool of (up to) 8 one-thread processes; quick elements may leave a process idle
    assert 2 < split["processes"] <= 16 and split["threads"] == ["1"]
    assert out["internal"] == {"call": [6, 2], "map": [6, 2, "2"]}  # resources.cpus, and 2 cores held
    assert out["executors"] == {"a": [0, 10, 20, 30, 40], "b": [5, 15, 25, 35, 45]}
    assert out["file_array"] == [2 * x for x in range(20)]
    assert out["file_value"] == [f"Task {i} processed config with 100000 items." for i in range(5)]


# --- the guide's examples -------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_guide_runs_locally(tmp_path):
    done = python(SEED, "--num-executors", "2", "--hosts", BIG_HOSTS, "--data-root", str(tmp_path / "jobs"),
                  cwd=str(tmp_path), timeout=100)
    check_seed(last_json(done))
    assert "Automatic chunksize" not in done.stderr


@pytest.mark.timeout(120)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_the_guide_runs_under_mpiexec(tmp_path):
    done = mpiexec(3, SEED, "--hosts", BIG_HOSTS, "--data-root", str(tmp_path / "jobs"), "--only",
                   "using,static_dynamic,split,executors,file_array", cwd=str(tmp_path), timeout=100)
    out = last_json(done)
    assert out["using"]["z_sum"] == 100 and out["split"]["chunks"] == 2
    assert out["executors"]["b"] == [5, 15, 25, 35, 45] and out["file_array"] == [2 * x for x in range(20)]


# --- resources reach the tasks ------------------------------------------------------------------------------------


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.timeout(120)
def test_each_function_gets_its_cores_threads_and_a_place_in_the_job(tmp_path):
    root = tmp_path / "jobs"
    env = {k: v for k, v in env_for_tests().items() if k not in THREAD_VARIABLES}  # unplaced tasks see none
    done = python(PLACEMENT, "--num-executors", "1", "--workers-per-executor", "2", "--hosts",
                  "1=cpu(cores=2, mem=8GiB)", "--data-root", str(root), "--job-id", "placed", cwd=str(tmp_path),
                  env=env)
    out = last_json(done)
    held, shared = out["held"], out["shared"]
    assert {t[2] for t in held} == {"2"} and {t[2] for t in shared} == {"1"} and out["free"] == [None] * 4
    # a {"cpus": 2} task holds both cores of the rank: nothing runs beside it, though two workers are free
    for i, a in enumerate(held):
        assert not any(overlaps(a, b) for b in held[i + 1:] + shared), (a, held, shared)
    assert any(overlaps(a, b) for i, a in enumerate(shared) for b in shared[i + 1:]), shared
    assert "Completed all tasks" in done.stdout  # pipefunc's own progress display (rich)
    # the tasks are the job's: journaled, in `mpipipe status`, `mpipipe logs` and the report
    job = root / "placed"
    nodes = {}
    for rec in read_records(str(job / "journal.log")):
        if rec.get("s") == "ok":
            nodes.setdefault(rec["n"].rsplit("-", 2)[0], []).append(rec["r"])
    assert {k: len(v) for k, v in nodes.items()} == {"pipefunc-held": 4, "pipefunc-shared": 4, "pipefunc-free": 4}
    status = run([os.path.join(BIN, "mpipipe"), "status", str(job)], check=True).stdout
    assert "pipefunc-held-" in status and "4/4 done" in status
    run([os.path.join(BIN, "mpipipe"), "report", str(job)], check=True)
    page = (job / "report.html").read_text()
    assert "pipefunc-shared-" in page and "pipefunc-held-" in page


def test_a_need_no_executor_can_serve_fails_with_the_hosts_named(tmp_path):
    done = python(PLACEMENT, "--num-executors", "1", "--hosts", "1=cpu(cores=1, mem=8GiB)", "--max-retries", "0",
                  "--data-root", str(tmp_path / "jobs"), cwd=str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert "needs cpu(cores=2), which no executor can serve" in done.stderr and "rank 1" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="the MPICH wheel's mpiexec is not installed")
def test_under_mpiexec_only_rank_0_drives_a_slurm_executor(tmp_path):
    script = tmp_path / "drive.py"
    script.write_text("import os\nfrom mpipipe.pipefunc import SlurmExecutor\nSlurmExecutor()\n"
                      "print('driver', os.environ.get('PMI_RANK'), flush=True)\n")
    done = mpiexec(3, str(script), "--data-root", str(tmp_path / "jobs"), timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["driver", "0"]  # ranks 1 and 2 served the world and left


# --- arguments ----------------------------------------------------------------------------------------------------


@pytest.fixture
def quiet_session(tmp_path, monkeypatch):
    """No flags, SP_* or init() from elsewhere: an executor built here reads an empty command line."""
    for var in list(os.environ):
        if var.startswith(("SP_", "SLURM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setattr(sys, "argv", ["pipeline.py"])
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests
    return tmp_path


def test_the_executors_take_adaptive_schedulers_arguments_and_refuse_others(quiet_session):
    from mpipipe.pipefunc import MpiExecutor, SlurmExecutor
    from mpipipe.pipefunc.arguments import read_arguments

    ex = SlurmExecutor(name="sweep", folder="sched", partition="debug", nodes=1, cores_per_node=2, num_threads=1,
                       exclusive=True, executor_type="sequential", extra_scheduler=["--mail-type=END"],
                       size_per_learner=50, max_simultaneous_jobs=4, max_fails_per_job=1, job_manager_interval=2,
                       save_interval=60, log_interval=60, cleanup_first=False, quiet=False)
    assert ex.name == "sweep" and ex.size_per_learner == 50 and ex.executor_type == "sequential"
    launcher = ex.launcher
    assert (launcher.max_parallel, launcher.max_retries, launcher.resolved_options().poll_interval) == (4, 1, 2)
    need = ex.arguments.defaults
    assert need.slurm_options() == {"cpus_per_task": 2, "partition": "debug",
                                    "extra": ["--mail-type=END", "--exclusive"]}
    with pytest.raises(ConfigError, match=r"has no argument 'cores'; valid arguments: name, folder"):
        SlurmExecutor(cores=2)
    with pytest.raises(ConfigError, match="goal= is adaptive_scheduler's"):
        SlurmExecutor(goal=0.01)
    with pytest.raises(ConfigError, match="executor_type='mpi4py' is not available"):
        SlurmExecutor(executor_type="mpi4py")
    with pytest.raises(ConfigError, match="cores_per_node must be a whole number, got a tuple"):
        read_arguments("SlurmExecutor", {"cores_per_node": (1, 2)}, "x")
    with pytest.raises(ConfigError, match="nodes=2, but a task on a world's executors runs on one host"):
        MpiExecutor(nodes=2)
    with pytest.raises(ConfigError, match="MpiExecutor runs on a world launcher"):
        MpiExecutor(launcher=ex.launcher)


def test_pipefunc_resources_become_placement_needs_and_sbatch_options():
    from pipefunc.resources import Resources as PipefuncResources

    from mpipipe.pipefunc.arguments import read_arguments
    from mpipipe.pipefunc.needs import need_of

    need = need_of(PipefuncResources(cpus=4, memory="8GB", gpus=1, time="1:30:00", partition="gpu",
                                     extra_args={"mail-type": "END", "executor_type": "sequential"}), "f")
    assert need.world_spec("f") == Resources(cpus=4, memory="8GB", gpus=1, time=5400)
    assert need.slurm_options() == {"cpus_per_task": 4, "mem": "7630M", "gpus_per_node": "1", "time": "1:30:00",
                                    "partition": "gpu", "extra": ["--mail-type=END"]}
    assert need.executor_type == "sequential"
    multi = need_of(PipefuncResources(nodes=2, cpus_per_node=8), "g")
    assert multi.slurm_options() == {"cpus_per_task": 8, "nodes": 2}
    with pytest.raises(RequirementError, match="g asks for 2 nodes"):
        multi.world_spec("g")
    # the function's resources replace the executor's defaults, key by key
    defaults = read_arguments("SlurmExecutor", {"cores_per_node": 2, "partition": "cpu",
                                                "extra_scheduler": ["--time=10", "--qos=low"]}, "x").defaults
    merged = defaults.over(need_of({"memory": "1GB", "extra_args": {"time": 5}}, "h"))
    assert merged.slurm_options() == {"cpus_per_task": 2, "mem": "954M", "partition": "cpu",
                                      "extra": ["--qos=low", "--time=5"]}
    assert need_of({"parallelization_mode": "internal"}, "i").internal
    with pytest.raises(RequirementError, match="unknown resource key"):
        need_of({"cpu": 2}, "j")


def test_calls_that_are_not_pipefuncs_pass_through():
    from mpipipe.pipefunc.calls import classify

    assert classify(print, (1,), {}) is None


def test_import_mpipipe_never_imports_pipefunc():
    code = ("import sys, mpipipe, mpipipe.futures, mpipipe.resources, mpipipe.launchers\n"
            "mpipipe.Resources(memory='8GB')\n"
            "print('pipefunc' in sys.modules)")
    done = run([sys.executable, "-c", code], check=True)
    assert done.stdout.strip() == "False"


# --- mpipipe.Resources written the way pipefunc users write resources ------------------------------------------------


def test_resources_take_sizes_clock_times_and_say_what_is_wrong_in_one_line():
    r = Resources(cpus=2, memory="8GB", gpus=1, time="1:00:00")
    assert (r.cpus, r.memory, r.gpus, r.time) == (2, 8_000_000_000, 1, 3600.0)
    assert str(r.requirement()) == "duration=1h & cpu(mem=8GB, cores=2) & gpu"
    assert Resources(memory="512MiB").memory == 512 * 2 ** 20
    assert [Resources(time=t).time for t in ("30:00", "2-12", "90m", "90", 45)] == [1800, 216000, 5400, 90, 45]
    assert Resources(cpus=None, memory=None, time=None) == Resources()
    assert (Resources(extra_args={"exclusive": None, "mail-type": "END"}).extra_args
            == ("--exclusive", "--mail-type=END"))
    for kwargs, message in [({"memory": "8 gigs"}, "memory: expected a size such as 4GB or 512MiB, got '8 gigs'"),
                            ({"cpus": -1}, "cpus must be a whole number >= 0, got -1"),
                            ({"cpus": True}, "cpus must be a whole number >= 0, got True"),
                            ({"time": "soon"}, "time: expected a duration such as 4h, 90m, 1:00:00 or seconds"),
                            ({"gpus": 1.5}, "gpus must be a whole number >= 0, got 1.5")]:
        with pytest.raises(RequirementError) as e:
            Resources(**kwargs)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RequirementError, match="node 'a': resources: memory: expected a size"):
        Resources.from_dict({"memory": "x"}, "node 'a': resources")


def test_a_resources_function_may_take_a_nodes_inputs_by_name():
    by_name = NodeResources(lambda prep, other=None: {"cpus": len(prep)}, "fit", input_names=("prep", "other"))
    assert str(by_name.for_task((("p1", "p2"), ("o1",)))) == "cpu(cores=2)"
    whole = NodeResources(lambda inputs: {"cpus": len(inputs[1])}, "fit", input_names=("prep", "other"))
    assert str(whole.for_task((("p1", "p2"), ("o1",)))) == "cpu(cores=1)"
    keywords = NodeResources(lambda **inputs: {"cpus": len(inputs)}, "fit", input_names=("prep", "other"))
    assert str(keywords.for_task(((), ()))) == "cpu(cores=2)"
    with pytest.raises(RequirementError, match="takes 'x', which names none of the node's inputs"):
        NodeResources(lambda prep, x: 1, "fit", input_names=("prep",))


def test_futures_calls_refuse_a_resources_function(quiet_session):
    from mpipipe.futures import Executor
    from mpipipe.launchers.slurm import SlurmLauncher

    with pytest.raises(MpipipeError, match="resources must be static"):
        Executor(SlurmLauncher(), resources=lambda kw: {"cpus": 2})


# --- on the real SLURM cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(request):
    from slurm_cluster import cluster_env, running_cluster, slurm_available

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(f"no local SLURM cluster: {reason}")
    failed_before = request.session.testsfailed
    with running_cluster("pf-", lambda: request.session.testsfailed == failed_before) as conf:
        yield cluster_env(conf)


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_world_and_threads_in_one_executor_dict(cluster, tmp_path):
    env = env_for_tests({"SLURM_CONF": cluster["SLURM_CONF"], "SP_SLURM_TIME": "5", "SP_SLURM_SIGNAL": "0",
                         "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": BIN + os.pathsep + cluster["PATH"]})
    done = run([sys.executable, SLURM_DICT, "--num-executors", "1", "--data-root", str(tmp_path / "jobs")],
               env=env, cwd=str(tmp_path), timeout=240)
    out = last_json(done)
    a, m, c = out["a"], out["m"], out["c"]
    assert [t["value"] for t in a] == [0, 10, 20] and out["b"] == [5, 15, 25]
    assert all(t["job"] and t["slurm_cpus"] == "2" and t["threads"] == "2" for t in a)  # one SLURM job per element
    assert len({t["job"] for t in a}) == 3
    assert [t["value"] for t in m] == [1, 2, 3] and all(t["slurm_cpus"] == "2" for t in m)
    assert len({t["job"] for t in m}) == 2  # a map in chunks of size_per_learner=2
    assert c["job"] is None and c["threads"] == "1" and c["total"] == 45 + 6  # on this job's world
    assert "module pf-a: 3 run(s), 0 found in the cache, 3 to run on slurm" in done.stderr
    logs = list((tmp_path / "jobs").glob("*/slurm-modules/pf-a-*/attempt-1/logs/slurm-*.out"))
    assert len(logs) == 3


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_ctrl_c_cancels_the_arrays_the_pipeline_submitted(cluster, tmp_path):
    import signal
    import subprocess

    from helpers import kill_group, wait_for

    env = env_for_tests({"SLURM_CONF": cluster["SLURM_CONF"], "SP_SLURM_TIME": "5", "SP_SLURM_SIGNAL": "0",
                         "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": BIN + os.pathsep + cluster["PATH"]})
    err = tmp_path / "stderr.txt"
    script = os.path.join(REPO, "tests", "pipelines", "pipefunc_slurm_sleepy.py")
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, script, "--data-root", str(tmp_path / "jobs")], env=env,
                                cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: "to run on slurm" in err.read_text(), 60, "the array to be submitted")
        job_ids = []
        wait_for(lambda: job_ids.extend(p.name.split("_")[0][len("slurm-"):] for p in
                                        (tmp_path / "jobs").glob("*/slurm-modules/*/attempt-1/logs/slurm-*.out"))
                 or job_ids, 60, "an element to start")
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            kill_group(proc)
    text = err.read_text()
    assert "KeyboardInterrupt" in text and "cancelling SLURM job(s)" in text and "(scancel)" in text
    squeue = run(["squeue", "--noheader", "--array", f"--jobs={','.join(sorted(set(job_ids)))}", "--format=%T"],
                 env=env, timeout=30)
    assert not {"PENDING", "RUNNING"} & set(squeue.stdout.split()), squeue.stdout


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_calls_are_journaled_and_counted_by_status(cluster, tmp_path):
    """SlurmExecutor's calls are tasks of the job's world: ok records in its journal (the launcher ran them),
    counted by `mpipipe status`, their output in `mpipipe logs -t`, and shown in the report."""
    from mpipipe.execution.journal import kind

    env = env_for_tests({"SLURM_CONF": cluster["SLURM_CONF"], "SP_SLURM_TIME": "5", "SP_SLURM_SIGNAL": "0",
                         "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": BIN + os.pathsep + cluster["PATH"]})
    root = tmp_path / "jobs"
    script = os.path.join(REPO, "tests", "pipelines", "pipefunc_slurm_journal.py")
    done = run([sys.executable, script, "--num-executors", "1", "--data-root", str(root), "--job-id", "onslurm"],
               env=env, cwd=str(tmp_path), timeout=240)
    out = last_json(done)
    assert [d["value"] for d in out["doubled"]] == [2, 4, 6] and out["total"]["value"] == 12
    assert all(d["job"] and d["cpus"] == "2" for d in out["doubled"]) and out["total"]["job"]
    job = root / "onslurm"
    ok, names = {}, set()
    for rec in read_records(str(job / "journal.log")):
        if kind(rec) == "ok":
            ok.setdefault(rec["n"].rsplit("-", 2)[0], []).append(rec["p"])
            names.add(rec["n"])
    assert {k: sorted(v) for k, v in ok.items()} == {"pfj-doubled": [0, 1, 2], "pfj-total": [0]}
    status = run([os.path.join(BIN, "mpipipe"), "status", str(job)], env=env, check=True).stdout
    assert "pfj-doubled-" in status and "3/3 done" in status and "1/1 done" in status
    doubled = next(n for n in names if n.startswith("pfj-doubled-"))
    logs = run([os.path.join(BIN, "mpipipe"), "logs", str(job), "-t", f"{doubled}[1]"], env=env, check=True).stdout
    assert "doubling 2" in logs and "doubling 1" not in logs  # that element's part of its SLURM log
    run([os.path.join(BIN, "mpipipe"), "report", str(job)], env=env, check=True)
    assert "pfj-doubled-" in (job / "report.html").read_text()
    assert list(job.glob("slurm-modules/pfj-doubled-*/attempt-1/logs/slurm-*.out"))
