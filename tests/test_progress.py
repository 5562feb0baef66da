"""What a run shows while it runs and when it ends: the live block (in real tmux panes), the plain line, the
notebook display, the closing summary and its commands, and that all of it goes through logging."""
from __future__ import annotations

import io
import logging
import os
import re
import shlex
import shutil
import sys
import time
import uuid
from typing import Dict, List, Optional

import pytest

from helpers import BIN, env_for_tests, python, run
from mpipipe.execution.progress import NodeCount, Progress, RateMeter

HEADING = re.compile(r"^mpipipe .*\d+/\d+ tasks")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

PIPELINE = '''
import time
from mpipipe import ComputeNode, Context, Driver, LogicalPlan

def work(task):
    time.sleep(task.args["sleep"])
    return task.partition

def main():
    driver = Driver()
    driver.add_argument("--nodes", type=int, default=12)
    driver.add_argument("--parts", type=int, default=5)
    driver.add_argument("--sleep", type=float, default=0.1)
    a = driver.get_arguments()
    ctx = Context()
    names = ["load", "clean_and_normalise_every_input_record", "score"] + [f"step_{k}" for k in range(a["nodes"])]
    prev, nodes = [], []
    for k, name in enumerate(names[:a["nodes"]]):
        node = ComputeNode(ctx, work, inputs=prev[-1:] if k % 3 else [], npartitions=a["parts"], name=name,
                           args={"sleep": a["sleep"]})
        nodes.append(node)
        prev.append(node)
    total = ComputeNode(ctx, work, inputs=nodes, npartitions=1, name="total", args={"sleep": 0})
    driver.run(LogicalPlan(ctx, total))

if __name__ == "__main__":
    main()
'''


def write_pipeline(folder: str) -> str:
    path = os.path.join(folder, "many_nodes.py")
    with open(path, "w") as f:
        f.write(PIPELINE)
    return path


# --- the block, drawn for a given size ----------------------------------------------------------------------

