"""Local executors start while the script builds its plan (mpipipe.init(), a Driver's flags) and the first run
takes them, unless what they were started with changed by then; SP_EARLY_START=0 starts nothing early."""
from __future__ import annotations

import os

import pytest

from helpers import REPO, env_for_tests, python

SCRIPT = os.path.join(REPO, "tests", "pipelines", "early_executors.py")


def _run(tmp_path, *args, **env):
    done = python(SCRIPT, str(tmp_path / "out"), *args, timeout=180, env=env_for_tests({
        "SP_PLATFORM": "local", "SP_NUM_EXECUTORS": "2", "SP_DATA_ROOT": str(tmp_path / "jobs"),
        "SP_PROGRESS_INTERVAL": "0", **env}))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in done.stdout.splitlines()
             if line.startswith(("before:", "ran:"))}
    return [int(p) for p in lines["before"]], lines["ran"]


@pytest.mark.parametrize("how", ["init", "driver"])
def test_the_first_run_takes_the_executors_started_before_it(tmp_path, how):
    before, ran = _run(tmp_path, *(["--driver"] if how == "driver" else []))
    pids = {int(p) for p in ran[:len(ran) - (how == "init")]}
    assert len(before) == 2 and pids and pids <= set(before)


def test_executors_started_before_the_environment_changed_are_not_used(tmp_path):
    before, ran = _run(tmp_path, "--set-env")
    pids = {int(p) for p in ran[:-1]}
    assert len(before) == 2 and pids and not pids & set(before)
    assert ran[-1] == "set"  # the tasks see the new variable


def test_nothing_starts_early_with_sp_early_start_0(tmp_path):
    before, ran = _run(tmp_path, SP_EARLY_START="0")
    assert before == [] and len(ran) >= 2
