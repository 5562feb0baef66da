"""SlurmLauncher: modules run as SLURM job arrays, one element per run, with the result cache in front.

The first half needs no cluster: config() and option resolution, the
translation of a module's requirements, and the element's entry point
(mpipipe.launchers.shard_main) run in a subprocess on a hand-made spec. The
second half runs modules on the real single-node cluster of scripts/slurm-up,
started and stopped by the module's `cluster` fixture (as in
test_slurm_platform.py). The modules below are pickled by reference, so each
element imports this file again: keep its top-level imports light.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpipipe import context, session
from mpipipe.errors import ConfigError
from mpipipe.experiment import Param, Task, experiment
from mpipipe.launchers.base import ShardJob
from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions, write_spec
from mpipipe.module import Module, ModuleFailed, module_label, shards_of
from mpipipe.module_cache import ResultCache, read_result
from mpipipe.platform.slurm_build import sbatch_options
from mpipipe.platform.slurm_options import SITE_KEYS
from mpipipe.resources import Resources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_TIMEOUT = 300


# --- modules (run inside SLURM elements too) -------------------------------------------------------------------


class Square(Module):
    """value * value; with a trace folder, each run leaves its start and end times there."""

    transient = ("trace",)

    def __init__(self, n, trace=None, sleep=0.0):
        self.n = n
        self.trace = trace
        self.sleep = sleep

    def array(self):
        return list(range(self.n))

    def run(self, value=None, index=0):
        started = time.time()
        if self.sleep:
            time.sleep(self.sleep)
        if self.trace:
            with open(os.path.join(self.trace, str(index)), "w") as f:
                json.dump([started, time.time(), os.environ.get("SLURM_JOB_ID")], f)
        return value * value


class Flaky(Module):
    """Fails at the indices in `always` on every attempt, and at those in `once` on its first attempt only."""

    transient = ("markers",)

    def __init__(self, n, markers, always=(), once=()):
        self.n = n
        self.markers = markers
        self.always = tuple(always)
        self.once = tuple(once)

    def array(self):
        return [f"v{i}" for i in range(self.n)]

    def comment(self):
        return "flaky module\nfor the tests"

    def run(self, value=None, index=0):
        if index in self.always:
            raise ValueError(f"index {index} always fails\nsecond line")
        marker = os.path.join(self.markers, f"failed-{index}")
        if index in self.once and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"index {index} fails once")
        return f"{value}!"


class Needs(Module):
    def __init__(self, needs):
        self.needs = needs

    def requirements(self):
        return self.needs

    def run(self, value=None, index=0):
        return 1


class Steps(Module):
    """Counts to `steps`, one step per `sleep` seconds; checkpoint() returns the module with its progress.

    It saves no checkpoint itself: only SIGTERM does. Each start appends the step it starts from to
    <trace>/<index>.log; with `fail_at`, the run raises when it gets there.
    """

    transient = ("trace",)

    def __init__(self, steps, trace, sleep=0.05, fail_at=None):
        super().__init__()
        self.steps = steps
        self.trace = trace
        self.sleep = sleep
        self.fail_at = fail_at
        self.done = 0

    def checkpoint(self, *args, **kwargs):
        return self

    def run(self, value=None, index=0):
        with open(os.path.join(self.trace, f"{index}.log"), "a") as f:
            f.write(f"{self.done}\n")
        while self.done < self.steps:
            if self.done == self.fail_at:
                raise RuntimeError(f"fails at step {self.done}")
            time.sleep(self.sleep)
            self.done += 1
        return self.done


# --- isolation ----------------------------------------------------------------------------------------------------


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """No SP_*/SLURM_* from outside, no site config, no command line or init() left by other tests."""
    for var in list(os.environ):
        if var.startswith(("SP_", "SLURM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("SP_JOB_ID", "modules")
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests
    return tmp_path


# --- the gpus_per_node option ------------------------------------------------------------------------------------


def test_gpus_per_node_is_an_option_everywhere(job_env, monkeypatch):
    from mpipipe.config import build_config
    from mpipipe.driver import SLURM_DESTS, Driver
    from mpipipe.platform.slurm_options import resolve

    assert "gpus_per_node" in SITE_KEYS and "slurm_gpus_per_node" in SLURM_DESTS
    assert build_config({}, env={"SP_SLURM_GPUS_PER_NODE": "a100:2"}, init={}).slurm_gpus_per_node == "a100:2"
    assert build_config({}, env={}, init={"slurm_gpus_per_node": 1}).slurm_gpus_per_node == "1"
    # job_env undoes what builtin_arguments() tells the session
    assert Driver(args=["--gpus-per-node", "2"]).builtin_arguments() == {"slurm_gpus_per_node": "2"}
    assert Driver(args=["--slurm-gpus-per-node", "a100:4"]).builtin_arguments() == {"slurm_gpus_per_node": "a100:4"}
    session.use_command_line({}, {})
    monkeypatch.setenv("SP_SLURM_GPUS_PER_NODE", "3")
    assert resolve(build_config({}, init={})).gpus_per_node == "3"
    opts = sbatch_options(SlurmOptions(gpus_per_node="3", signal=0), job_name="j", output="o", cwd="/c")
    assert "--gpus-per-node=3" in opts


# --- config() and options -------------------------------------------------------------------------------------


def test_options_may_come_first():
    launcher = SlurmLauncher(SlurmOptions(partition="gpu"), max_parallel=2)
    assert launcher.priority == 0 and launcher.options.partition == "gpu"
    assert SlurmLauncher({"partition": "cpu"}).options.partition == "cpu"
    assert SlurmLauncher(3, SlurmOptions(qos="high")).priority == 3


def test_config_derives_a_launcher_and_leaves_the_original(job_env):
    base = SlurmLauncher(2, SlurmOptions(partition="debug", time="10"), max_parallel=4, tags=("a",))
    derived = base.config(partition="gpu", gpus_per_node=2, mem="8G", max_retries=5, priority=7)
    assert isinstance(derived, SlurmLauncher) and derived is not base
    assert derived.options == SlurmOptions(partition="gpu", time="10", gpus_per_node="2", mem="8G")
    assert (derived.priority, derived.max_retries, derived.max_parallel, derived.tags) == (7, 5, 4, ("a",))
    assert base.options == SlurmOptions(partition="debug", time="10")
    assert (base.priority, base.max_retries) == (2, None)
    assert derived.describe() == "slurm (partition gpu)" and base.describe() == "slurm (partition debug)"
    assert derived.config(time=None).options.time is None  # None lets SLURM decide again
    replaced = derived.config(options={"partition": "long", "time": 60})
    assert replaced.options == SlurmOptions(partition="long", time="60")


def test_config_rejects_unknown_keys_and_bad_values(job_env):
    launcher = SlurmLauncher()
    with pytest.raises(ConfigError) as info:
        launcher.config(partishun="gpu")
    message = str(info.value)
    assert "'partishun'" in message and "\n" not in message
    for valid in ("max_parallel", "max_retries", "poll_interval", "priority", "cache_dir", "partition", "time",
                  "gpus_per_node", "cpus_per_task", "mem", "account", "qos", "constraint", "exclude"):
        assert valid in message, valid
    with pytest.raises(ConfigError, match="SLURM time"):
        launcher.config(time="soon")
    with pytest.raises(ConfigError, match="max_parallel"):
        launcher.config(max_parallel=0)
    with pytest.raises(ConfigError, match="max_retries"):
        SlurmLauncher(max_retries=-1)
    with pytest.raises(ConfigError, match="poll_interval"):
        SlurmLauncher(poll_interval=0)
    with pytest.raises(ConfigError, match="unknown SLURM option"):
        SlurmLauncher(options={"partishun": "x"})
    with pytest.raises(ConfigError, match="SlurmOptions"):
        SlurmLauncher(options="debug")
    assert launcher.submitted == []


def test_without_options_the_job_options_are_used_with_config_changes_on_top(job_env, monkeypatch):
    monkeypatch.setenv("SP_SLURM_PARTITION", "from-env")
    monkeypatch.setenv("SP_SLURM_TIME", "30")
    site = job_env / "xdg-config" / "mpipipe" / "slurm.toml"
    site.parent.mkdir(parents=True)
    site.write_text('account = "from-site"\npartition = "site-loses"\n')
    launcher = SlurmLauncher()
    assert launcher.options is None
    assert launcher.resolved_options() == SlurmOptions(partition="from-env", time="30", account="from-site")
    assert launcher.describe() == "slurm (partition from-env)"
    derived = launcher.config(partition="mine", qos="high")
    assert derived.options is None  # still the job's options, read when a module runs
    assert derived.resolved_options() == SlurmOptions(partition="mine", time="30", account="from-site", qos="high")
    assert launcher.resolved_options().partition == "from-env"
    session.use_command_line({"slurm_time": "45"}, {})  # the command line wins over SP_SLURM_*
    assert derived.resolved_options().time == "45"


def test_requirements_fill_the_options_nobody_chose(job_env):
    launcher = SlurmLauncher(options=SlurmOptions())
    opts = launcher.resolved_options(Needs("cpu(cores=2, mem=4GiB) & cuda(mem=8GiB) * 2 & duration=90m"))
    assert (opts.cpus_per_task, opts.mem, opts.gpus_per_node, opts.time) == (2, "4096M", "2", "90")
    assert opts.signal == 120
    short = launcher.resolved_options(Needs("duration=2m"))
    assert short.time == "2" and short.signal == 60  # a warning 120 s before a 2-minute limit would be refused
    chosen = SlurmLauncher(options=SlurmOptions(cpus_per_task=8, time="5", gres="gpu:1"))
    opts = chosen.resolved_options(Needs("cpu(cores=2) & gpu & duration=1h"))
    assert (opts.cpus_per_task, opts.time, opts.gpus_per_node, opts.gres) == (8, "5", None, "gpu:1")
    opts = launcher.resolved_options(Needs(Resources(cpus=3, memory=1 << 30, partition="big",
                                                     extra_args=("--mail-type=END",))))
    assert (opts.cpus_per_task, opts.mem, opts.partition, opts.extra) == (3, "1024M", "big", ("--mail-type=END",))
    assert launcher.resolved_options(Needs({"cpus": 4})).cpus_per_task == 4
    either = launcher.resolved_options(Needs("cpu(cores=2) | cpu(cores=4)"))
    assert either.cpus_per_task is None  # SLURM cannot be asked for one of two shapes


def test_a_failure_without_an_error_record_says_how_the_element_ended(tmp_path):
    from mpipipe.platform.slurm_array import ElementResult

    job, _spec = fake_job(tmp_path, Flaky(2, str(tmp_path)))
    log = tmp_path / "slurm-7_1.out"
    log.write_text("array element 1 started\nslurmstepd: error: *** JOB 7 CANCELLED DUE TO TIME LIMIT ***\n")
    f = SlurmLauncher._failure(job, 1, 2, ElementResult(1, "TIMEOUT", None), str(log))
    assert (f.index, f.value, f.attempts, f.log) == (1, "v1", 2, str(log))
    assert f.error == "it ended without an exit code (SLURM state TIMEOUT)" and "TIME LIMIT" in f.traceback
    f = SlurmLauncher._failure(job, 0, 1, ElementResult(0, "FAILED", 137), str(tmp_path / "missing.out"))
    assert f.error == "it exited with code 137 (SLURM state FAILED)" and (f.log, f.traceback) == ("", "")


# --- the element's entry point ------------------------------------------------------------------------------------


def fake_job(tmp_path, module):
    shards, is_array = shards_of(module)
    cache = ResultCache(str(tmp_path / "cache"))
    paths = [cache.result_path(module, s) for s in shards]
    job = ShardJob(module, module_label(module), shards, paths, is_array)
    spec = str(tmp_path / "spec.pkl")
    write_spec(spec, job)
    return job, spec


def run_element(spec, index, *extra, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the spec's sys.path must be enough
    env["MPIPIPE_ARRAY_INDEX"] = str(index)
    return subprocess.run([sys.executable, "-m", "mpipipe.launchers.shard_main", spec, *extra], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_element_writes_its_result_and_clears_a_stale_error(tmp_path):
    job, spec = fake_job(tmp_path, Flaky(3, str(tmp_path), always=(1,)))
    positions = tmp_path / "positions.json"
    positions.write_text("[2, 1]")
    stale = Path(job.paths[2] + ".error.json")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text('{"error": "old"}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_element(spec, 0, str(positions), cwd=str(elsewhere))  # element 0 runs position 2
    assert done.returncode == 0, done.stderr
    assert read_result(job.paths[2]) == "v2!" and not stale.exists()
    assert not os.path.exists(job.paths[0]) and not os.path.exists(job.paths[1])
    done = run_element(spec, 0, cwd=str(elsewhere))  # without positions, element i runs position i
    assert done.returncode == 0, done.stderr
    assert read_result(job.paths[0]) == "v0!"


def test_element_failure_writes_the_error_and_exits_1(tmp_path):
    job, spec = fake_job(tmp_path, Flaky(3, str(tmp_path), always=(1,)))
    done = run_element(spec, 1, cwd=str(tmp_path))
    assert done.returncode == 1
    record = json.loads(Path(job.paths[1] + ".error.json").read_text())
    assert record["error"] == "ValueError: index 1 always fails"
    assert "raise ValueError" in record["traceback"] and "second line" in record["traceback"]
    assert "raise ValueError" in done.stderr and "Traceback" in done.stderr
    assert not os.path.exists(job.paths[1])


def test_element_usage_errors(tmp_path):
    job, spec = fake_job(tmp_path, Flaky(2, str(tmp_path)))
    assert run_element(spec, 5, cwd=str(tmp_path)).returncode == 2  # no such element
    assert run_element(str(tmp_path / "nope.pkl"), 0, cwd=str(tmp_path)).returncode == 2
    env = {k: v for k, v in os.environ.items() if k != "MPIPIPE_ARRAY_INDEX"}
    done = subprocess.run([sys.executable, "-m", "mpipipe.launchers.shard_main", spec], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "MPIPIPE_ARRAY_INDEX" in done.stderr


# --- checkpoints -----------------------------------------------------------------------------------------------------


def test_modules_that_checkpoint_are_requeued_within_a_bound(job_env, tmp_path):
    from mpipipe.core import Requirements

    launcher = SlurmLauncher(options=SlurmOptions(time="5"))
    steps = Steps(3, str(tmp_path))
    assert launcher.submission_options(steps).requeue and not launcher.submission_options(Square(2)).requeue
    assert launcher.requeue_limit(steps) == 3 and launcher.requeue_limit(Square(2)) is None
    assert launcher.config(max_requeues=1).requeue_limit(steps) == 1

    class Limited(Steps):
        def requirements(self):
            return Requirements(max_num_timeout=5, cpus_per_task=2)

    assert launcher.requeue_limit(Limited(3, str(tmp_path))) == 5  # stopes' max_num_timeout
    with pytest.raises(ConfigError, match="max_requeues"):
        SlurmLauncher(max_requeues=-1)
    # a SLURM option given as None (a config file's `partition: null`) is left to the job's options
    assert SlurmLauncher(partition=None, time="5").resolved_options().partition is None
    job, spec = fake_job(tmp_path, steps)
    write_spec(spec, job, launcher.requeue_limit(steps))
    import pickle

    with open(spec, "rb") as f:
        assert pickle.load(f)["max_requeues"] == 3


def _wait_for_line(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not (os.path.exists(path) and Path(path).read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)


def test_sigterm_saves_a_checkpoint_the_next_start_continues_from_it(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    job, spec = fake_job(tmp_path, Steps(40, str(trace)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPIPIPE_ARRAY_INDEX"] = "0"
    proc = subprocess.Popen([sys.executable, "-m", "mpipipe.launchers.shard_main", spec], env=env,
                            cwd=str(tmp_path), start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(trace / "0.log")
        time.sleep(0.5)  # some steps done
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 75, err  # stopped, its checkpoint saved
    assert "checkpoint 1 saved (SIGTERM)" in err and "continues from its checkpoint" in err
    assert os.path.exists(job.paths[0] + ".checkpoint") and not os.path.exists(job.paths[0])
    assert json.loads(Path(job.paths[0] + ".error.json").read_text())["error"].startswith("RunStopped: ")
    done = run_element(spec, 0, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "resuming from checkpoint 1" in done.stderr
    starts = [int(x) for x in (trace / "0.log").read_text().split()]
    assert starts[0] == 0 and 0 < starts[1] < 40  # the second start continued where SIGTERM left it
    assert read_result(job.paths[0]) == 40
    assert not os.path.exists(job.paths[0] + ".checkpoint")  # a finished run keeps no checkpoint


def test_requeued_too_often_the_element_stops_at_its_start(tmp_path):
    job, spec = fake_job(tmp_path, Steps(3, str(tmp_path)))
    write_spec(spec, job, 2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MPIPIPE_ARRAY_INDEX="0", SLURM_RESTART_COUNT="3")
    done = subprocess.run([sys.executable, "-m", "mpipipe.launchers.shard_main", spec], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "requeued 3 times, more than max_requeues=2" in done.stderr
    assert not os.path.exists(tmp_path / "0.log")  # it did not start
    env["SLURM_RESTART_COUNT"] = "2"
    assert subprocess.run([sys.executable, "-m", "mpipipe.launchers.shard_main", spec], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL).returncode == 0


def test_a_run_that_raises_drops_its_checkpoint_and_starts_over(tmp_path):
    from mpipipe.launchers.base import checkpoint_path, run_shard
    from mpipipe.module_cache import write_result
    from mpipipe.module import DelayedSubmission

    module = Steps(5, str(tmp_path), sleep=0, fail_at=3)
    job, _spec = fake_job(tmp_path, module)
    saved = Steps(5, str(tmp_path), sleep=0, fail_at=3)
    saved.done = 2
    write_result(checkpoint_path(job.paths[0]), {"resume": DelayedSubmission(saved, None, 0), "saves": 1,
                                                 "time": time.time()})
    with pytest.raises(RuntimeError, match="fails at step 3"):
        run_shard(module, job.shards[0], job.paths[0])
    assert (tmp_path / "0.log").read_text().split() == ["2"]  # it resumed at step 2
    assert not os.path.exists(checkpoint_path(job.paths[0]))  # then raised: its retry starts over
    Path(checkpoint_path(job.paths[0])).write_bytes(b"not a pickle")  # a damaged checkpoint: set aside
    module.fail_at = None
    assert run_shard(module, job.shards[0], job.paths[0]) == {"result": job.paths[0]}
    assert read_result(job.paths[0]) == 5 and (tmp_path / "0.log").read_text().split() == ["2", "0"]


# --- on the real cluster ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(request):
    """The environment for SLURM clients; the cluster is started once for the module and stopped after it."""
    from slurm_cluster import cluster_env, running_cluster, slurm_available

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(f"no local SLURM cluster: {reason}")
    failed_before = request.session.testsfailed
    with running_cluster("l-", lambda: request.session.testsfailed == failed_before) as conf:
        yield cluster_env(conf)


CHECKPOINT_JOB = os.path.join(REPO, "tests", "pipelines", "checkpoint_job.py")


def _checkpoint_case(env, base, steps, sleep, slurm_flags, requeue_after=None):
    """checkpoint_job.py with its module on SLURM (one run of `steps` steps), in its own process group;
    with `requeue_after`, `scontrol requeue` of its element that many seconds after the run started.
    Returns (exit code, stdout, stderr, the run's starts as the trace recorded them)."""
    trace = base / "trace"
    argv = [sys.executable, CHECKPOINT_JOB, "--platform", "local", "--data-root", str(base / "jobs"), "--trace",
            str(trace), "--runs", "1", "--steps", str(steps), "--sleep", str(sleep), "--on-slurm", *slurm_flags]
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = trace / "0.log"
    try:
        if requeue_after is not None:
            deadline = time.monotonic() + 90
            while not (log.exists() and log.read_text().strip()):
                assert time.monotonic() < deadline and proc.poll() is None, "the run never started"
                time.sleep(0.2)
            time.sleep(requeue_after)
            job = json.loads(log.read_text().splitlines()[0])["job"]
            subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=30, stdin=subprocess.DEVNULL,
                           capture_output=True)
        out, err = proc.communicate(timeout=CLUSTER_TIMEOUT - 60)
    finally:
        if proc.poll() is None:  # stop what we started: the script's group, then its element by job id
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if log.exists() and log.read_text().strip():
                job = json.loads(log.read_text().splitlines()[0])["job"]
                subprocess.run(["scancel", job], env=env, timeout=30, stdin=subprocess.DEVNULL, capture_output=True)
    starts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, out, err, starts


