"""Choosing a launcher: DynamicLauncher, LauncherMap, launchers built from config data, find_launcher().

Pure and fast: the fake launchers below write results in-process, no world is started.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import textwrap

import pytest

from mpipipe import context, session
from mpipipe.driver import Driver
from mpipipe.errors import ConfigError
from mpipipe.launchers import (DynamicLauncher, Launcher, LauncherMap, find_launcher, from_config, instantiate,
                               load_launcher_config)
from mpipipe.module import Module
from mpipipe.module_cache import write_result
from mpipipe.platform.local import LocalPlatform
from mpipipe.platform.slurm_options import SlurmOptions
from mpipipe.requirements import parse

HERE = __name__  # the module path of this file, for _target_ strings


class Recording(Launcher):
    """Runs each shard in-process: writes ("name", value) as its result and records the module's label."""

    def __init__(self, name: str = "fake", priority: float = 0, options=None, **kwargs):
        kwargs.setdefault("cache", False)
        super().__init__(priority, **kwargs)
        self.name = name
        self.options = options
        self.calls = []

    def describe(self) -> str:
        return self.name

    async def run_shards(self, job):
        self.calls.append(job.label)
        for shard, path in zip(job.shards, job.paths):
            write_result(path, (self.name, shard.value))
        return []


class Step(Module):
    def __init__(self, label: str = "step", values=None):
        self.label = label
        self.values = values

    def name(self) -> str:
        return self.label

    def array(self):
        return self.values


@pytest.fixture(autouse=True)
def clean_session(tmp_path, monkeypatch):
    """No command line from other tests, and job files (cache=False scratch) under tmp_path."""
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests
    for var in [k for k in os.environ if k.startswith("SP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("SP_DATA_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("SP_JOB_ID", "test-job")


def chi_square(counts, expected):
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected))


def p_value_df2(chi2: float) -> float:
    """The chi-square survival function for 2 degrees of freedom is exactly exp(-x/2)."""
    return math.exp(-chi2 / 2)


def counts_of(dyn: DynamicLauncher, n: int):
    counts = {id(launcher): 0 for launcher in dyn.launchers}
    for _ in range(n):
        counts[id(dyn.choose())] += 1
    return [counts[id(launcher)] for launcher in dyn.launchers]


# --- DynamicLauncher ---------------------------------------------------------------------------------------


def test_ties_are_broken_uniformly():
    dyn = DynamicLauncher([Recording("a", 2), Recording("b", 2), Recording("c", 2), Recording("low", 1)],
                          rng=random.Random(12345))
    counts = counts_of(dyn, 30_000)
    assert counts[3] == 0
    chi2 = chi_square(counts[:3], [10_000] * 3)
    assert p_value_df2(chi2) > 0.001, (counts, chi2)
    assert min(counts[:3]) > 9_000  # and not degenerate


def test_highest_priority_always_wins_without_a_tie():
    dyn = DynamicLauncher([Recording("a", 1), Recording("b", 5), Recording("c", 3)], rng=random.Random(1))
    assert {dyn.choose().name for _ in range(2_000)} == {"b"}


def test_sampling_is_proportional_to_priority():
    dyn = DynamicLauncher([Recording("a", 1), Recording("b", 2), Recording("c", 5)], sample=True,
                          rng=random.Random(2024))
    n = 40_000
    counts = counts_of(dyn, n)
    expected = [n * p / 8 for p in (1, 2, 5)]
    chi2 = chi_square(counts, expected)
    assert p_value_df2(chi2) > 0.001, (counts, chi2)


def test_same_seed_same_choices():
    def picks(seed):
        dyn = DynamicLauncher([Recording("a", 1), Recording("b", 1)], rng=random.Random(seed))
        return [dyn.choose().name for _ in range(50)]

    assert picks(7) == picks(7)


@pytest.mark.parametrize("bad", [0, -1.5])
def test_sampling_rejects_non_positive_priorities(bad):
    dyn = DynamicLauncher([Recording("a", 1), Recording("b", bad)], sample=True, rng=random.Random(0))
    with pytest.raises(ConfigError) as info:
        dyn.choose()
    text = str(info.value)
    assert "launchers[1] (Recording)" in text and f"priority {bad}" in text and "> 0" in text


