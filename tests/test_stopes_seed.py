"""stopes code runs with only its imports changed: StopesModule (stopes' docs example: module overview and
composition), Module(config) and Module.build(), Hydra-instantiated launchers from mpipipe's config files
(examples/conf/launcher/*.yaml) with Hydra's and mpipipe's command-line overrides, locally, under
`mpiexec -n 4` and on the real SLURM cluster.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
import subprocess
import sys
import typing as tp
from dataclasses import dataclass, field

import pytest

from helpers import BIN, REPO, mpiexec, python
from mpipipe import context, session
from mpipipe.errors import ConfigError
from mpipipe.module import Module, module_key

hydra = pytest.importorskip("hydra")
from omegaconf import DictConfig, MISSING, OmegaConf  # noqa: E402  (hydra-core brings omegaconf)

from mpipipe.code.stopes_module import Requirements, StopesModule  # noqa: E402

SEED_JOB = os.path.join(REPO, "tests", "pipelines", "stopes_seed_job.py")
PIPELINE = os.path.join(REPO, "examples", "stopes_pipeline.py")
CONF = os.path.join(REPO, "examples", "conf")
LAUNCHER_FILES = sorted(glob.glob(os.path.join(CONF, "launcher", "*.yaml")))
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))


# --- modules of stopes' docs, here in-process ----------------------------------------------------------------


@dataclass
class MyModuleConfig:
    lang: str = MISSING
    shards: tp.List[str] = field(default_factory=lambda: ["s0", "s1"])
    out: str = "/tmp/out/${lang}"
    log_every: int = field(default=100, metadata={"transient": True})


class MyModule(StopesModule):
    def __init__(self, config: MyModuleConfig):
        super().__init__(config, MyModuleConfig)

    def array(self):
        return list(self.config.shards)

    def run(self, iteration_value: tp.Optional[tp.Any] = None, iteration_index: int = 0):
        return f"{self.config.lang}:{iteration_value}"


class Plain(Module):
    """A module that takes one config and keeps it, as stopes' modules do."""

    def __init__(self, config):
        super().__init__(config)

    def run(self, iteration_value=None, iteration_index=0):
        return self.config


class Attributes(Module):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def run(self, iteration_value=None, iteration_index=0):
        return self.n


class Untyped(StopesModule):
    def run(self, iteration_value=None, iteration_index=0):
        return None


class NotAModule:
    def __init__(self, config):
        self.config = config


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    for var in list(os.environ):
        if var.startswith(("SP_", "SLURM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests
    return tmp_path


# --- import paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,names", [
    ("mpipipe.code.stopes_module", ("StopesModule", "Requirements")),  # as stopes' docs write it
    ("mpipipe.core.stopes_module", ("StopesModule", "Requirements")),  # as stopes' code writes it
    ("mpipipe.core", ("StopesModule", "Requirements")),
])
def test_every_import_path_of_stopes_code_is_a_module(path, names):
    module = importlib.import_module(path)
    for name in names:
        assert getattr(module, name) is getattr(importlib.import_module("mpipipe.core.stopes_module"), name)


# --- Module(config) and Module.build ---------------------------------------------------------------------------


def test_module_takes_and_keeps_a_config_and_still_works_without_one():
    cfg = OmegaConf.create({"a": 1, "b": [1, 2]})
    assert Plain(cfg).config is cfg
    assert Module().config is None and "config" not in vars(Module())
    assert Attributes(3).n == 3 and "config" not in vars(Attributes(3))  # the cache key of such modules is unchanged
    assert module_key(Attributes(3)) == module_key(Attributes(3)) != module_key(Attributes(4))


def test_omegaconf_configs_are_keyed_by_value():
    same = [Plain(OmegaConf.create({"a": 1, "b": {"c": [1, 2]}})) for _ in range(2)]
    assert same[0].config is not same[1].config and module_key(same[0]) == module_key(same[1])
    assert module_key(Plain(OmegaConf.create({"a": 2, "b": {"c": [1, 2]}}))) != module_key(same[0])
    assert module_key(Plain(OmegaConf.create([1, 2]))) != module_key(Plain(OmegaConf.create([2, 1])))
    structured = Plain(OmegaConf.structured(MyModuleConfig(lang="bn")))
    assert module_key(structured) == module_key(Plain(OmegaConf.structured(MyModuleConfig(lang="bn"))))
    assert module_key(structured) != module_key(Plain(OmegaConf.structured(MyModuleConfig(lang="hi"))))
    # a transient field of a StopesModule's config leaves the key alone; the others change it
    base = MyModule(MyModuleConfig(lang="bn"))
    assert module_key(base) == module_key(MyModule(MyModuleConfig(lang="bn", log_every=5)))
    assert module_key(base) != module_key(MyModule(MyModuleConfig(lang="bn", shards=["x"])))


