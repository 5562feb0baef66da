"""mpipipe's terminal messages are `logging` records (logger "mpipipe" and its children): a level silences them, a
handler of the application's receives them (and mpipipe's own handler stands aside), and by default they reach
stderr with the same text as ever. The periodic progress lines and the summary are tested in test_progress."""
from __future__ import annotations

import io
import logging
import os

import pytest

from helpers import QUICKSTART, REPO, python
from mpipipe import console
from mpipipe.console import ConsoleHandler
from mpipipe.errors import ConfigError

MODULES_JOB = os.path.join(REPO, "tests", "pipelines", "modules_job.py")
LOCAL = ("--platform", "local", "--num-executors", "1", "--shards", "3")


def records_of(caplog, level=logging.INFO):
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("mpipipe")
            and r.levelno >= level]


def test_the_error_that_ends_a_run_is_an_error_record(caplog):
    from mpipipe.jobmanager import report_error

    caplog.set_level(logging.INFO, logger="mpipipe")
    with pytest.raises(SystemExit) as stop:
        report_error(ConfigError("--num-executors must be at least 1"), debug=False)
    assert stop.value.code == ConfigError("x").exit_code
    assert ("mpipipe.console", logging.ERROR, "--num-executors must be at least 1") in records_of(caplog)


def test_a_bad_flag_is_an_error_record(caplog):
    from mpipipe.flags import parse_known

    caplog.set_level(logging.INFO, logger="mpipipe")
    with pytest.raises(SystemExit) as stop:
        parse_known(["--num-executors", "many"])
    assert stop.value.code == 2
    errors = [m for n, lvl, m in records_of(caplog) if lvl == logging.ERROR]
    assert len(errors) == 1 and "--num-executors" in errors[0] and "see the mpipipe options" in errors[0]


def test_module_lines_and_the_slurm_watchers_lines_are_console_records(caplog, tmp_path):
    from mpipipe.launchers.base import say
    from mpipipe.platform.slurm_watch import JobWatcher

    caplog.set_level(logging.INFO, logger="mpipipe")
    say("module square: 3 run(s), all found in the cache")
    watcher = JobWatcher("42", str(tmp_path), str(tmp_path / "out.txt"), 1.0, 1.0)
    watcher.say("SLURM job 42: RUNNING on node1")
    watcher.error("SLURM job 42 ran out of memory with exit code 137; its output: out.txt")
    assert records_of(caplog) == [
        ("mpipipe.console", logging.INFO, "[mpipipe] module square: 3 run(s), all found in the cache"),
        ("mpipipe.console", logging.INFO, "[mpipipe] SLURM job 42: RUNNING on node1"),
        ("mpipipe.console", logging.ERROR, "SLURM job 42 ran out of memory with exit code 137; its output: out.txt"),
    ]
    out = io.StringIO()  # a watcher given a stream writes there, as before
    JobWatcher("43", str(tmp_path), str(tmp_path / "out.txt"), 1.0, 1.0, stream=out).error("gone")
    assert out.getvalue() == "mpipipe: error: gone\n"


def test_mpipipes_handler_stands_aside_for_a_handler_of_the_applications():
    """The handler mpipipe installed writes the lines as they are until the application adds its own handler to
    "mpipipe"; the rank logs mpipipe adds itself do not count as the application's."""
    from mpipipe.execution.osutil import RankLogHandler

    logger = logging.getLogger("mpipipe")
    out = io.StringIO()
    ours = ConsoleHandler(out)
    theirs: list = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            theirs.append(record.getMessage())

    users = Collect()
    rank_log = RankLogHandler(os.devnull)
    console_level = console.log.level
    logger.addHandler(ours)
    logger.addHandler(rank_log)
    console.log.setLevel(logging.INFO)
    try:
        console.say("[mpipipe] first")
        console.error_line("bad")
        logger.addHandler(users)
        console.say("[mpipipe] second")
    finally:
        for h in (ours, rank_log, users):
            logger.removeHandler(h)
        rank_log.close()
        console.log.setLevel(console_level)
    assert out.getvalue() == "[mpipipe] first\nmpipipe: error: bad\n"
    assert theirs == ["[mpipipe] second"]


# --- whole scripts: the default, silenced, redirected -------------------------------------------------------

def _wrapped(tmp_path, name: str, setup: str, script: str) -> str:
    """A script that sets logging up as an application would, then runs `script` as __main__."""
    path = tmp_path / name
    path.write_text(f"import logging, runpy, sys\n{setup}\nsys.argv[0] = {script!r}\n"
                    f"runpy.run_path({script!r}, run_name='__main__')\n")
    return str(path)


def test_by_default_module_lines_and_errors_reach_stderr_as_before(tmp_path):
    done = python(MODULES_JOB, *LOCAL, "--data-root", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "c"),
                  check=True, timeout=180)
    lines = done.stderr.splitlines()
    assert any(ln.startswith("[mpipipe] module square-a: 3 run(s), 0 found in the cache, 3 to run on ")
               for ln in lines), done.stderr
    assert any(ln.startswith("[mpipipe] module square-a: 3 run(s) done on ") for ln in lines), done.stderr
    bad = python(QUICKSTART, "--data-root", str(tmp_path / "jobs"), "--platform", "nosuch.module:Platform",
                 timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.startswith("mpipipe: error: ") and len(bad.stderr.splitlines()) == 1, bad.stderr


def test_a_level_on_mpipipe_silences_module_lines(tmp_path):
    quiet = _wrapped(tmp_path, "quiet.py", "logging.getLogger('mpipipe').setLevel(logging.ERROR)", MODULES_JOB)
    done = python(quiet, *LOCAL, "--data-root", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "c"),
                  check=True, timeout=180)
    assert "[mpipipe]" not in done.stderr, done.stderr
    assert '"results"' in done.stdout


def test_a_handler_on_mpipipe_receives_every_line_and_nothing_else_prints(tmp_path):
    log_file = tmp_path / "mpipipe.log"
    setup = (f"h = logging.FileHandler({str(log_file)!r})\n"
             "h.setFormatter(logging.Formatter('%(name)s %(levelname)s %(message)s'))\n"
             "logging.getLogger('mpipipe').addHandler(h)")
    redirect = _wrapped(tmp_path, "redirect.py", setup, MODULES_JOB)
    done = python(redirect, *LOCAL, "--data-root", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "c"),
                  check=True, timeout=180)
    assert "[mpipipe]" not in done.stderr, done.stderr
    logged = log_file.read_text()
    assert "mpipipe.console INFO [mpipipe] module square-a: 3 run(s), 0 found in the cache, 3 to run on " in logged
    plan = _wrapped(tmp_path, "plan.py", setup, QUICKSTART)
    ran = python(plan, "--data-root", str(tmp_path / "jobs"), "-n", "2", "-w", "100", check=True, timeout=120)
    assert "[mpipipe]" not in ran.stderr, ran.stderr
    logged = log_file.read_text()
    assert "mpipipe.console INFO [mpipipe] job " in logged and " succeeded in " in logged, logged
    failed = python(plan, "--data-root", str(tmp_path / "jobs"), "--platform", "nosuch.module:Platform", timeout=120)
    assert failed.returncode != 0 and "mpipipe: error" not in failed.stderr, failed.stderr
    assert "mpipipe.console ERROR " in log_file.read_text()