@pytest.fixture(scope="module")
def checkpoint_cases(cluster, tmp_path_factory):
    """The two slow checkpoint cases (each waits ~30 s for a requeued job to start again), started in the
    background as soon as the cluster is up: a 1-minute time limit with a warning 5 s before it, and
    `scontrol requeue` mid-run."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("checkpoints")
    env = {k: v for k, v in cluster.items() if not k.startswith("SP_")}
    env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + env["PATH"], SP_SLURM_POLL_INTERVAL="0.5",
               PYTHONUNBUFFERED="1")
    pool = ThreadPoolExecutor(2)
    futures = {
        # 60 one-second steps cannot fit in a start that is warned before its 60 s (SLURM warns up to 30 s early)
        "time_limit": pool.submit(_checkpoint_case, env, base / "time-limit", 60, 1.0,
                                  ["--slurm-time", "1", "--slurm-signal", "5"]),
        "requeue": pool.submit(_checkpoint_case, env, base / "requeue", 30, 0.5,
                               ["--slurm-time", "5", "--slurm-signal", "0"], requeue_after=4),
    }
    yield futures
    pool.shutdown(wait=True)


@pytest.fixture
def on_cluster(cluster, checkpoint_cases, job_env, monkeypatch):
    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, cluster[key])
    return job_env


def quick_launcher(tmp, **kwargs):
    """A launcher for the test cluster: short limit, no warning signal, fast polling, the test's own cache."""
    return SlurmLauncher(options=SlurmOptions(time="5", signal=0), poll_interval=0.5, cache_dir=str(tmp / "cache"),
                         **kwargs)