def cells(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def nodes_of(n: int, finished: int = 0, running: int = 2, failed: int = 0) -> List[NodeCount]:
    out = []
    for k in range(n):
        name = f"node_{k}" if k % 4 else f"a_rather_long_node_name_number_{k}_that_never_fits"
        if k < finished:
            out.append(NodeCount(name, 10, 10))
        elif k < finished + running:
            out.append(NodeCount(name, 10, 4, 2))
        else:
            out.append(NodeCount(name, 10, 0))
    for k in range(failed):
        out[-1 - k].failed = 1
    return out


@pytest.mark.parametrize("cols, rows", [(79, 9), (199, 49), (40, 5), (20, 2), (120, 1)])
def test_the_block_fits_any_terminal(cols, rows):
    p = Progress(300, 1.0, stream=io.StringIO(), tty=True)
    p._counts.ran, p._counts.cached, p._counts.running, p._counts.failed, p._counts.retried = 120, 30, 4, 1, 7
    nodes = nodes_of(30, finished=9, running=3, failed=1)
    for ascii_only in (False, True):
        lines = p.block(p.start + 65, nodes, cols, rows, ascii_only=ascii_only)
        assert 1 <= len(lines) <= rows
        assert all(line.cell_len <= cols for line in lines), [(line.cell_len, line.plain) for line in lines]
    text = [line.plain for line in p.block(p.start + 65, nodes, cols, rows)]
    assert text[0].startswith("mpipipe ")
    if rows >= 5:
        done = [t for t in text if "nodes done" in t]
        assert len(done) == 1 and done[0].startswith("✓ 9 nodes done")  # finished nodes: one line
        assert any("✗" in t for t in text)  # a failed node keeps its line
    if 5 <= rows < 30:
        assert re.search(r"… \d+ more nodes: ", text[-1]), text


def test_the_heading_keeps_the_most_important_parts_when_narrow():
    p = Progress(300, 1.0, stream=io.StringIO(), tty=True)
    p._counts.ran, p._counts.running, p._counts.failed = 120, 4, 1
    p._meter.add(p.start + 30, 120)
    wide = p.block(p.start + 30, [], 200, 10)[0].plain
    for part in ("120/300 tasks", "4 running", "1 failed", "4.00 tasks/s", "30.0s elapsed", "ETA 45.0s"):
        assert part in wide, wide
    narrow = p.block(p.start + 30, [], 50, 10)[0].plain
    assert "120/300 tasks" in narrow and "1 failed" in narrow and "ETA 45.0s" in narrow, narrow
    assert "running" not in narrow and len(narrow) <= 50


def test_the_rate_is_smoothed_and_the_eta_always_shown():
    """Tasks that finish in bursts (8 every 2 s: 4 per second): the rate stays near 4/s instead of jumping
    between 0 and 16 as it would over 0.5 s windows, and every line has an ETA."""
    out = io.StringIO()
    p = Progress(400, 0.5, stream=out, tty=False)
    t, done, rates = p.start, 0, []
    for step in range(120):
        t += 0.5
        if step % 4 == 3:
            done += 8
        p.maybe_print(t, done, 0, 2, 0, 0)
        rate = p._meter.rate()
        if t - p.start > WINDOW_SETTLED:
            rates.append(rate)
    assert all(3.0 <= r <= 5.0 for r in rates), rates
    lines = out.getvalue().splitlines()
    assert len(lines) == 120 and all(", ETA " in ln and " elapsed" in ln for ln in lines)
    assert "ETA ?" in lines[0]  # nothing finished yet: unknown, but there
    assert re.search(r"\| 4\.\d\d tasks/s, ETA [34]\d\.\ds, 1m 00s elapsed$", lines[-1]), lines[-1]


WINDOW_SETTLED = 25.0


def test_rate_meter_keeps_a_window():
    m = RateMeter(window=10)
    assert m.rate() is None
    m.add(0.0, 0)
    m.add(0.5, 5)
    assert m.rate() is None  # under a second: not yet
    for k in range(2, 41):
        m.add(k * 0.5, 5 * k if k < 20 else 100)
    assert m.rate() == pytest.approx(0.0, abs=1.0)  # nothing finished in the last 10 s


def test_the_notebook_mode_is_one_display_updated_in_place():
    shown: List[object] = []
    updates: List[object] = []

    class Handle:
        def update(self, obj: object) -> None:
            updates.append(obj)

    def display(obj: object, display_id: bool = False) -> Handle:
        assert display_id is True
        shown.append(obj)
        return Handle()

    out = io.StringIO()
    p = Progress(20, 1.0, stream=out, mode="notebook", display=display)
    nodes = nodes_of(3, finished=1, running=1)
    for k in range(1, 6):
        p.maybe_print(p.start + k, 4 * k, 0, 1, 0, 0, lambda: nodes)
    p.finish(lambda: [NodeCount(n.name, 10, 10) for n in nodes])
    assert len(shown) == 1 and len(updates) == 5
    html = updates[-2]._repr_html_()  # type: ignore[attr-defined]
    assert html.startswith("<pre") and "1 node done" in html and "&lt;" not in html
    assert "tasks" in repr(updates[0])
    # at the end the display is cleared: the one summary line that follows says it all
    assert updates[-1]._repr_html_() == "" and repr(updates[-1]) == ""  # type: ignore[attr-defined]
    p.summary({"job_id": "nb", "status": "succeeded", "ran": 20, "cached": 0, "retried": 0, "failed": 0,
               "executors": 2, "platform": "local", "job_dir": "/j/nb"}, [])
    summary = out.getvalue().splitlines()
    assert len(summary) == 1 and summary[0].startswith("[mpipipe] job nb succeeded in ") and "/j/nb" in summary[0]


def test_progress_and_summary_are_log_records_of_mpipipe(caplog):
    """No stream given: the plain line and the summary are INFO records of "mpipipe.console" (here the
    application, pytest, configured logging, so mpipipe adds no handler of its own and draws no block)."""
    caplog.set_level(logging.INFO, logger="mpipipe")
    p = Progress(10, 1.0)
    assert p.mode == "plain"
    p.maybe_print(p.start + 1.5, 5, 0, 1, 0, 0, lambda: nodes_of(1))
    p.summary({"job_id": "j", "status": "succeeded", "ran": 10, "cached": 0, "retried": 0, "failed": 0,
               "executors": 2, "platform": "local", "job_dir": "/tmp/j"}, [])
    records = [r for r in caplog.records if r.name == "mpipipe.console"]
    assert records and all(r.levelno == logging.INFO for r in records)
    assert records[0].getMessage().startswith("[mpipipe] 5/10 tasks done")
    assert any(r.getMessage().startswith("[mpipipe] report: ") for r in records)
    caplog.clear()
    console = logging.getLogger("mpipipe.console")
    before = console.level
    console.setLevel(logging.WARNING)  # silenced by the user, at any time
    try:
        q = Progress(10, 0)
        q.summary({"job_id": "j", "status": "succeeded", "ran": 10, "cached": 0, "retried": 0, "failed": 0,
                   "executors": 2, "platform": "local", "job_dir": "/tmp/j"}, [])
        assert not [r for r in caplog.records if r.name == "mpipipe.console"]
    finally:
        console.setLevel(before)


def test_the_summary_stays_when_progress_is_off():
    out = io.StringIO()
    p = Progress(10, 0, stream=out, tty=True)
    p.maybe_print(p.start + 5, 10, 0, 0, 0, 0, lambda: nodes_of(2))
    p.finish(lambda: nodes_of(2, finished=2))
    assert out.getvalue() == ""
    p.summary({"job_id": "j", "status": "succeeded", "ran": 10, "cached": 0, "retried": 0, "failed": 0,
               "executors": 2, "platform": "local", "job_dir": "/tmp/j"}, [])
    assert "[mpipipe] job j succeeded in " in out.getvalue()


# --- the commands the summary prints ----------------------------------------------------------------------

def test_the_printed_report_command_works_without_the_virtualenv(tmp_path):
    """The summary's `report:` and `logs:` lines, run as printed from a shell whose PATH lacks the virtualenv's
    bin/ (no `. .venv/bin/activate`, as after `make demo`)."""
    from test_report import synthetic_job

    jd = synthetic_job(str(tmp_path / "jobs" / "the job"), 40, 2)
    out = io.StringIO()
    Progress(40, 1.0, stream=out).summary(
        {"job_id": "the job", "status": "succeeded", "ran": 40, "cached": 0, "retried": 0, "failed": 0,
         "executors": 2, "platform": "local", "job_dir": jd}, [])
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^\[mpipipe\] (report|logs): (.*)$", out.getvalue(), re.M)}
    assert set(lines) == {"report", "logs"}, out.getvalue()
    env = {k: v for k, v in env_for_tests().items() if k not in ("VIRTUAL_ENV",)}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if os.path.realpath(p) != os.path.realpath(BIN)) or "/usr/bin:/bin"
    assert shutil.which("mpipipe", path=env["PATH"]) is None or "venv" not in shutil.which("mpipipe", path=env["PATH"])
    done = run(["/bin/sh", "-c", lines["report"]], env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert os.path.exists(os.path.join(jd, "report.html"))
    done = run(["/bin/sh", "-c", lines["logs"]], env=env, cwd=str(tmp_path), timeout=60)
    assert done.returncode in (0, 2), done.stderr  # a synthetic job has no log files: one error line
    assert "command not found" not in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m_mpipipe_is_the_command():
    done = run([sys.executable, "-m", "mpipipe", "--version"], timeout=60)
    assert done.returncode == 0 and "mpipipe, version" in done.stdout


# --- real runs --------------------------------------------------------------------------------------------

def test_a_piped_run_prints_plain_lines_and_the_summary(tmp_path):
    script = write_pipeline(str(tmp_path))
    done = python(script, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2", "--nodes", "4",
                  "--parts", "4", "--sleep", "0.25", "--progress-interval", "0.5", check=True, timeout=180)
    err = done.stderr
    assert not ESCAPES.search(err), err[:2000]
    progress = [ln for ln in err.splitlines() if re.match(r"^\[mpipipe\] [\d,]+/[\d,]+ tasks done", ln)]
    assert progress, err
    assert all(re.search(r"tasks/s, ETA \S+, \S+ elapsed$", ln) for ln in progress), progress
    assert "[mpipipe] job " in err and " succeeded in " in err and "[mpipipe] report: " in err


def test_progress_interval_zero_keeps_the_summary(tmp_path):
    script = write_pipeline(str(tmp_path))
    done = python(script, "--data-root", str(tmp_path / "jobs"), "--num-executors", "1", "--nodes", "2",
                  "--parts", "2", "--sleep", "0", "--progress-interval", "0", check=True, timeout=180)
    assert not re.search(r"^\[mpipipe\] [\d,]+/[\d,]+ tasks done", done.stderr, re.M)
    assert " succeeded in " in done.stderr and "[mpipipe] report: " in done.stderr


def test_a_script_can_silence_or_redirect_mpipipes_messages(tmp_path):
    """logging.getLogger("mpipipe") is the one switch: a level silences it, a handler of the application's
    receives the lines instead (and then mpipipe adds none of its own)."""
    script = write_pipeline(str(tmp_path))
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import logging, runpy, sys\nlogging.getLogger('mpipipe').setLevel(logging.ERROR)\n"
                     f"sys.argv[0] = {script!r}\nrunpy.run_path({script!r}, run_name='__main__')\n")
    done = python(str(quiet), "--data-root", str(tmp_path / "q"), "--num-executors", "1", "--nodes", "2",
                  "--parts", "2", "--sleep", "0", check=True, timeout=180)
    assert "[mpipipe]" not in done.stderr, done.stderr
    log_file = tmp_path / "mpipipe.log"
    redirect = tmp_path / "redirect.py"
    redirect.write_text(f"import logging, runpy, sys\nlogging.basicConfig(filename={str(log_file)!r}, "
                        "level=logging.INFO, format='%(name)s %(levelname)s %(message)s')\n"
                        f"sys.argv[0] = {script!r}\nrunpy.run_path({script!r}, run_name='__main__')\n")
    done = python(str(redirect), "--data-root", str(tmp_path / "r"), "--num-executors", "1", "--nodes", "2",
                  "--parts", "2", "--sleep", "0", check=True, timeout=180)
    assert "[mpipipe]" not in done.stderr, done.stderr
    logged = log_file.read_text()
    assert "mpipipe.console INFO [mpipipe] job " in logged and "[mpipipe] report: " in logged, logged


