"""Tests for mpipipe.config.build_config (layers, conversion, errors) and mpipipe.init()."""
from __future__ import annotations

import os

import pytest

import mpipipe
from mpipipe import context, session
from mpipipe.config import OPTION_NAMES, JobConfig, build_config, env_name
from mpipipe.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_init(monkeypatch):
    """Every test starts with no init() options and leaves none behind."""
    monkeypatch.setattr(context, "_current", context.JobContext())  # no command line from other tests


# --- precedence: CLI > environment > init() > defaults --------------------------------------------


def test_defaults_when_no_layer_sets_anything():
    cfg = build_config({}, env={}, init={})
    default = JobConfig()
    assert cfg.platform is None
    assert cfg.num_executors is None
    assert cfg.max_retries == default.max_retries == 2
    assert cfg.fail_fast is False
    assert cfg.log_level == "INFO"
    assert cfg.progress_interval == 2.0


@pytest.mark.parametrize(
    "name, cli_value, env_text, init_value, cli_expected, env_expected, init_expected",
    [
        ("platform", "mpi", "local", "my.mod:P", "mpi", "local", "my.mod:P"),
        ("num_executors", 7, "5", 3, 7, 5, 3),
        ("max_retries", 0, "4", 9, 0, 4, 9),
        ("job_id", "from-cli", "from-env", "from-init", "from-cli", "from-env", "from-init"),
        ("log_level", "ERROR", "warning", "debug", "ERROR", "WARNING", "DEBUG"),
        ("progress_interval", 0.5, "1.5", 3, 0.5, 1.5, 3.0),
    ],
)
def test_each_layer_wins_over_the_ones_below(name, cli_value, env_text, init_value,
                                             cli_expected, env_expected, init_expected):
    env = {env_name(name): env_text}
    init = {name: init_value}
    assert getattr(build_config({name: cli_value}, env=env, init=init), name) == cli_expected
    assert getattr(build_config({}, env=env, init=init), name) == env_expected
    assert getattr(build_config({}, env={}, init=init), name) == init_expected
    assert getattr(build_config({}, env={}, init={}), name) == getattr(JobConfig(), name)


def test_cli_value_of_none_means_not_given():
    cfg = build_config({"num_executors": None, "fail_fast": None}, env={"SP_NUM_EXECUTORS": "6"},
                       init={"fail_fast": True})
    assert cfg.num_executors == 6
    assert cfg.fail_fast is True


def test_layers_combine_option_by_option():
    cfg = build_config({"num_executors": 2}, env={"SP_MAX_RETRIES": "5"}, init={"job_id": "j", "fresh": True})
    assert (cfg.num_executors, cfg.max_retries, cfg.job_id, cfg.fresh) == (2, 5, "j", True)


def test_environment_names_are_sp_prefixed_upper_case():
    assert env_name("num_executors") == "SP_NUM_EXECUTORS"
    # a lower-case or unprefixed variable is not read
    cfg = build_config({}, env={"sp_num_executors": "9", "NUM_EXECUTORS": "9"}, init={})
    assert cfg.num_executors is None


def test_default_env_is_os_environ(monkeypatch):
    monkeypatch.setenv("SP_JOB_ID", "from-os-environ")
    assert build_config({}, init={}).job_id == "from-os-environ"


# --- conversion ------------------------------------------------------------------------------------


def test_ints_and_floats_are_converted_from_text():
    cfg = build_config({}, env={"SP_NUM_EXECUTORS": "12", "SP_WORKERS_PER_EXECUTOR": " 3 ",
                                "SP_HELLO_TIMEOUT": "2.5", "SP_PROGRESS_INTERVAL": "0"}, init={})
    assert cfg.num_executors == 12 and isinstance(cfg.num_executors, int)
    assert cfg.workers_per_executor == 3
    assert cfg.hello_timeout == 2.5 and isinstance(cfg.hello_timeout, float)
    assert cfg.progress_interval == 0.0


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("", False),
])
def test_bools_from_text(text, expected):
    cfg = build_config({}, env={"SP_FAIL_FAST": text, "SP_DRY_RUN": text}, init={})
    assert cfg.fail_fast is expected
    assert cfg.dry_run is expected


def test_bools_pass_through_and_false_from_cli_beats_env():
    assert build_config({"debug": True}, env={}, init={}).debug is True
    assert build_config({"fresh": False}, env={"SP_FRESH": "true"}, init={}).fresh is False


def test_log_level_is_upper_cased():
    assert build_config({"log_level": "debug"}, env={}, init={}).log_level == "DEBUG"
    assert build_config({}, env={"SP_LOG_LEVEL": "Warning"}, init={}).log_level == "WARNING"


def test_platform_options_from_text_and_mapping():
    from_env = build_config({}, env={"SP_PLATFORM_OPTIONS": "partition=gpu, account=abc"}, init={})
    assert from_env.platform_options == (("partition", "gpu"), ("account", "abc"))
    from_init = build_config({}, env={}, init={"platform_options": {"b": "2", "a": "1"}})
    assert from_init.platform_options == (("a", "1"), ("b", "2"))