def test_build_follows_stopes_semantics():
    root = OmegaConf.create({
        "out": "/data",
        "embed_text": {"_target_": f"{__name__}.MyModule", "lang": "???", "shards": ["x", "y"],
                       "out": "${out}/emb/${.lang}"},
    })
    bn = StopesModule.build(root.embed_text, lang="bn")
    assert isinstance(bn, MyModule) and bn.config.lang == "bn" and bn.config.out == "/data/emb/bn"
    assert OmegaConf.is_readonly(bn.config) and isinstance(bn.config, DictConfig)
    assert OmegaConf.is_missing(root.embed_text, "lang")  # the pipeline's config is not changed
    assert bn.array() == ["x", "y"] and bn.run("x", 0) == "bn:x"
    assert module_key(StopesModule.build(root.embed_text, lang="hi")) != module_key(bn)
    assert module_key(StopesModule.build(root.embed_text, lang="bn")) == module_key(bn)
    # Module.build too, with a plain mapping and nested overrides merged in depth
    plain = Module.build({"_target_": f"{__name__}:Plain", "model": {"name": "m", "dim": 4}}, model={"dim": 8})
    assert isinstance(plain, Plain) and plain.config == {"_target_": f"{__name__}:Plain",
                                                         "model": {"name": "m", "dim": 8}}
    # stopes' older nested layout: the other keys are keyword arguments, the overrides go into `config`
    with pytest.warns(DeprecationWarning):
        nested = Module.build(OmegaConf.create({"_target_": f"{__name__}.Plain", "config": {"a": 1}}), a=2)
    assert nested.config.a == 2


def test_build_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="no _target_") as info:
        StopesModule.build(OmegaConf.create({"lang": "bn"}))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not a module"):
        Module.build({"_target_": f"{__name__}.NotAModule"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        Module.build({"_target_": "no_such_package.Mod"})
    with_target = dataclasses.make_dataclass("WithTarget", [("_target_", str, f"{__name__}.MyModule"),
                                                            ("lang", str, "bn")])
    with pytest.raises(ConfigError, match="cannot be merged") as info:
        Module.build(OmegaConf.structured(with_target), nosuch=1)  # a structured config has no such field
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="a dataclass or an OmegaConf DictConfig"):
        Untyped({"lang": "bn"})  # without a config class, as in stopes
    with pytest.raises(ConfigError, match="does not fit MyModuleConfig"):
        MyModule({"lang": "bn", "nosuch": 1})


def test_requirements_translate_for_slurm_and_for_world_launchers():
    from mpipipe.errors import RequirementError
    from mpipipe.launchers.slurm import SlurmOptions, fill_from_requirements
    from mpipipe.module import module_requirements

    req = Requirements(gpus_per_node=1, mem_gb=8, cpus_per_task=4, timeout_min=90, constraint="a100")
    opts = fill_from_requirements(SlurmOptions(), req, "x")
    assert (opts.cpus_per_task, opts.mem, opts.gpus_per_node, opts.time, opts.constraint) == (4, "8G", "1", "90",
                                                                                               "a100")
    assert fill_from_requirements(SlurmOptions(time="5", mem="2G"), req, "x").time == "5"  # options say first
    assert fill_from_requirements(SlurmOptions(), Requirements(timeout_min=1), "x").signal == 30

    class Needs(MyModule):
        def requirements(self):
            return req

    resources = module_requirements(Needs(MyModuleConfig(lang="bn")))
    assert (resources.gpus, resources.memory, resources.time, resources.cpus) == (1, 8 << 30, 5400.0, 0)
    with pytest.raises(RequirementError, match="one task"):
        Requirements(nodes=2).as_resources()


# --- launchers from config files ---------------------------------------------------------------------------


EXPECTED = {"local": "DirectLauncher", "mpi": "MpiLauncher", "world": "WorldLauncher", "slurm": "SlurmLauncher",
            "dynamic": "DynamicLauncher", "per_step": "LauncherMap"}


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: os.path.basename(p))
def test_each_launcher_file_instantiates_with_hydra_and_with_mpipipe(path, job_env):
    from mpipipe.launchers import instantiate, load_launcher_config

    name = os.path.splitext(os.path.basename(path))[0]
    by_hydra = hydra.utils.instantiate(OmegaConf.load(path))
    by_mpipipe = instantiate(load_launcher_config(path))
    assert type(by_hydra).__name__ == type(by_mpipipe).__name__ == EXPECTED[name]
    assert repr(by_hydra) == repr(by_mpipipe)