def test_empty_or_wrong_launchers_are_config_errors():
    with pytest.raises(ConfigError, match="at least one launcher"):
        DynamicLauncher([])
    with pytest.raises(ConfigError, match=r"launchers\[1\] is a str"):
        DynamicLauncher([Recording(), "local"])


class Alternating(DynamicLauncher):
    """update() hands the top priority to each launcher in turn."""

    def __init__(self, launchers, **kwargs):
        super().__init__(launchers, **kwargs)
        self.updates = 0

    def update(self):
        for i, launcher in enumerate(self.launchers):
            launcher.priority = 10 if i == self.updates % len(self.launchers) else 1
        self.updates += 1


def test_update_runs_before_each_submission_and_steers_it(caplog):
    a, b = Recording("a", 0), Recording("b", 0)
    dyn = Alternating([a, b], rng=random.Random(0))

    async def main():
        return [await dyn.schedule(Step("first")), await dyn.schedule(Step("second", [1, 2])),
                await dyn.schedule(Step("third"))]

    with caplog.at_level("INFO", logger="mpipipe.modules"):
        results = asyncio.run(main())
    assert dyn.updates == 3
    assert results == [("a", None), [("b", 1), ("b", 2)], ("a", None)]
    assert a.calls == ["first", "third"] and b.calls == ["second"]
    assert "module second goes to launchers[1] (Recording)" in caplog.text


# --- LauncherMap ----------------------------------------------------------------------------------------------


def test_launcher_map_routes_by_module_name_with_a_default():
    train, other = Recording("gpu"), Recording("cpu")
    lm = LauncherMap({"train": train, "": other})
    assert lm.launcher_for("train") is train and lm.launcher_for("prep") is other

    async def main():
        return await lm.schedule(Step("train")), await lm.schedule(Step("prep", ["x"]))

    assert asyncio.run(main()) == (("gpu", None), [("cpu", "x")])
    assert train.calls == ["train"] and other.calls == ["prep"]


def test_launcher_map_without_match_or_default():
    lm = LauncherMap({"train": Recording(), "eval": Recording()})
    with pytest.raises(ConfigError) as info:
        lm.launcher_for("prep")
    assert "'prep'" in str(info.value) and "'eval', 'train'" in str(info.value) and '""' in str(info.value)
    with pytest.raises(ConfigError):
        asyncio.run(lm.schedule(Step("prep")))


def test_launcher_map_values_must_be_launchers():
    with pytest.raises(ConfigError, match="'train' is a str"):
        LauncherMap({"train": "slurm"})
    with pytest.raises(ConfigError, match="mapping"):
        LauncherMap([Recording()])


# --- instantiate -------------------------------------------------------------------------------------------


def nested_spec():
    return {
        "_target_": "mpipipe.launchers:DynamicLauncher",
        "sample": True,
        "rng": {"_target_": "random.Random", "x": 3},
        "launchers": [
            {"_target_": f"{HERE}:Recording", "name": "cluster", "priority": 2,
             "options": {"_target_": "mpipipe.platform.slurm_options.SlurmOptions", "partition": "debug"}},
            {"_target_": f"{HERE}.Recording", "name": "local", "priority": 1},
        ],
    }


def test_instantiate_nested_targets_and_lists():
    dyn = instantiate(nested_spec())
    assert isinstance(dyn, DynamicLauncher) and dyn.sample
    assert isinstance(dyn.rng, random.Random)
    first, second = dyn.launchers
    assert (type(first), first.name, first.priority) == (Recording, "cluster", 2)
    assert first.options == SlurmOptions(partition="debug")
    assert (second.name, second.priority, second.options) == ("local", 1, None)
    again = instantiate(nested_spec())
    assert [dyn.choose().name for _ in range(20)] == [again.choose().name for _ in range(20)]  # rng x=3