def test_data_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_config({}, env={}, init={}).data_root == os.path.join(str(tmp_path), "mpipipe-jobs")
    assert build_config({"data_root": "runs/x"}, env={}, init={}).data_root == os.path.join(str(tmp_path), "runs", "x")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build_config({}, env={"SP_DATA_ROOT": "~/jobs"}, init={}).data_root == str(tmp_path / "home" / "jobs")


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["cli", "init"])
def test_unknown_option_names_are_rejected_with_the_valid_ones(layer):
    kwargs = {"cli": {}, "env": {}, "init": {}}
    kwargs[layer] = {"num_exectors": 3}
    with pytest.raises(ConfigError) as info:
        build_config(**kwargs)
    message = str(info.value)
    assert "num_exectors" in message
    for name in OPTION_NAMES:
        assert name in message


@pytest.mark.parametrize("cli, env", [
    ({"num_executors": -1}, {}),
    ({"num_executors": 0}, {}),
    ({}, {"SP_NUM_EXECUTORS": "-4"}),
    ({}, {"SP_NUM_EXECUTORS": "four"}),
    ({}, {"SP_NUM_EXECUTORS": "2.5"}),
    ({"max_retries": -1}, {}),
    ({}, {"SP_WORKERS_PER_EXECUTOR": "0"}),
    ({}, {"SP_FAIL_FAST": "maybe"}),
    ({"debug": "yes please"}, {}),
    ({}, {"SP_PROGRESS_INTERVAL": "-1"}),
    ({}, {"SP_HELLO_TIMEOUT": "soon"}),
    ({"log_level": "LOUD"}, {}),
    ({"job_id": "a/b"}, {}),
    ({}, {"SP_JOB_ID": "/abs"}),
    ({"job_id": ".."}, {}),
    ({"job_id": ""}, {}),
    ({}, {"SP_PLATFORM_OPTIONS": "novalue"}),
])
def test_bad_values_raise_config_error(cli, env):
    with pytest.raises(ConfigError, match="bad value for"):
        build_config(cli, env=env, init={})


def test_bad_value_message_names_option_and_source():
    with pytest.raises(ConfigError) as info:
        build_config({}, env={"SP_NUM_EXECUTORS": "-2"}, init={})
    assert "num_executors" in str(info.value)
    assert "$SP_NUM_EXECUTORS" in str(info.value)


def test_max_retries_zero_is_allowed():
    assert build_config({"max_retries": 0}, env={}, init={}).max_retries == 0


def test_a_bad_lower_layer_is_not_read_when_a_higher_one_wins():
    # the environment's value is never converted when the CLI sets the option
    assert build_config({"num_executors": 2}, env={"SP_NUM_EXECUTORS": "junk"}, init={}).num_executors == 2


# --- mpipipe.init() --------------------------------------------------------------------------------


def test_init_rejects_unknown_names_and_keeps_previous_options():
    mpipipe.init(num_executors=2)
    with pytest.raises(ConfigError) as info:
        mpipipe.init(num_executor=3)
    assert "num_executor" in str(info.value) and "num_executors" in str(info.value)
    assert session.init_options() == {"num_executors": 2}


def test_init_options_reach_build_config():
    s = mpipipe.init("mpi", num_executors=3, job_id="nightly", fail_fast="true")
    opts = session.init_options()
    assert opts == {"platform": "mpi", "num_executors": 3, "job_id": "nightly", "fail_fast": "true"}
    cfg = build_config({}, env={}, init=opts)
    assert (cfg.platform, cfg.num_executors, cfg.job_id, cfg.fail_fast) == ("mpi", 3, "nightly", True)
    assert s.options == opts


def test_init_options_are_below_cli_and_environment():
    mpipipe.init(num_executors=3, job_id="from-init", max_retries=7)
    cfg = build_config({"num_executors": 8}, env={"SP_JOB_ID": "from-env"}, init=session.init_options())
    assert (cfg.num_executors, cfg.job_id, cfg.max_retries) == (8, "from-env", 7)


def test_a_second_init_replaces_the_first():
    mpipipe.init(num_executors=3, job_id="one")
    mpipipe.init(max_retries=1)
    assert session.init_options() == {"max_retries": 1}


def test_init_options_returns_a_copy():
    mpipipe.init(job_id="x")
    session.init_options()["job_id"] = "changed"
    assert session.init_options() == {"job_id": "x"}


def test_every_option_is_declared_once_and_everything_else_follows():
    """JobConfig's fields are the one declaration: flags, SP_* names, SlurmOptions and the site config keys
    are made from them, and the README's flag table names every flag."""
    import dataclasses
    import os

    from helpers import REPO
    from mpipipe.config import JobConfig, option_fields
    from mpipipe.driver import Driver
    from mpipipe.platform.slurm_options import SITE_KEYS, SlurmOptions

    from mpipipe.flags import show_slurm_flags

    d = Driver(args=[])
    d.get_arguments()
    show_slurm_flags(d.parser)  # the SLURM group's help, as --help-all shows it
    dests = {a.dest: a for a in d.parser._actions}
    declared = option_fields()
    assert [f.name for f in declared] == [f.name for f in dataclasses.fields(JobConfig)]
    for f in declared:
        assert f.metadata["help"], f.name
        if f.metadata["flag"]:
            assert f.name in dests and dests[f.name].help == f.metadata["help"], f.name
        else:
            assert f.name not in dests
    slurm = [f.name[len("slurm_"):] for f in declared if f.metadata["kind"] == "slurm"]
    assert list(SITE_KEYS) == slurm == [f.name for f in dataclasses.fields(SlurmOptions)]
    with open(os.path.join(REPO, "README.md")) as fh:
        readme = fh.read()
    for action in d.parser._actions:
        if action.dest in {f.name for f in declared} and action.option_strings:
            assert any(f"`{o}" in readme for o in action.option_strings), action.option_strings