def test_every_launcher_has_a_config_file():
    assert sorted(EXPECTED) == sorted(os.path.splitext(os.path.basename(p))[0] for p in LAUNCHER_FILES)


def test_hydra_overrides_and_set_overrides_reach_the_launcher(job_env):
    from mpipipe.launchers import from_config, hydra_argv, load_launcher_config

    with hydra.initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = hydra.compose("stopes_pipeline", overrides=["launcher=slurm", "launcher.partition=debug",
                                                          "launcher.max_parallel=4", "++launcher.gres=gpu:1"])
    slurm = hydra.utils.instantiate(cfg.launcher)
    assert slurm.max_parallel == 4 and slurm.options is None  # SLURM options on top of the job's own
    assert (slurm.resolved_options().partition, slurm.resolved_options().gres) == ("debug", "gpu:1")

    # mpipipe's --set on the same file
    session.use_command_line({}, {}, ["partition=long", "max_requeues=2"])
    built = from_config(os.path.join(CONF, "launcher", "slurm.yaml"))
    assert built.resolved_options().partition == "long" and built.max_requeues == 2
    assert hydra.utils.instantiate(load_launcher_config(os.path.join(CONF, "launcher", "local.yaml"))).cache

    # a @hydra.main script: mpipipe's flags leave the command line, --set becomes Hydra's ++KEY=VALUE
    left = hydra_argv(["--num-executors", "3", "launcher=slurm", "--set", "launcher.max_parallel=8",
                       "--set", "launcher.partition=gpu",
                       "--set", "launcher.tags=[\"a\", \"b\"]", "--data-root", str(job_env / "r")])
    assert left == ["launcher=slurm", "++launcher.max_parallel=8", "++launcher.partition='gpu'",
                    "++launcher.tags=['a','b']"]
    assert session.current_config().num_executors == 3
    with hydra.initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = hydra.compose("stopes_pipeline", overrides=left)
    launcher = hydra.utils.instantiate(cfg.launcher)
    assert (launcher.max_parallel, launcher.tags, launcher.resolved_options().partition) == (8, ("a", "b"), "gpu")


# --- the docs' examples, run -----------------------------------------------------------------------------------


def seed_results(done):
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    out = json.loads(lines[0])
    for lang in ("en", "bn", "hi"):
        assert [r["value"] for r in out[lang]] == ["a", "b", "c"]
        assert [r["index"] for r in out[lang]] == [0, 1, 2]
        for r in out[lang]:
            with open(r["path"]) as f:
                assert f.read() == f"{lang}:{r['value']}\n"
    for lang in ("en", "bn", "hi"):  # name() and comment() in the progress lines
        assert f"module my_module.{lang}: 3 run(s), 0 found in the cache" in done.stderr
        assert f"module my_module.{lang}: stopes docs example for {lang}" in done.stderr
    return out


@pytest.mark.timeout(120)
def test_docs_examples_run_locally_then_from_the_cache(tmp_path):
    argv = ("--num-executors", "2", "--data-root", str(tmp_path / "jobs"), "--out", str(tmp_path / "out"),
            f"launcher.cache_dir={tmp_path / 'cache'}")
    out = seed_results(python(SEED_JOB, *argv, timeout=100))
    assert out["launcher"] == "DirectLauncher"
    again = python(SEED_JOB, *argv, timeout=100)
    assert again.returncode == 0 and again.stderr.count("all found in the cache") == 3


@pytest.mark.mpi
@pytest.mark.timeout(150)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="no mpiexec in the virtualenv")
def test_docs_examples_run_under_mpiexec(tmp_path):
    done = mpiexec(4, SEED_JOB, "--platform", "mpi", "--launcher", "world", "--data-root", str(tmp_path / "jobs"),
                   "--out", str(tmp_path / "out"), f"launcher.cache_dir={tmp_path / 'cache'}", timeout=130)
    out = seed_results(done)
    assert out["launcher"] == "WorldLauncher" and "to run on mpi (3 executor(s))" in done.stderr
    assert len({r["pid"] for lang in ("en", "bn", "hi") for r in out[lang]}) >= 2  # spread over executors


