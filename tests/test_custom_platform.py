"""A user's own Platform, chosen by --platform, SP_PLATFORM or init(platform=...)."""
import json
import os

import pytest

from helpers import REPO, QUICKSTART, env_for_tests, python

NICENESS = os.path.join(REPO, "tests", "pipelines", "niceness.py")
SITEPKG = os.path.join(REPO, "tests", "sitepkg")


def env(**extra):
    return env_for_tests({"PYTHONPATH": REPO + os.pathsep + SITEPKG, **extra})


@pytest.mark.parametrize("how", ["flag-module", "flag-class", "env", "init"])
def test_nice_local_platform_is_loaded_exactly(how, data_root):
    base = os.nice(0)
    args = ["--data-root", data_root, "--num-executors", "2"]
    extra = {}
    if how == "flag-module":
        args += ["--platform", "platforms.nice_local"]
    elif how == "flag-class":
        args += ["--platform", "platforms.nice_local:NiceLocalPlatform"]
    elif how == "env":
        extra["SP_PLATFORM"] = "platforms.nice_local.NiceLocalPlatform"
    else:
        args += ["--init-platform", "platforms.nice_local"]
    done = python(NICENESS, *args, env=env(**extra), check=True)
    assert f"niceness={base + 10},{base + 10},{base + 10}" in done.stdout
    assert "platform=nice-local" in done.stdout


def test_cli_flag_wins_over_environment(data_root):
    done = python(NICENESS, "--data-root", data_root, "--platform", "local",
                  env=env(SP_PLATFORM="platforms.nice_local"), check=True)
    assert "platform=local" in done.stdout


def test_custom_mpi_platform_launches_the_world(tmp_path, data_root):
    record = tmp_path / "launch.json"
    done = python(QUICKSTART, "--data-root", data_root, "--platform", "recording_mpi", "--num-executors", "2",
                  "-n", "3", "-w", "50", env=env(RECORD_LAUNCH_TO=str(record)), check=True, timeout=120)
    assert "counted 150 words" in done.stdout
    cmd = json.loads(record.read_text())
    assert cmd[0].endswith("mpiexec") and cmd[1:3] == ["-n", "3"]
    assert "2 executor(s) on recording-mpi" in done.stderr


@pytest.mark.parametrize("spec,message", [
    ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
    ("platforms.nice_local:Missing", "has no attribute 'Missing'"),
    ("os.path:join", "not a subclass of mpipipe.Platform"),
    ("mpipipe.platform.base", "exactly one Platform subclass of its own, found none"),
    ("nonsense", "unknown platform 'nonsense'"),
])
def test_bad_platform_is_a_one_line_error(spec, message, data_root):
    done = python(QUICKSTART, "--data-root", data_root, "--platform", spec, env=env())
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(data_root)


def test_debug_shows_the_traceback(data_root):
    done = python(QUICKSTART, "--data-root", data_root, "--platform", "nonsense", "--debug", env=env())
    assert done.returncode != 0 and "Traceback" in done.stderr
