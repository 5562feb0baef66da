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


# --- hosts: --hostfile, --mpiexec-args, the loopback check ---------------------------------------------------

from mpipipe.errors import ConfigError, PlatformError  # noqa: E402
from mpipipe.platform import mpi as M  # noqa: E402


def test_the_hostfile_goes_in_the_launchers_own_form():
    assert M.mpiexec_argv("/x/mpiexec", 5, ["py", "s.py"], "mpich", "/h/hosts") == \
        ["/x/mpiexec", "-f", "/h/hosts", "-n", "5", "py", "s.py"]
    assert M.mpiexec_argv("/x/mpiexec", 5, ["py"], "openmpi", "/h/hosts", ["--bind-to", "none"]) == \
        ["/x/mpiexec", "--hostfile", "/h/hosts", "--bind-to", "none", "-n", "5", "py"]
    assert M.mpiexec_argv("mpiexec", 2, TRICKY_ARGV) == ["mpiexec", "-n", "2"] + TRICKY_ARGV
    with pytest.raises(PlatformError) as e:
        M.mpiexec_argv("/x/mpirun", 2, ["py"], "", "/h/hosts")
    assert "--mpiexec-args='-f /h/hosts'" in str(e.value)


def test_the_launcher_is_told_apart_by_its_version_text():
    assert M.launcher_flavor("HYDRA build details:\n    Version: 5.0.2") == "mpich"
    assert M.launcher_flavor("mpiexec (Open MPI) 5.0.6\n\nReport bugs") == "openmpi"
    assert M.launcher_flavor("mpirun (OpenRTE) 4.1.2") == "openmpi"
    assert M.launcher_flavor("Intel(R) MPI Library for Linux* OS, Version 2021") == "mpich"
    assert M.launcher_flavor("something else") == ""


def test_mpiexec_args_are_split_as_a_shell_would():
    assert M.split_mpiexec_args("-iface eth0 -genv A 'x y' $(boom)") == ["-iface", "eth0", "-genv", "A", "x y",
                                                                         "$(boom)"]
    assert M.split_mpiexec_args(None) == []
    with pytest.raises(ConfigError):
        M.split_mpiexec_args("-genv A 'open")


def test_hostfiles_of_either_form_and_their_slots():
    hosts = M.parse_hostfile("# login first\nlogin:1\nnode1:4  # comment\nnode2 slots=2 max_slots=8\nnode3\n\n")
    assert hosts == [("login", 1), ("node1", 4), ("node2", 2), ("node3", None)]
    assert M.hostfile_slots(hosts) == 8
    assert M.hosts_in_args(["-hosts", "a:2,b", "--host=c,d:1", "-n", "3"]) == ["a", "b", "c", "d"]
    assert M.hostfile_in_args(["-genv", "X", "1", "-machinefile", "/m"]) == "/m"


def test_hostfile_and_mpiexec_args_reach_the_command(tmp_path, fake_mpiexec):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("h1:1\nh2:2\nh3:2\n")
    M._FLAVORS[fake_mpiexec] = ("mpich", "HYDRA build details:")
    cfg = JobConfig(hostfile=str(hostfile), mpiexec_args="-iface br0 -launcher ssh")
    platform = MpiPlatform(cfg)
    assert platform.launch_command(["s.py"]) == [fake_mpiexec, "-f", str(hostfile), "-iface", "br0", "-launcher",
                                                 "ssh", "-n", "5", "s.py"]  # a rank per slot: rank 0 + 4
    assert platform.launch_env() == {"MPIPIPE_WORLD_SIZE": "5"}
    assert MpiPlatform(cfg.with_(num_executors=2)).launch_command(["s.py"])[-3:] == ["-n", "3", "s.py"]
    with pytest.raises(ConfigError) as e:
        MpiPlatform(JobConfig(hostfile=str(tmp_path / "missing"))).launch_command(["s.py"])
    assert "cannot read the hostfile" in str(e.value)
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError):
        MpiPlatform(JobConfig(hostfile=str(tmp_path / "empty"))).launch_command(["s.py"])


def test_the_options_are_flags_and_sp_variables():
    from mpipipe.config import build_config

    cfg = build_config({}, env={"SP_HOSTFILE": "/h", "SP_MPIEXEC_ARGS": "--bind-to none"})
    assert (cfg.hostfile, cfg.mpiexec_args) == ("/h", "--bind-to none")
    d = Driver(args=["--hostfile", "/h", "--mpiexec-args", "--bind-to none", "--hosts", "node2=cpu(cores=8)"])
    assert d.builtin_arguments() == {"hostfile": "/h", "mpiexec_args": "--bind-to none",
                                     "hosts": "node2=cpu(cores=8)"}


def test_a_loopback_hostname_is_refused_with_the_fix():
    problem = M.loopback_problem("login", ["127.0.1.1"], ["login", "node1", "node2"], False, ["eth0"])
    assert "127.0.1.1" in problem and "node1, node2" in problem and "-iface IFACE" in problem
    assert "interfaces here: eth0" in problem
    assert M.loopback_problem("login", ["10.0.0.5"], ["node1"], False) is None  # a routable address
    assert M.loopback_problem("login", ["127.0.1.1"], ["node1"], True) is None  # -iface / HYDRA_IFACE named
    assert M.loopback_problem("login", ["127.0.1.1"], ["localhost", "login", "127.0.0.1"], False) is None


def test_check_reachable_before_start(tmp_path, fake_mpiexec, monkeypatch):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1:2\nnode2:2\n")
    M._FLAVORS[fake_mpiexec] = ("mpich", "HYDRA build details:")
    monkeypatch.setattr(M.socket, "gethostname", lambda: "login")
    monkeypatch.setattr(M, "_resolve", lambda name: ["127.0.1.1"])
    platform = MpiPlatform(JobConfig(hostfile=str(hostfile)))
    with pytest.raises(PlatformError) as e:
        platform.check_reachable({})
    assert "'login' resolves to 127.0.1.1" in str(e.value)
    platform.check_reachable({"HYDRA_IFACE": "eth0"})
    MpiPlatform(JobConfig(mpiexec_args="-iface eth0 -hosts node1,node2")).check_reachable({})
    with pytest.raises(PlatformError):
        MpiPlatform(JobConfig(mpiexec_args="-hosts node1,node2")).check_reachable({})
    M._FLAVORS[fake_mpiexec] = ("openmpi", "mpiexec (Open MPI) 5.0.6")
    platform.check_reachable({})  # Open MPI's daemons reach back by address
    MpiPlatform(JobConfig()).check_reachable({})  # no hosts named: one host


def test_the_local_platform_refuses_a_hostfile():
    from mpipipe.platform.local import LocalPlatform

    with pytest.raises(ConfigError) as e:
        LocalPlatform(JobConfig(hostfile="/h")).connect()
    assert "--platform mpi" in str(e.value)


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