@pytest.mark.timeout(150)
def test_hydra_pipeline_example_with_hydra_and_mpipipe_overrides(tmp_path):
    done = python(PIPELINE, "--num-executors", "2", "--data-root", str(tmp_path / "jobs"), "--set",
                  f"launcher.cache_dir={tmp_path / 'cache'}", "src_lang=fr", "embed_text.shards=2",
                  cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out == {"merged": str(tmp_path / "stopes-output" / "merged.json"), "vectors": 200, "files": 4}
    assert "module embed.fr: 2 run(s), 0 found in the cache" in done.stderr
    assert "module embed.fr: embedding 2 shard(s) of fr" in done.stderr
    assert os.listdir(tmp_path / "cache")  # --set reached the launcher Hydra built


@pytest.mark.mpi
@pytest.mark.timeout(150)
@pytest.mark.skipif(not HAS_MPIEXEC, reason="no mpiexec in the virtualenv")
def test_hydra_pipeline_example_under_mpiexec(tmp_path):
    done = mpiexec(4, PIPELINE, "--platform", "mpi", "--data-root", str(tmp_path / "jobs"), "launcher=mpi",
                   f"launcher.cache_dir={tmp_path / 'cache'}", cwd=str(tmp_path), timeout=130)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["vectors"] == 300
    assert "to run on mpi (3 executor(s))" in done.stderr


# --- on the real SLURM cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_env(request):
    from slurm_cluster import cluster_env, running_cluster, slurm_available

    ok, reason = slurm_available()
    if not ok:
        pytest.skip(f"no local SLURM cluster: {reason}")
    failed_before = request.session.testsfailed
    with running_cluster("s-", lambda: request.session.testsfailed == failed_before) as conf:
        from helpers import env_for_tests

        yield dict(cluster_env(conf, base=env_for_tests()), SP_SLURM_POLL_INTERVAL="0.5")


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_docs_examples_run_on_slurm_with_names_comments_and_requirements(cluster_env, tmp_path):
    from helpers import run

    done = run([sys.executable, SEED_JOB, "--launcher", "slurm", "--data-root", str(tmp_path / "jobs"), "--out",
                str(tmp_path / "out"), f"launcher.cache_dir={tmp_path / 'cache'}", "launcher.max_parallel=2"],
               env=cluster_env, timeout=240)
    out = seed_results(done)
    assert out["launcher"] == "SlurmLauncher" and len(out["submitted"]) == 3  # one array per module
    assert len({r["job"] for lang in ("en", "bn", "hi") for r in out[lang]}) == 9  # each run an element
    shown = subprocess.run(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(out['submitted'])}",
                            "--format=%j|%k|%l|%m|%C"], capture_output=True, text=True, timeout=30,
                           env=cluster_env, stdin=subprocess.DEVNULL)
    rows = set(shown.stdout.splitlines()) - {""}
    # name() and comment() name the jobs; Requirements(cpus_per_task=1, mem_gb=1, timeout_min=5) sized them
    assert rows == {f"my_module.{lang}|stopes docs example for {lang}|5:00|1G|1" for lang in ("en", "bn", "hi")}, rows


# --- checkpoint(), stopes' way ---------------------------------------------------------------------------------


class SubmititLike:
    """The shape of submitit.helpers.DelayedSubmission, which stopes modules return from checkpoint()."""

    def __init__(self, function, *args, **kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs


class Lines(StopesModule):
    """As stopes' speech modules do: the progress travels as the iteration value of the resubmission."""

    def __init__(self, config):
        super().__init__(config)
        self._current = None

    def array(self):
        return [0]

    def checkpoint(self, iteration_value, iteration_index, **kwargs):
        return SubmititLike(self, self._current or iteration_value, iteration_index, **kwargs)

    def run(self, iteration_value=None, iteration_index=0):
        from mpipipe.module import RunStopped

        for line in range(iteration_value, 10):
            self._current = line
            if line == self.config.stop_at and line > iteration_value:  # once, in the first start
                assert self.save_checkpoint()
                raise RunStopped("stopped as a killed run would be")
        return (iteration_value, 10)


def test_a_submitit_style_resubmission_is_resumed_with_its_arguments(tmp_path):
    from mpipipe.launchers.base import checkpoint_path, run_shard
    from mpipipe.module import RunStopped, shards_of
    from mpipipe.module_cache import read_result

    module = Lines(OmegaConf.create({"stop_at": 4}))
    shard = shards_of(module)[0][0]
    path = str(tmp_path / "result.pkl")
    with pytest.raises(RunStopped):
        run_shard(module, shard, path)
    assert os.path.exists(checkpoint_path(path)) and not os.path.exists(path)
    assert not module.save_checkpoint()  # outside a launcher's run there is nothing to save to
    run_shard(module, shard, path)  # resumed: Lines.run(4, 0) on the saved copy
    assert read_result(path) == (4, 10) and not os.path.exists(checkpoint_path(path))