def test_instantiate_with_overrides():
    spec = nested_spec()
    dyn = instantiate(spec, ["launchers.1.priority=7", "launchers.0.options.partition=gpu", "sample=false",
                             "launchers.0.name=big cluster", "launchers.0.options.extra=[\"--exclusive\"]",
                             "launchers.1.tags=[\"cpu\", \"cheap\"]"])
    first, second = dyn.launchers
    assert dyn.sample is False
    assert second.priority == 7 and second.tags == ("cpu", "cheap")
    assert first.name == "big cluster"
    assert first.options.partition == "gpu" and first.options.extra == ["--exclusive"]
    assert spec == nested_spec()  # the caller's mapping is untouched


@pytest.mark.parametrize("override, words", [
    ("launchers.5.priority=1", ["list of 2", "0..1"]),
    ("launcher.0.priority=1", ["no key 'launcher'", "launchers"]),
    ("sample.x=1", ["sample", "not a mapping"]),
    ("priority", ["KEY=VALUE"]),
    ("a..b=1", ["KEY=VALUE"]),
])
def test_bad_overrides(override, words):
    with pytest.raises(ConfigError) as info:
        instantiate(nested_spec(), [override])
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("target, words", [
    ("nosuch_pkg.module:Thing", ["nosuch_pkg.module:Thing", "cannot be imported"]),
    ("nosuch_pkg.module.Thing", ["nosuch_pkg.module.Thing", "cannot be imported"]),
    ("mpipipe.launchers:Nope", ["mpipipe.launchers:Nope", "no attribute 'Nope'"]),
    ("Recording", ["not a class path"]),
    ("mpipipe.launchers.base:log", ["names a Logger"]),
])
def test_bad_targets_name_the_target_and_key_path(target, words):
    spec = nested_spec()
    spec["launchers"][1]["_target_"] = target
    with pytest.raises(ConfigError) as info:
        instantiate(spec)
    assert "launchers[1]" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_bad_keyword_names_the_target_and_key_path():
    spec = nested_spec()
    spec["launchers"][0]["options"]["partiton"] = "debug"
    with pytest.raises(ConfigError) as info:
        instantiate(spec)
    text = str(info.value)
    assert "launchers[0].options" in text and "SlurmOptions" in text and "partiton" in text
    assert "partition" in text  # what it takes
    # a keyword passed on through **kwargs (DirectLauncher -> WorldLauncher -> Launcher) is checked too
    spec = nested_spec()
    spec["launchers"][1] = {"_target_": "mpipipe.launchers:DirectLauncher", "prio": 1}
    with pytest.raises(ConfigError) as info:
        instantiate(spec)
    text = str(info.value)
    assert "launchers[1]" in text and "DirectLauncher" in text and "'prio'" in text and "priority" in text
    with pytest.raises(ConfigError, match="missing a required argument: 'launchers'"):
        instantiate({"_target_": "mpipipe.launchers:DynamicLauncher"})


def test_top_level_needs_a_target_and_unsupported_keys_are_refused():
    with pytest.raises(ConfigError, match="_target_"):
        instantiate({"sample": True})
    with pytest.raises(ConfigError, match="_partial_ not supported"):
        instantiate({"_target_": f"{HERE}:Recording", "_partial_": True})


def test_launcher_config_files(tmp_path):
    toml = tmp_path / "launchers.toml"
    toml.write_text(textwrap.dedent(f"""\
        _target_ = "mpipipe.launchers:LauncherMap"
        [mapping.train]
        _target_ = "{HERE}:Recording"
        name = "gpu"
        priority = 3
        [mapping.""]
        _target_ = "{HERE}:Recording"
        name = "cpu"
        """))
    lm = instantiate(load_launcher_config(toml), ["mapping.train.priority=5"])
    assert isinstance(lm, LauncherMap)
    assert (lm.launcher_for("train").name, lm.launcher_for("train").priority) == ("gpu", 5)
    assert lm.launcher_for("prep").name == "cpu"

    js = tmp_path / "launcher.json"
    js.write_text(json.dumps(nested_spec()))
    assert load_launcher_config(str(js)) == nested_spec()