def work_dirs(tmp_path):
    folder = tmp_path / "jobs" / "modules" / "slurm-modules"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def squeue_states(job_ids):
    out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}",
                          "--format=%T"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return set(out.stdout.split())


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_a_100_run_array_with_a_cap_then_all_cached(on_cluster):
    tmp = on_cluster
    trace = tmp / "trace"
    trace.mkdir()
    launcher = quick_launcher(tmp, max_parallel=8)
    t0 = time.monotonic()
    results = asyncio.run(launcher.schedule(Square(100, str(trace), sleep=0.2)))
    took = time.monotonic() - t0
    assert results == [i * i for i in range(100)]
    assert len(launcher.submitted) == 1 and work_dirs(tmp) == ["Square-1"]
    spans = [json.loads((trace / str(i)).read_text()) for i in range(100)]  # every run left its trace
    assert len({job for _, _, job in spans}) == 100  # each in an element of its own
    peak = max(sum(1 for a, b, _ in spans if a <= t < b) for t, _, _ in spans)
    assert peak <= 8, peak  # the cap held
    print(f"100 runs on SLURM in {took:.1f} s (peak {peak} at once)")

    again = SlurmLauncher(options=SlurmOptions(time="5"), max_parallel=8, poll_interval=0.5,
                          cache_dir=str(tmp / "cache"))
    assert asyncio.run(again.schedule(Square(100, str(tmp / "other-trace"), sleep=0.2))) == results
    assert again.submitted == [] and work_dirs(tmp) == ["Square-1"]  # nothing submitted: all from the cache


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_a_run_that_always_fails_raises_module_failed_with_the_others(on_cluster):
    tmp = on_cluster
    launcher = quick_launcher(tmp, max_retries=1)
    with pytest.raises(ModuleFailed) as info:
        asyncio.run(launcher.schedule(Flaky(6, str(tmp), always=(3,))))
    e = info.value
    assert e.results == ["v0!", "v1!", "v2!", None, "v4!", "v5!"]
    [failure] = e.failures
    assert (failure.index, failure.value, failure.attempts) == (3, "v3", 2)
    assert failure.error == "ValueError: index 3 always fails"
    assert "raise ValueError" in failure.traceback
    assert os.path.basename(failure.log).startswith(f"slurm-{launcher.submitted[1]}_0") and os.path.isfile(failure.log)
    assert "raise ValueError" in Path(failure.log).read_text()
    assert len(launcher.submitted) == 2  # the first attempt, then element 3 alone
    second = tmp / "jobs" / "modules" / "slurm-modules" / "Flaky-1" / "attempt-2" / "positions.json"
    assert json.loads(second.read_text()) == [3]
    assert "Flaky[3] failed after 2 attempt(s): ValueError" in str(e)
    shown = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={launcher.submitted[0]}",
                            "--format=%j|%k"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert set(shown.stdout.split("\n")) - {""} == {"Flaky|flaky module for the tests"}  # name and comment
    script = (second.parent / "batch-0.py").read_text()
    assert "#SBATCH --no-requeue" in script and "#SBATCH --time=5" in script  # retries are the launcher's


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_runs_that_fail_once_succeed_on_the_retry(on_cluster):
    tmp = on_cluster
    launcher = quick_launcher(tmp, max_retries=2)

    async def both():  # two modules waited for side by side on one event loop
        return await asyncio.gather(launcher.schedule(Flaky(5, str(tmp), once=(1, 4))),
                                    launcher.schedule(Square(3)))

    results, squares = asyncio.run(both())
    assert results == [f"v{i}!" for i in range(5)] and squares == [0, 1, 4]
    assert len(launcher.submitted) == 3  # Flaky twice, Square once
    retry = tmp / "jobs" / "modules" / "slurm-modules" / "Flaky-1" / "attempt-2" / "positions.json"
    assert json.loads(retry.read_text()) == [1, 4]
    assert sorted(os.listdir(tmp / "cache" / "Flaky")) and not list((tmp / "cache").rglob("*.error.json"))


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_cancelling_the_wait_cancels_the_array(on_cluster):
    tmp = on_cluster
    launcher = quick_launcher(tmp, max_parallel=2)

    async def go():
        task = asyncio.create_task(launcher.schedule(Square(4, sleep=60)))
        deadline = time.monotonic() + 60
        while not (launcher.submitted and "RUNNING" in squeue_states(launcher.submitted)):
            assert time.monotonic() < deadline, "the array never started"
            await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    deadline = time.monotonic() + 30
    while squeue_states(launcher.submitted) != {"CANCELLED"}:  # every element, running or pending
        assert time.monotonic() < deadline, squeue_states(launcher.submitted)
        time.sleep(0.2)


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_a_plan_step_mapped_to_slurm_runs_as_an_array_and_resumes(on_cluster):
    """driver.run(plan, launchers={"heavy": SlurmLauncher}): gen and total on local executors, heavy on SLURM."""
    job = os.path.join(REPO, "tests", "pipelines", "plan_steps_job.py")
    root = str(on_cluster / "plan-jobs")
    argv = [sys.executable, job, "--platform", "local", "--num-executors", "2", "--data-root", root, "--on-slurm"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SP_")}

    def run():
        from helpers import run as run_command  # its own process group, killed as a whole on timeout

        done = run_command(argv, timeout=240, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1]), done.stderr

    out, err = run()
    assert out["total"] == 1000 and out["stats"] == {"ran": 9, "cached": 0}
    assert out["rank0"] not in out["heavy"] and not set(out["heavy"]) & set(out["gen"])  # SLURM elements ran them
    assert "module heavy: 4 run(s), 0 found in the cache, 4 to run on slurm" in err
    again, err = run()
    assert again["total"] == 1000 and again["stats"] == {"ran": 0, "cached": 9} and "module heavy" not in err


