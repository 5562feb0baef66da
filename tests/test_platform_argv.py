"""Tests for how a job is (re)launched: MpiPlatform's argv and environment, and the Driver's flags."""
from __future__ import annotations

import argparse
import os
import stat
import sys

import pytest

from mpipipe.config import JobConfig
from mpipipe.driver import BUILTIN_FLAGS, Driver
from mpipipe.platform.base import relaunch_argv
from mpipipe.platform.mpi import MpiPlatform

TRICKY_ARGV = [
    "script.py",
    "--input", "a file with spaces.txt",
    "--query", "it's \"quoted\"",
    "--cmd", "$(rm -rf /); echo hi",
    "`whoami`",
    "a;b&&c|d",
    "",
    "*.txt",
]


@pytest.fixture
def fake_mpiexec(tmp_path, monkeypatch):
    """An executable named mpiexec that is the only one on PATH."""
    exe = tmp_path / "mpiexec"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    return str(exe)


# --- MpiPlatform -----------------------------------------------------------------------------------------


def test_launch_command_is_mpiexec_n_then_argv_unchanged(fake_mpiexec):
    cmd = MpiPlatform(JobConfig(num_executors=4)).launch_command(list(TRICKY_ARGV))
    assert isinstance(cmd, list)
    assert cmd[0] == fake_mpiexec
    assert cmd[1:3] == ["-n", "5"]
    assert cmd[3:] == TRICKY_ARGV
    assert all(isinstance(a, str) for a in cmd)


def test_launch_command_does_not_modify_the_callers_list(fake_mpiexec):
    argv = ["script.py", "-x"]
    MpiPlatform(JobConfig(num_executors=1)).launch_command(argv)
    assert argv == ["script.py", "-x"]


def test_launch_command_uses_configured_mpiexec(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    missing = os.path.join(str(tmp_path), "no", "such", "mpirun")
    cmd = MpiPlatform(JobConfig(num_executors=2, mpiexec=missing)).launch_command(["s.py"])
    assert cmd == [missing, "-n", "3", "s.py"]


def test_launch_env_sets_the_world_size(monkeypatch):
    assert MpiPlatform(JobConfig(num_executors=4)).launch_env() == {"MPIPIPE_WORLD_SIZE": "5"}
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert MpiPlatform(JobConfig()).launch_env() == {"MPIPIPE_WORLD_SIZE": "7"}
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert MpiPlatform(JobConfig()).launch_env() == {"MPIPIPE_WORLD_SIZE": "2"}


def test_launch_command_and_env_agree(fake_mpiexec):
    platform = MpiPlatform(JobConfig(num_executors=9))
    cmd = platform.launch_command(["s.py"])
    assert cmd[2] == platform.launch_env()["MPIPIPE_WORLD_SIZE"] == "10"


def test_relaunch_argv_starts_with_the_interpreter(monkeypatch):
    argv = relaunch_argv()
    assert argv[0] == sys.executable
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-u", "job.py", "--x", "a b"], raising=False)
    assert relaunch_argv() == [sys.executable, "-u", "job.py", "--x", "a b"]
    monkeypatch.setattr(sys, "orig_argv", [], raising=False)
    monkeypatch.setattr(sys, "argv", ["job.py", "--y"])
    assert relaunch_argv() == [sys.executable, "job.py", "--y"]


# --- Driver ----------------------------------------------------------------------------------------------

BUILTIN_OPTIONS = ["--platform", "--num-executors", "--job-id", "--data-root", "--max-retries", "--fail-fast",
                   "--fresh", "--dry-run", "--log-level", "--debug"]


def user_driver(args):
    d = Driver(description="my pipeline", args=args)
    d.add_argument("-n", "--npartitions", type=int, default=4, help="how many partitions to cut")
    d.add_argument("-i", "--input_paths", nargs="+", default=[], help="files to read")
    return d


def test_help_lists_user_and_builtin_flags(capsys):
    d = user_driver(["--help"])
    with pytest.raises(SystemExit) as info:
        d.get_arguments()
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "my pipeline" in out
    assert "-n NPARTITIONS, --npartitions NPARTITIONS" in out
    assert "how many partitions to cut" in out
    assert "-i INPUT_PATHS" in out and "files to read" in out
    for flag in BUILTIN_OPTIONS + ["--workers-per-executor", "--progress-interval"]:
        assert flag in out, flag


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        Driver(args=["--help"]).get_arguments()
    out = capsys.readouterr().out
    assert "(default: None)" not in out


def test_builtin_flags_have_no_short_options():
    d = Driver(args=[])
    builtin_actions = [a for a in d.parser._actions if a.dest in BUILTIN_FLAGS]
    assert {a.dest for a in builtin_actions} == set(BUILTIN_FLAGS)
    for action in builtin_actions:
        assert action.option_strings, action.dest
        assert all(opt.startswith("--") for opt in action.option_strings), action.option_strings
    assert sorted(opt for a in builtin_actions for opt in a.option_strings if opt in BUILTIN_OPTIONS) == \
        sorted(BUILTIN_OPTIONS)


def test_user_short_flags_and_get_arguments():
    d = user_driver(["-n", "8", "-i", "a b.txt", "$(x);y", "--num-executors", "3", "--fresh",
                     "--platform", "local", "--log-level", "DEBUG"])
    assert d.get_arguments() == {"npartitions": 8, "input_paths": ["a b.txt", "$(x);y"]}


def test_get_arguments_with_user_defaults_only():
    assert user_driver([]).get_arguments() == {"npartitions": 4, "input_paths": []}


def test_builtin_arguments_are_only_the_given_ones():
    d = user_driver(["--npartitions", "2", "--num-executors", "3", "--fail-fast", "--max-retries", "0",
                     "--job-id", "nightly", "--progress-interval", "0"])
    assert d.builtin_arguments() == {"num_executors": 3, "fail_fast": True, "max_retries": 0,
                                     "job_id": "nightly", "progress_interval": 0.0}
    assert user_driver(["-n", "2"]).builtin_arguments() == {}


def test_every_builtin_flag_is_parsed():
    d = Driver(args=["--platform", "mpi", "--num-executors", "2", "--job-id", "j", "--data-root", "/d",
                     "--max-retries", "1", "--fail-fast", "--fresh", "--dry-run", "--log-level", "ERROR",
                     "--debug", "--workers-per-executor", "3", "--progress-interval", "0.5"])
    assert d.builtin_arguments() == {
        "platform": "mpi", "num_executors": 2, "job_id": "j", "data_root": "/d", "max_retries": 1,
        "fail_fast": True, "fresh": True, "dry_run": True, "log_level": "ERROR", "debug": True,
        "workers_per_executor": 3, "progress_interval": 0.5,
    }
    assert d.get_arguments() == {}


def test_builtin_flags_cannot_be_abbreviated(capsys):
    d = Driver(args=["--num-exec", "3"])
    with pytest.raises(SystemExit) as info:
        d.builtin_arguments()
    assert info.value.code == 2
    assert "--num-exec" in capsys.readouterr().err


def test_user_flag_cannot_reuse_a_builtin_name():
    d = Driver(args=[])
    with pytest.raises(argparse.ArgumentError, match="conflicting option string: --platform"):
        d.add_argument("--platform")