def test_yaml_config_and_its_absence(tmp_path, monkeypatch):
    path = tmp_path / "l.yaml"
    path.write_text(f"_target_: {HERE}:Recording\nname: y\npriority: 2\n")
    pytest.importorskip("yaml")
    assert load_launcher_config(path) == {"_target_": f"{HERE}:Recording", "name": "y", "priority": 2}
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails
    with pytest.raises(ConfigError, match="pip install pyyaml.*TOML or JSON"):
        load_launcher_config(path)


@pytest.mark.parametrize("name, text, words", [
    ("missing.toml", None, ["does not exist"]),
    ("bad.toml", "_target_ = ", ["not valid TOML"]),
    ("bad.json", "{", ["not valid JSON"]),
    ("list.json", "[1, 2]", ["must hold a mapping"]),
    ("launcher.ini", "x=1", ["unknown format .ini"]),
])
def test_bad_config_files(tmp_path, name, text, words):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_launcher_config(path)
    for word in words:
        assert word in str(info.value)


def test_platform_from_config_uses_the_job_config():
    platform = instantiate({"_target_": "mpipipe.platform.local:LocalPlatform", "num_executors": 3,
                            "niceness": 5, "platform_options": {"label": "x"}})
    assert isinstance(platform, LocalPlatform)
    assert platform.config.num_executors == 3
    assert platform.config.platform == "mpipipe.platform.local:LocalPlatform"
    assert platform.config.job_id == "test-job"  # from the job's config (SP_JOB_ID)
    assert dict(platform.config.platform_options) == {"niceness": "5", "label": "x"}
    with pytest.raises(ConfigError, match="num_executors"):
        instantiate({"_target_": "mpipipe.platform.local:LocalPlatform", "num_executors": 0})


# --- the command line: --set and from_config() ----------------------------------------------------------------


def test_set_flag_reaches_from_config_and_stays_out_of_the_job_config(tmp_path):
    d = Driver(args=["--set", "launchers.0.priority=9", "--num-executors", "2", "--set", "gpu.name=g"])
    assert d.builtin_arguments() == {"num_executors": 2}
    assert d.get_arguments() == {}
    assert session.launcher_overrides() == ["launchers.0.priority=9", "gpu.name=g"]
    assert session.current_config().num_executors == 2  # the overrides are no job option
    path = tmp_path / "dyn.json"
    spec = nested_spec()
    spec["launchers"][0]["name"] = "x"
    del spec["launchers"][0]["options"]
    path.write_text(json.dumps({k: v for k, v in spec.items() if k != "gpu"}))
    with pytest.raises(ConfigError, match="no key 'gpu'"):
        from_config(str(path))  # every --set applies without a prefix
    gpu = from_config({"_target_": f"{HERE}:Recording", "name": "n"}, prefix="gpu")
    assert gpu.name == "g"
    session.use_command_line({}, {}, ["launchers.0.priority=9"])
    assert from_config(path).launchers[0].priority == 9


def test_a_script_can_keep_its_own_set_flag():
    d = Driver(args=["--set", "mine"])
    d.add_argument("--set")
    assert d.get_arguments() == {"set": "mine"}
    assert d.builtin_arguments() == {}
    assert session.launcher_overrides() == []


# --- find_launcher -----------------------------------------------------------------------------------------