class Doubling(Task):
    """A task written the experimaestro way: its result says which SLURM job ran it."""

    x: Param[int]

    def execute(self):
        return {"double": 2 * self.x, "job": os.environ.get("SLURM_JOB_ID"), "started": time.time()}


def test_options_as_keywords_and_their_other_spellings(job_env):
    launcher = SlurmLauncher(nodes=1, partition="gpu", max_parallel=2)
    assert launcher.options is None and launcher.resolved_options() == SlurmOptions(nodes=1, partition="gpu")
    derived = launcher.config(gpu_per_node=1)
    assert derived.resolved_options().gpus_per_node == "1" and launcher.resolved_options().gpus_per_node is None
    assert SlurmLauncher(options=SlurmOptions(qos="high"), time=30).options == SlurmOptions(qos="high", time="30")
    assert SlurmLauncher(options={"gpu-per-node": 2}).options.gpus_per_node == "2"
    assert SlurmLauncher(options=SlurmOptions(nodes="2")).options.nodes == 2  # typed as the command line types it
    with pytest.raises(ConfigError, match="SLURM option nodes"):
        SlurmLauncher(options=SlurmOptions(nodes=0))


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_an_experiment_submits_tasks_in_the_background(on_cluster):
    tmp = on_cluster
    launcher = SlurmLauncher(nodes=1, time="5", signal=0, poll_interval=0.5, cache_dir=str(tmp / "cache"))
    t0 = time.monotonic()
    with experiment(launcher=launcher):
        tasks = [Doubling(x=x).submit() for x in range(3)]
        submitted_in = time.monotonic() - t0
    assert submitted_in < 2.0, submitted_in  # submit() did not wait for sbatch, let alone the jobs
    results = [t.result() for t in tasks]
    assert [r["double"] for r in results] == [0, 2, 4]
    assert len({r["job"] for r in results}) == 3 and None not in {r["job"] for r in results}
    assert len(launcher.submitted) == 3  # one array per task