# --- in tmux ----------------------------------------------------------------------------------------------

def _apt_install(package: str) -> Optional[str]:
    """apt-get install `package`; None when done, else why it could not be."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "installing it with apt-get needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in ([apt, "install", "-y", "-q", package], [apt, "update", "-q"], [apt, "install", "-y", "-q", package]):
        done = run(argv, env=env, timeout=900)
        if done.returncode == 0 and argv[1] == "install":
            return None
    return f"apt-get install {package} failed"


@pytest.fixture(scope="session")
def tmux() -> str:
    exe = shutil.which("tmux")
    if exe is None:
        why = _apt_install("tmux")
        exe = shutil.which("tmux")
        if exe is None:
            pytest.skip(f"tmux is not installed and cannot be: {why}")
    return exe


class Pane:
    """A tmux session of our own (its own server socket and name), killed by the test's finalizer."""

    def __init__(self, tmux: str, folder: str, cols: int, rows: int) -> None:
        self.tmux = tmux
        self.name = f"mpipipe-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.socket = self.name
        conf = os.path.join(folder, "tmux.conf")
        with open(conf, "w") as f:
            f.write("set -g status off\nset -g history-limit 50000\nset -g default-terminal tmux-256color\n")
        self.base = [tmux, "-L", self.socket, "-f", conf]
        self.cols, self.rows = cols, rows

    def start(self, command: str, env: Dict[str, str]) -> None:
        done = run(self.base + ["new-session", "-d", "-s", self.name, "-x", str(self.cols), "-y", str(self.rows),
                                command], env=env, timeout=30)
        assert done.returncode == 0, done.stderr

    def capture(self, joined: bool = True) -> List[str]:
        argv = self.base + ["capture-pane", "-p", "-t", self.name, "-S", "-", "-E", "-"] + (["-J"] if joined else [])
        done = run(argv, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.rstrip("\n").split("\n")

    def size(self) -> str:
        return run(self.base + ["display", "-p", "-t", self.name, "#{pane_width}x#{pane_height}"], timeout=30).stdout

    def kill(self) -> None:
        run(self.base + ["kill-session", "-t", self.name], timeout=30)


@pytest.mark.parametrize("cols, rows", [(80, 10), (200, 50)])
def test_live_progress_in_a_tmux_pane(tmux, tmp_path, request, cols, rows):
    """A 15-node plan in a pane of 80x10 and of 200x50: no line wider than the pane, the block never taller
    than it, one block left at the end (no stale frames in the scrollback), finished nodes on one line."""
    script = write_pipeline(str(tmp_path))
    pane = Pane(tmux, str(tmp_path), cols, rows)
    request.addfinalizer(pane.kill)
    env = env_for_tests({"TERM": "tmux-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    argv = [sys.executable, script, "--data-root", str(tmp_path / "jobs"), "--num-executors", "2", "--nodes", "15",
            "--parts", "3", "--sleep", "0.15", "--progress-interval", "0.5"]
    marker = "MPIPIPE-TEST-EXIT"
    pane.start(f"cd {shlex.quote(str(tmp_path))} && {shlex.join(argv)}; echo {marker}=$?; sleep 600", env)
    assert pane.size().strip() == f"{cols}x{rows}"
    frames: List[List[str]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        lines = pane.capture()
        if any(ln.startswith(marker) for ln in lines):
            break
        if any(HEADING.match(ln) for ln in lines):
            frames.append(lines)
        time.sleep(0.3)
    else:
        raise AssertionError("the run did not end within 240 s:\n" + "\n".join(pane.capture()))
    lines = pane.capture()
    exit_line = [ln for ln in lines if ln.startswith(marker)]
    assert exit_line == [f"{marker}=0"], "\n".join(lines)
    end = next(k for k, ln in enumerate(lines) if ln.startswith("[mpipipe] job "))
    block = lines[:end]
    wide = [ln for ln in block if cells(ln) > cols]
    assert not wide, wide  # -J joins what the terminal wrapped: a wrapped line would show here
    headings = [ln for ln in lines if HEADING.match(ln)]
    assert len(headings) == 1, "stale frames in the scrollback:\n" + "\n".join(lines)
    final = block[block.index(headings[0]):]
    assert len(final) <= rows - 1
    assert re.match(r"^mpipipe .*46/46 tasks .*in \S+", headings[0]), headings[0]
    assert any(re.match(r"^✓ 16 nodes done: load, clean_and_normalise", ln) for ln in final), final
    assert frames, "no frame was seen while the run ran"
    seen = [ln for f in frames for ln in f if HEADING.match(ln)]
    assert any("elapsed" in ln and "ETA " in ln for ln in seen), seen
    if cols >= 200:
        assert any("tasks/s" in ln and "running" in ln for ln in seen), seen
        assert any(re.match(r"^▸ \S+ +━+ +\d+/3", ln) for f in frames for ln in f)
    else:
        assert any(re.match(r"^… \d+ more nodes: ", ln) for f in frames for ln in f), frames[-1]
    assert all(len([ln for ln in f if HEADING.match(ln)]) == 1 for f in frames)
