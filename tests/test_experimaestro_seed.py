"""Code from experimaestro's launcher and requirement docs runs on mpipipe with only its imports changed.

Each snippet below is pasted as the experimaestro docs write it; only the import
lines differ, by their package name (experimaestro -> mpipipe). SLURM submissions are checked by the sbatch argv
they would run (the `fake_sbatch` fixture builds it as a real submission does
and runs the runs in this process); tests/test_slurm_launcher.py runs an
experiment on the real cluster. The end-to-end local run is a subprocess
(tests/pipelines/experiment_job.py) on the direct launcher.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import textwrap
import threading
import time

import pytest

from helpers import REPO, env_for_tests, python, run
from mpipipe import Meta, Param, Task, experiment  # experimaestro: from experimaestro import ...
from mpipipe import context, session
from mpipipe.errors import ConfigError, MpipipeError, PlanError
from mpipipe.launchers.base import Launcher, run_shard
from mpipipe.launchers.slurm import ENTRY_MODULE
from mpipipe.module import Module, ShardFailure
from mpipipe.platform.slurm_array import SlurmArray

GiB = 1024**3
JOB = os.path.join(REPO, "tests", "pipelines", "experiment_job.py")


@pytest.fixture(autouse=True)
def clean_session(tmp_path, monkeypatch):
    """No command line, init() or SP_* from elsewhere; job files under tmp_path; the excepthook restored."""
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests
    monkeypatch.setattr(sys, "argv", ["experiment-test"])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    for var in [k for k in os.environ if k.startswith(("SP_", "SLURM_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("SP_JOB_ID", "xp-test")


@pytest.fixture
def fake_sbatch(monkeypatch, tmp_path):
    """SlurmLauncher without a cluster: each module's sbatch argv is built as a real submission builds it and
    recorded as (launcher, module label, argv); then its runs execute in this process."""
    from mpipipe.launchers.slurm import SlurmLauncher

    submitted = []

    async def run_shards(self, job):
        array = SlurmArray([sys.executable, "-m", ENTRY_MODULE, "spec.pkl"], len(job.shards),
                           str(tmp_path / "slurm-work"), options=self.submission_options(job.module),
                           max_array_size=1001, job_name=job.label)
        argv, _script = array.chunk_submission(0, len(job.shards), None)
        submitted.append((self, job.label, argv))
        await asyncio.sleep(0.2)  # in flight long enough for submissions made together to overlap
        for shard, path in zip(job.shards, job.paths):
            run_shard(job.module, shard, path)
        return []

    monkeypatch.setattr(SlurmLauncher, "run_shards", run_shards)
    return submitted


def options_of(argv):
    return [a for a in argv if a.startswith("--")]


# --- the docs' task ---------------------------------------------------------------------------------------------


class mytask(Task):  # noqa: N801  the docs' name
    def execute(self):
        return f"ran in {os.getpid()}"


# --- Launchers: priority ------------------------------------------------------------------------------------------


def test_priority_example():
    from mpipipe.launchers.slurm import SlurmLauncher
    from mpipipe.launchers.slurm import SlurmOptions  # the docs use it without importing it

    # Create launchers with different priorities
    fast_launcher = SlurmLauncher(options=SlurmOptions(partition="fast"), priority=10)
    slow_launcher = SlurmLauncher(options=SlurmOptions(partition="slow"), priority=1)

    assert (fast_launcher.priority, fast_launcher.options.partition) == (10, "fast")
    assert (slow_launcher.priority, slow_launcher.options.partition) == (1, "slow")
    assert SlurmLauncher().priority == 0  # default: 0


# --- Launchers: Slurm, config() -----------------------------------------------------------------------------------


def test_slurm_config_example(fake_sbatch):
    from mpipipe.launchers.slurm import SlurmLauncher

    launcher = SlurmLauncher(nodes=1)
    gpulauncher = launcher.config(gpu_per_node=1)

    with experiment(launcher=launcher):
        # Default
        mytask().submit()

        # If needed, options can be used
        mytask().submit(launcher=gpulauncher)

    by_launcher = {id(who): options_of(argv) for who, _label, argv in fake_sbatch}
    assert set(by_launcher) == {id(launcher), id(gpulauncher)}
    assert "--gpus-per-node=1" in by_launcher[id(gpulauncher)]
    assert not any(o.startswith("--gpus") for o in by_launcher[id(launcher)])
    assert launcher.resolved_options().nodes == gpulauncher.resolved_options().nodes == 1
    assert launcher.resolved_options().gpus_per_node is None  # config() left the original untouched


def test_both_gpu_spellings_and_keyword_options():
    from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions

    base = SlurmLauncher(options=SlurmOptions(partition="gpu"), time="1:00:00")
    assert base.options == SlurmOptions(partition="gpu", time="1:00:00")
    assert base.config(gpu_per_node=2).options.gpus_per_node == "2"
    assert base.config(gpus_per_node=2).options.gpus_per_node == "2"
    assert SlurmLauncher(gpu_per_node=4).resolved_options().gpus_per_node == "4"
    assert SlurmLauncher(options=SlurmOptions(gpus_per_node=3)).options.gpus_per_node == "3"  # typed like the CLI
    with pytest.raises(ConfigError) as info:
        SlurmLauncher(gpus_per_nod=1)
    assert "'gpus_per_nod'" in str(info.value) and "gpus_per_node" in str(info.value) and "\n" not in str(info.value)


# --- Launchers: DynamicLauncher ------------------------------------------------------------------------------------


def test_dynamic_launcher_example(fake_sbatch):
    from mpipipe.launchers import DynamicLauncher
    from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions

    # Create launchers with different priorities
    fast_partition = SlurmLauncher(
        options=SlurmOptions(partition="fast", time="1:00:00"),
        priority=10
    )
    slow_partition = SlurmLauncher(
        options=SlurmOptions(partition="slow", time="24:00:00"),
        priority=1
    )

    # By default, selects highest priority (fast_partition)
    # If priorities tie, samples uniformly among tied launchers
    dynamic = DynamicLauncher([fast_partition, slow_partition])

    # With sample=True, samples proportionally to priority
    # fast_partition has 10/(10+1) ≈ 91% chance of being selected
    dynamic_sampled = DynamicLauncher(
        [fast_partition, slow_partition],
        sample=True
    )

    with experiment(launcher=dynamic):
        mytask().submit()

    ((chosen, _label, argv),) = fake_sbatch
    assert chosen is fast_partition
    assert {"--partition=fast", "--time=1:00:00"} <= set(options_of(argv))

    dynamic_sampled.rng = random.Random(7)
    picks = [dynamic_sampled.resolve(mytask()) for _ in range(2200)]
    fast = sum(p is fast_partition for p in picks)
    assert 1900 < fast < 2100, fast  # 2000 expected (10/11)


def test_cluster_aware_launcher_example(fake_sbatch):
    from mpipipe.launchers import DynamicLauncher
    from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions

    available = {"a"}

    def is_cluster_available(launcher):  # the docs leave it to the reader
        return launcher.options.partition in available

    class ClusterAwareLauncher(DynamicLauncher):
        def update(self):
            # Check cluster availability and update priorities
            for launcher in self._launchers:
                if is_cluster_available(launcher):
                    launcher.priority = 10
                else:
                    launcher.priority = 0

    a = SlurmLauncher(options=SlurmOptions(partition="a"))
    b = SlurmLauncher(options=SlurmOptions(partition="b"))
    aware = ClusterAwareLauncher([a, b])
    with experiment(launcher=aware):
        mytask().submit()
        available.clear()
        available.add("b")
        mytask().submit()
    assert [who for who, _label, _argv in fake_sbatch] == [a, b]
    assert (a.priority, b.priority) == (0, 10)


# --- Launchers: connectors --------------------------------------------------------------------------------------


def test_only_the_local_connector_is_supported():
    from mpipipe import LocalConnector
    from mpipipe.launchers.direct import DirectLauncher
    from mpipipe.launchers.slurm import SlurmLauncher

    assert LocalConnector.instance() is LocalConnector.instance()
    assert DirectLauncher(connector=LocalConnector.instance()).connector is LocalConnector.instance()
    assert SlurmLauncher(connector=LocalConnector.instance()).connector is LocalConnector.instance()

    class SshConnector:
        pass

    for make in (lambda: SlurmLauncher(connector=SshConnector()), lambda: DirectLauncher(connector="ssh://host")):
        with pytest.raises(ConfigError) as info:
            make()
        text = str(info.value)
        assert "LocalConnector" in text and "this machine" in text and "\n" not in text
    with pytest.raises(ConfigError):
        SlurmLauncher().config(connector=SshConnector())
    import pickle

    assert pickle.loads(pickle.dumps(LocalConnector.instance())) is LocalConnector.instance()


# --- Requirements: parsing --------------------------------------------------------------------------------------


def test_parsing_examples():
    from mpipipe.launcherfinder.parser import parse

    # Request 8 NVIDIA GPUs with 32GB each
    req = parse("duration=40h & cpu(mem=700GiB) & cuda(mem=32GiB) * 8")
    (alt,) = req.alternatives
    assert (alt.duration, alt.cpu.memory, len(alt.accelerators)) == (40 * 3600, 700 * GiB, 8)
    assert {(a.kind, a.memory) for a in alt.accelerators} == {("cuda", 32 * GiB)}

    # Cross-platform: CUDA on Linux/Windows OR MPS on macOS
    req = parse("duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)")
    assert [a.accelerators[0].kind for a in req.alternatives] == ["cuda", "mps"]

    # Generic GPU requirement (matches any accelerator)
    req = parse("duration=2h & gpu(mem=4GiB)")
    assert req.alternatives[0].accelerators[0].kind == "gpu"

    assert req.multiply_duration(2) == parse("duration=4h & gpu(mem=4GiB)")
    assert parse("duration=90mins & cpu(mem=512MiB, cores=2)").alternatives[0].duration == 5400
    assert parse("duration=2days & cpu(mem=1G)").alternatives[0].cpu.memory == 10**9


def test_requirement_names_the_docs_list():
    import mpipipe.launcherfinder as lf

    for name in ("HostRequirement", "HostSimpleRequirement", "AcceleratorSpecification", "CudaSpecification",
                 "MPSSpecification", "CPUSpecification", "HostSpecification", "parse", "find_launcher"):
        assert hasattr(lf, name), name
    assert lf.find_launcher is __import__("mpipipe.launchers", fromlist=["find_launcher"]).find_launcher
    host = lf.HostSpecification(max_duration=3600, cpu=lf.CPUSpecification(cores=4, memory=8 * GiB),
                                accelerators=[lf.AcceleratorSpecification(memory=8 * GiB)])
    assert host.accelerators[0].kind == "gpu"  # generic: only gpu(...) requests take it
    assert lf.parse("gpu(mem=8GiB)").match(host) is not None
    assert lf.parse("cuda(mem=8GiB)").match(host) is None
    old_style = lf.HostSpecification(cuda=[lf.CudaSpecification(memory=16 * GiB)] * 2)  # the older keyword
    assert [d.kind for d in old_style.accelerators] == ["cuda", "cuda"]


def test_match_has_one_accelerator_per_device():
    from mpipipe.launcherfinder import CudaSpecification, HostSpecification, parse

    host = HostSpecification(accelerators=[CudaSpecification(memory=24 * GiB) for _ in range(8)])
    for text, devices in (("cuda(mem=16GiB) * 2", 2), ("cuda(mem=8GiB) & gpu(mem=4GiB) * 3", 4),
                          ("cuda * 8", 8), ("cpu(cores=2)", 0)):
        match = parse(text).match(host)
        assert match is not None and len(match.requirement.accelerators) == devices, text
    assert parse("cuda * 9").match(host) is None


def test_mps_unified_memory_note():
    from mpipipe.launcherfinder import CPUSpecification, HostSpecification, MPSSpecification, parse

    mac = HostSpecification(cpu=CPUSpecification(cores=8, memory=32 * GiB),
                            accelerators=[MPSSpecification(memory=32 * GiB)])
    assert parse("cpu(mem=16GiB) & mps(mem=16GiB)").match(mac) is not None
    assert parse("cpu(mem=16GiB) & mps(mem=17GiB)").match(mac) is None  # 33GiB of the 32GiB shared


# --- the launcher file ----------------------------------------------------------------------------------------

LAUNCHERS_PY = '''\
from typing import Set
from mpipipe.launcherfinder import (
    HostRequirement,
    HostSpecification,
    AcceleratorSpecification,
    CudaSpecification,
    MPSSpecification,
    CPUSpecification,
)
from mpipipe.launchers.slurm import SlurmLauncher, SlurmOptions
from mpipipe.launchers.direct import DirectLauncher
from mpipipe.connectors.local import LocalConnector


def find_launcher(requirements: HostRequirement, tags: Set[str] = set()):
    """Find a launcher"""

    if match := requirements.match(HostSpecification(accelerators=[])):
        # No GPU: run directly
        return DirectLauncher(connector=LocalConnector.instance())

    # CUDA cluster with SLURM
    if match := requirements.match(
        HostSpecification(
            max_duration=100 * 3600,
            cpu=CPUSpecification(cores=32, memory=129 * (1024**3)),
            accelerators=[CudaSpecification(memory=24 * (1024**3)) for _ in range(8)],
        )
    ):
        if len(match.requirement.accelerators) > 0:
            return SlurmLauncher(
                connector=LocalConnector.instance(),
                options=SlurmOptions(gpus_per_node=len(match.requirement.accelerators)),
            )

    # Apple Silicon with MPS (unified memory)
    if match := requirements.match(
        HostSpecification(
            cpu=CPUSpecification(cores=8, memory=32 * (1024**3)),
            accelerators=[MPSSpecification(memory=32 * (1024**3))],
        )
    ):
        return DirectLauncher(connector=LocalConnector.instance())

    # Could not find a host
    return None
'''


@pytest.fixture
def launchers_file(tmp_path, monkeypatch):
    folder = tmp_path / "mpipipe-config"
    folder.mkdir()
    (folder / "launchers.py").write_text(LAUNCHERS_PY)
    monkeypatch.setenv("MPIPIPE_CONFIG_DIR", str(folder))
    return folder / "launchers.py"


class Needs(Module):
    def __init__(self, needs):
        self.needs = needs

    def requirements(self):
        return self.needs

    def run(self, iteration_value=None, iteration_index=0):
        return 1


def sbatch_options_for(launcher, needs):
    module = Needs(needs)
    array = SlurmArray(["python"], 1, "/tmp/work", options=launcher.submission_options(module), max_array_size=1001,
                       job_name="needs")
    return options_of(array.chunk_submission(0, 1, None)[0])


@pytest.mark.parametrize("needs, gpus, extra", [
    ("cuda(mem=16GiB) * 2", 2, ()),
    ("duration=10h & cpu(cores=16, mem=64GiB) & cuda(mem=20GiB) * 8", 8,
     ("--cpus-per-task=16", "--mem=65536M", "--time=600")),
    ("gpu(mem=4GiB)", 1, ()),
    ("duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)", 1, ()),  # the CUDA alternative fits first
])
def test_launcher_file_sends_gpu_work_to_slurm(launchers_file, needs, gpus, extra):
    from mpipipe.launcherfinder import find_launcher
    from mpipipe.launchers.slurm import SlurmLauncher

    launcher = find_launcher(needs)
    assert isinstance(launcher, SlurmLauncher)
    assert launcher.options.gpus_per_node == str(gpus)
    opts = sbatch_options_for(launcher, needs)
    assert f"--gpus-per-node={gpus}" in opts and set(extra) <= set(opts), opts


@pytest.mark.parametrize("needs", [
    "cpu(cores=64, mem=1TiB)",  # no GPU: any size runs directly
    "duration=1000h",
    "cpu(mem=8GiB) & mps(mem=16GiB)",  # Apple Silicon
    "mps",
])
def test_launcher_file_runs_cpu_and_mps_work_directly(launchers_file, needs):
    from mpipipe.launcherfinder import find_launcher
    from mpipipe.launchers.direct import DirectLauncher

    assert type(find_launcher(needs)) is DirectLauncher


@pytest.mark.parametrize("needs", [
    "duration=40h & cpu(mem=700GiB) & cuda(mem=32GiB) * 8",  # the docs' parse example: no such host here
    "duration=200h & cuda(mem=8GiB)",  # longer than the cluster's 100h
    "cuda * 9",
    "cpu(mem=20GiB) & mps(mem=16GiB)",  # more than the Mac's unified 32GiB
])
def test_launcher_file_without_a_fit(launchers_file, needs):
    from mpipipe.launcherfinder import find_launcher

    assert find_launcher(needs, required=False) is None
    with pytest.raises(ConfigError, match="add a case to its find_launcher"):
        find_launcher(needs)


# --- Task ------------------------------------------------------------------------------------------------------


class Learn(Task):
    epochs: Param[int] = 100
    model: Param[str]
    layers: Param[list] = [1, 2]
    log_every: Meta[int] = 10

    def execute(self):
        return (self.model, self.epochs)


def test_task_parameters():
    from mpipipe.module import module_key

    learn = Learn.C(model="m")
    assert (learn.epochs, learn.model, learn.layers, learn.log_every) == (100, "m", [1, 2], 10)
    assert learn.layers is not Learn(model="m").layers  # each task has its own copy of a default
    assert module_key(Learn(model="m", log_every=1)) == module_key(learn)  # Meta: not the identity
    assert module_key(Learn(model="m", epochs=5)) != module_key(learn)
    assert learn.run() == ("m", 100)
    with pytest.raises(ConfigError, match="needs a value for its parameter 'model'"):
        Learn()
    with pytest.raises(ConfigError, match="has no parameter 'epoch'.*epochs"):
        Learn(model="m", epoch=3)
    with pytest.raises(NotImplementedError):
        Task().execute()

    class Longer(Learn):
        epochs = 500  # a new default, without repeating the annotation
        seed: Param[int] = 0

    assert (Longer(model="m").epochs, Longer(model="m").seed) == (500, 0)


def test_experiment_is_callable_whatever_the_import_order():
    code = textwrap.dedent("""
        import mpipipe.experiment as module
        from mpipipe import Task, experiment
        from mpipipe.experiment import experiment as again, Experiment
        import mpipipe
        assert experiment is again is module is mpipipe.experiment
        assert isinstance(experiment(), Experiment) and module.Task is Task
        print("ok")
    """)
    done = run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    done = run([sys.executable, "-c", "from mpipipe import experiment, Task\n"
                                      "print(type(experiment(name='x')).__name__)"], timeout=60)
    assert done.stdout.strip() == "Experiment", done.stderr


# --- experiment(): in the background, waited for at the end -----------------------------------------------------


class Sleepy(Launcher):
    """Runs each run in this process after `delay` seconds; records what ran and what was cancelled."""

    def __init__(self, delay=0.0, priority=0, **kwargs):
        kwargs.setdefault("cache", False)
        super().__init__(priority, **kwargs)
        self.delay = delay
        self.ran = []
        self.cancelled = []
        self.threads = set()

    async def run_shards(self, job):
        self.threads.add(threading.current_thread().name)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(job.label)
            raise
        failures = []
        for shard, path in zip(job.shards, job.paths):
            try:
                run_shard(job.module, shard, path)
            except Exception as e:  # noqa: BLE001
                failures.append(ShardFailure(shard.index, shard.value, f"{type(e).__name__}: {e}"))
        self.ran.append((job.label, time.monotonic()))
        return failures


class Add(Task):
    a: Param[int]
    b: Param[int] = 1

    def execute(self):
        if self.a < 0:
            raise ValueError(f"a={self.a} is negative")
        return self.a + self.b


class Plain(Module):
    def run(self, iteration_value=None, iteration_index=0):
        return "plain"


class Sum(Task):
    parts: Param[list]

    def execute(self):
        return "sum"


def test_submit_returns_at_once_and_the_block_waits():
    slow = Sleepy(delay=0.5)
    t0 = time.monotonic()
    with experiment(launcher=slow) as xp:
        tasks = [Add(a=i).submit() for i in range(4)]
        body = time.monotonic() - t0
        plain = xp.submit(Plain())  # any Module: a Future of its result
    assert body < 0.3, body  # submitting did not wait for the runs
    assert len(slow.ran) == 5 and time.monotonic() - t0 >= 0.5
    assert [t.result() for t in tasks] == [1, 2, 3, 4] and plain.result() == "plain"
    assert slow.threads and "MainThread" not in slow.threads


def test_leaving_the_block_raises_the_failures():
    with pytest.raises(MpipipeError) as info:
        with experiment(launcher=Sleepy()):
            good = Add(a=1).submit()
            Add(a=-1).submit()
            Add(a=-2).submit()
    error = info.value
    assert type(error).__name__ == "ExperimentFailed" and error.exit_code == 1
    assert str(error).splitlines()[0] == "experiment (unnamed): 2 of 3 submitted task(s) failed; each failure follows"
    assert "a=-1 is negative" in str(error) and "a=-2 is negative" in str(error)
    assert [task.a for task, _error in error.failures] == [-1, -2]
    assert good.result() == 2


def test_a_task_given_to_another_runs_first():
    launcher = Sleepy(delay=0.3)
    with experiment(launcher=launcher):
        first = Add(a=1).submit()
        after = Sum(parts=[first]).submit(launcher=Sleepy())
    assert first.result() == 2 and after.result() == "sum"
    assert launcher.ran[0][0] == "Add"
    with pytest.raises(MpipipeError) as info:
        with experiment(launcher=Sleepy()):
            Sum(parts=[Add(a=-1).submit()]).submit()
    assert "task Sum did not run: it takes task Add, which failed" in str(info.value)


def test_an_error_in_the_block_cancels_what_runs():
    slow = Sleepy(delay=30)
    t0 = time.monotonic()
    with pytest.raises(KeyError):
        with experiment(launcher=slow):
            task = Add(a=1).submit()
            time.sleep(0.2)
            raise KeyError("stop")
    assert time.monotonic() - t0 < 10 and slow.cancelled == ["Add"] and slow.ran == []
    with pytest.raises(Exception):
        task.result(timeout=1)


def test_submit_needs_a_running_experiment():
    with pytest.raises(PlanError, match="inside `with experiment"):
        Add(a=1).submit()
    xp = experiment(launcher=Sleepy())
    with xp:
        pass
    with pytest.raises(PlanError, match="not running"):
        xp.submit(Add(a=1))
    with pytest.raises(PlanError, match="already used"):
        with xp:
            pass
    with pytest.raises(ConfigError, match="Launcher"):
        experiment(launcher="slurm")
    with pytest.raises(PlanError, match="Module or Task"):
        with experiment(launcher=Sleepy()) as running:
            running.submit(lambda: 1)
    with pytest.raises(Exception, match="was not submitted"):
        Add(a=1).result()


def test_workdir_and_name_become_the_data_root_and_job_id(tmp_path, monkeypatch):
    monkeypatch.delenv("SP_DATA_ROOT")
    monkeypatch.delenv("SP_JOB_ID")
    context.update(init={"max_retries": 1})
    seen = {}

    class Where(Task):
        def execute(self):
            return "here"

    class Look(Sleepy):
        async def run_shards(self, job):
            seen["paths"] = list(job.paths)
            seen["config"] = session.current_config()
            return await super().run_shards(job)

    with experiment(tmp_path / "xp", "study", launcher=Look(cache=True)):
        Where().submit()
    config = seen["config"]
    assert (config.data_root, config.job_id, config.max_retries) == (str(tmp_path / "xp"), "study", 1)
    assert seen["paths"][0].startswith(str(tmp_path / "xp"))  # the result cache lives in the workdir
    assert session.init_options() == {"max_retries": 1}  # restored after the block


# --- end to end on the direct launcher -------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_end_to_end_on_the_direct_launcher(tmp_path):
    env = env_for_tests({"SP_NUM_EXECUTORS": "2"})
    out = tmp_path / "out"
    done = python(JOB, "--workdir", str(tmp_path / "xp"), "--out", str(out), timeout=180, env=env,
                  cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [s["square"] for s in report["squares"]] == [4, 9] and report["total"] == 13
    assert all(s["pid"] != os.getpid() for s in report["squares"])
    # the body ended before the tasks did (they sleep 1.5 s): submission is in the background
    assert report["body_ended"] < min(s["ended"] for s in report["squares"]) <= report["after_block"]
    assert (tmp_path / "xp" / "squares").is_dir()  # the job directory: <workdir>/<name>
    assert "found in the cache" in done.stderr

    again = python(JOB, "--workdir", str(tmp_path / "xp"), "--out", str(out), timeout=180, env=env,
                   cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("all found in the cache") == 3  # nothing ran twice

    failing = python(JOB, "--workdir", str(tmp_path / "xp"), "--out", str(out), "--fail", timeout=180, env=env,
                     cwd=str(tmp_path))
    assert failing.returncode == 0, failing.stderr
    report = json.loads(failing.stdout.strip().splitlines()[-1])
    assert report["failures"] == [["Broken", "ModuleFailed"], ["Total", "PlanError"]]
    assert "broken on purpose: test" in report["failed"] and report["total"] == 13