# --- checkpoints on the cluster (started in the background by checkpoint_cases) ---------------------------------


def _check_resumed(case, steps):
    code, out, err, starts = case
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["results"] == [{"index": 0, "steps": steps}]
    assert starts[0]["start"] == 0 and starts[0]["restart"] == 0
    # every later start continued from the checkpoint of the one before it, in the same (requeued) job
    assert len(starts) >= 2 and all(0 < s["start"] < steps for s in starts[1:]), starts
    assert [s["start"] for s in starts] == sorted(s["start"] for s in starts)
    assert {s["job"] for s in starts} == {starts[0]["job"]} and starts[-1]["restart"] == len(starts) - 1
    return err


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_time_limit_warning_saves_a_checkpoint_and_the_requeued_run_continues(checkpoint_cases):
    _check_resumed(checkpoint_cases["time_limit"].result(), 60)


@pytest.mark.slurm
@pytest.mark.timeout(CLUSTER_TIMEOUT)
def test_scontrol_requeue_mid_run_continues_from_the_checkpoint(checkpoint_cases):
    code, out, err, starts = checkpoint_cases["requeue"].result()
    _check_resumed((code, out, err, starts), 30)
    assert starts[1]["start"] >= 4  # about 8 steps were done when it was requeued


def test_a_modules_own_needs_beat_the_site_config_but_not_what_the_user_chose(job_env, monkeypatch):
    site = job_env / "xdg-config" / "mpipipe" / "slurm.toml"
    site.parent.mkdir(parents=True)
    site.write_text('partition = "site-part"\ntime = "2"\ncpus_per_task = 1\naccount = "site-acct"\n'
                    'gres = "gpu:1"\n')
    module = Needs(Resources(cpus=4, gpus=2, time="2h", partition="big", extra_args=("--mail-type=END",)))

    def argv(launcher):
        return sbatch_options(launcher.submission_options(module), job_name="j", output="o", cwd="/c", world=False)

    head = ["--job-name=j", "--output=o", "--open-mode=append", "--chdir=/c"]
    # the site's partition, time and cores give way to the module's; its short time's warning (60 s) goes with it
    assert argv(SlurmLauncher()) == head + [
        "--cpus-per-task=4", "--partition=big", "--account=site-acct", "--time=120", "--gpus-per-node=2",
        "--no-requeue", "--signal=B:USR1@120", "--mail-type=END"]
    # options chosen on the launcher, in SP_SLURM_* and on the command line stay as chosen
    monkeypatch.setenv("SP_SLURM_CPUS_PER_TASK", "2")
    session.use_command_line({"slurm_time": "45"}, {})
    assert argv(SlurmLauncher(partition="mine", gres="gpu:a100:1")) == head + [
        "--cpus-per-task=2", "--partition=mine", "--account=site-acct", "--time=45", "--gres=gpu:a100:1",
        "--no-requeue", "--signal=B:USR1@120", "--mail-type=END"]
    assert argv(SlurmLauncher(options=SlurmOptions(partition="given"))) == head + [
        "--cpus-per-task=4", "--partition=given", "--time=120", "--gpus-per-node=2", "--no-requeue",
        "--signal=B:USR1@120", "--mail-type=END"]  # options of its own: the site config is not read