LAUNCHERS_PY = f"""\
from {HERE} import Recording

def find_launcher(requirements, tags):
    if "none" in tags:
        return None
    if "wrong" in tags:
        return "slurm"
    need = requirements.alternatives[0]
    if need.accelerators:
        return Recording("gpu", priority=sum(a.count for a in need.accelerators))
    return Recording("cpu", priority=need.cpu.cores)
"""


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "mpipipe-config"
    folder.mkdir()
    (folder / "launchers.py").write_text(LAUNCHERS_PY)
    monkeypatch.setenv("MPIPIPE_CONFIG_DIR", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return folder


def test_find_launcher_fits(config_dir):
    gpu = find_launcher("duration=4h & cpu(mem=8GiB, cores=4) & cuda(mem=32GiB) * 2", tags=["train"])
    assert (gpu.name, gpu.priority) == ("gpu", 2)
    cpu = find_launcher(parse("cpu(cores=6)"))  # a parsed requirement
    assert (cpu.name, cpu.priority) == ("cpu", 6)
    assert find_launcher({"cpus": 3}).priority == 3  # a resource dict works too


def test_find_launcher_none_is_an_error_unless_not_required(config_dir):
    with pytest.raises(ConfigError) as info:
        find_launcher("cpu(cores=2)", tags=("none", "big"))
    text = str(info.value)
    assert str(config_dir / "launchers.py") in text and "cpu(cores=2)" in text
    assert "(tags none, big)" in text and "add a case to its find_launcher()" in text
    assert find_launcher("cpu(cores=2)", "none", required=False) is None


def test_find_launcher_checks_what_it_returns(config_dir):
    with pytest.raises(ConfigError, match="returned a str, not a mpipipe Launcher or None"):
        find_launcher("cpu", ["wrong"])


def test_missing_launchers_file_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("MPIPIPE_CONFIG_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError) as info:
        find_launcher("cpu")
    text = str(info.value)
    assert str(tmp_path / "own" / "launchers.py") in text and str(tmp_path / "xdg" / "mpipipe" / "launchers.py") in text
    monkeypatch.delenv("MPIPIPE_CONFIG_DIR")
    with pytest.raises(ConfigError) as info:
        find_launcher("cpu")
    assert str(tmp_path / "xdg" / "mpipipe" / "launchers.py") in str(info.value)
    assert "MPIPIPE_CONFIG_DIR" in str(info.value)


def test_xdg_config_home_is_used_without_mpipipe_config_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MPIPIPE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "mpipipe").mkdir(parents=True)
    (tmp_path / "xdg" / "mpipipe" / "launchers.py").write_text(LAUNCHERS_PY)
    assert find_launcher("cpu(cores=1)").name == "cpu"


def test_file_without_the_function(config_dir):
    (config_dir / "launchers.py").write_text("def pick(requirements, tags):\n    return None\n")
    with pytest.raises(ConfigError, match="defines no find_launcher"):
        find_launcher("cpu")


def test_launchers_module_is_cached_until_the_file_changes(config_dir):
    from mpipipe.launchers.finder import load_launchers_module

    path = str(config_dir / "launchers.py")
    first = load_launchers_module(path)
    assert load_launchers_module(path) is first
    (config_dir / "launchers.py").write_text(LAUNCHERS_PY + "\n# changed\n")
    assert load_launchers_module(path) is not first


# --- resolve(): the launcher a module would go to ----------------------------------------------------------------


def test_update_may_edit_the_launcher_list_under_either_name():
    a, b, c = Recording("a", 1), Recording("b", 2), Recording("c", 5)

    class Pruning(DynamicLauncher):
        def update(self):
            self._launchers[:] = [launcher for launcher in self._launchers if launcher.name != "b"]
            if c not in self._launchers:
                self._launchers.append(c)

    dyn = Pruning([a, b], rng=random.Random(3))
    assert dyn.launchers is dyn._launchers
    assert dyn.resolve(Step("x")) is c and [launcher.name for launcher in dyn.launchers] == ["a", "c"]
    assert asyncio.run(dyn.schedule(Step("y"))) == ("c", None) and c.calls == ["y"]
    dyn.launchers = (b,)
    assert dyn._launchers == [b]

    class Emptying(DynamicLauncher):
        def update(self):
            self._launchers.clear()

    with pytest.raises(ConfigError, match="left no launcher"):
        Emptying([a]).resolve(Step("x"))


def test_resolve_follows_nested_choices():
    gpu, cpu, top = Recording("gpu", 1), Recording("cpu", 1), Recording("top", 9)
    inner = DynamicLauncher([cpu, Recording("low", 0)])
    routes = LauncherMap({"train": gpu, "": inner})
    assert routes.resolve(Step("train")) is gpu and routes.resolve(Step("prep")) is cpu
    outer = DynamicLauncher([routes, top], rng=random.Random(1))
    assert outer.resolve(Step("train")) is top
    top.priority = -1
    assert outer.resolve(Step("train")) is gpu
    assert Recording("plain").resolve(Step("x")).name == "plain"
