"""The `mpipipe` command: find jobs under a data root, look at one (status, logs, report), and at the platforms.

Every command that takes a job takes its directory, its job id (a folder of the data root), a unique start of
one, or `latest`. Errors print as scripts print theirs, `mpipipe: error: ...`, and exit 2 when the command
line names something that is not there; `status` says the job's state in its exit code (STATE_CODES).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

import mpipipe
from mpipipe.console import error_line
from mpipipe.errors import ConfigError, MpipipeError
from mpipipe.execution.journal import END, JOURNAL_NAME, OK, RUN, decode, is_attempt, kind, read_records
from mpipipe.fmt import fmt_count, fmt_dur

# the exit code of `mpipipe status` for each state of a job (a script's own exit codes where it has one)
STATE_CODES = {"succeeded": 0, "failed": 1, "running": 3, "killed": 4, "not started": 5, "interrupted": 130}
USAGE = 2  # the command line names no job, or something that is not one

def _job_status(job_dir: str) -> Dict[str, Any]:
    """Per node: partitions done and failed attempts, from job.json and the journal (no running job needed)."""
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    nodes = {n["name"]: {"total": n["npartitions"], "done": set(), "failed_attempts": 0, "last_error": None,
                         "failed_partitions": set()} for n in job["nodes"]}
    runs, end = 0, None
    for rec in read_records(os.path.join(job_dir, JOURNAL_NAME)):
        k = kind(rec)
        if k == RUN:
            runs, end = runs + 1, None
        elif k == END:
            end = rec.get("status")
        elif is_attempt(rec) and rec.get("n") in nodes:
            node = nodes[rec["n"]]
            if k == OK:
                node["done"].add(rec["p"])
            else:
                node["failed_attempts"] += 1
                node["failed_partitions"].add(rec["p"])
                log = (rec.get("log") or ["?"])[0]
                node["last_error"] = f"[{rec['p']}] attempt {rec['a']}: {rec.get('e')} (log: {log})"
    state, age = _heartbeat(job_dir)
    running = _rank0_running(job_dir, job, state, age)
    live: Dict[str, Any] = state.get("nodes", {}) if running else {}
    for name, node in nodes.items():
        node["running"] = int(live.get(name, {}).get("running", 0))
        node["failed"] = int(live.get(name, {}).get("failed", 0)) if running else \
            (0 if end == "succeeded" else _failed_for_good(node))
    status = "running" if running else (end or ("killed (no end record; run the same command to resume)" if runs
                                                 else "not started"))
    return {"job": job, "nodes": nodes, "runs": runs, "status": status, "heartbeat": age if state else None}


HEARTBEAT_SECONDS = 30.0  # a state.json older than this is not a running rank 0's


def _rank0_running(job_dir: str, job: Dict[str, Any], state: Dict[str, Any], age: float) -> bool:
    """Rank 0's lock tells on its own host only; elsewhere its heartbeat does (state.json, rewritten every
    second while rank 0 runs), from any host that sees the job directory."""
    from mpipipe.joblogs import job_is_running

    elsewhere = job.get("host") not in (None, socket.gethostname())
    return job_is_running(job_dir) or (elsewhere and state.get("status") == "running" and age < HEARTBEAT_SECONDS)


def _heartbeat(job_dir: str) -> "tuple[Dict[str, Any], float]":
    """state.json and its age: seconds since rank 0 last wrote it (its own clock or the file's, the later)."""
    path = os.path.join(job_dir, "state.json")
    try:
        with open(path) as f:
            state = json.load(f)
        written = max(float(state.get("time") or 0), os.stat(path).st_mtime)
    except (OSError, ValueError, TypeError, AttributeError):
        return {}, float("inf")
    return (state if isinstance(state, dict) else {}), max(0.0, time.time() - written)


def _failed_for_good(node: Dict[str, Any]) -> int:
    """Partitions whose last journaled attempt failed (after the run ended)."""
    return len({p for p in node["failed_partitions"] if p not in node["done"]})



def state_of(status: str) -> str:
    """The state (a key of STATE_CODES) of a status line of _job_status."""
    return "killed" if status.startswith("killed") else status if status in STATE_CODES else "failed"


# --- finding jobs ------------------------------------------------------------------------------------------

def default_data_root() -> str:
    """SP_DATA_ROOT, else the default of --data-root (./mpipipe-jobs), as a run would choose it."""
    from mpipipe.config import JobConfig

    return os.environ.get("SP_DATA_ROOT") or str(JobConfig.__dataclass_fields__["data_root"].default)


def _is_job_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in ("job.json", JOURNAL_NAME))


def _last_activity(job_dir: str) -> float:
    """When the job last wrote its journal, state or description (the newest job is the one that did last)."""
    times = [0.0]
    for name in (JOURNAL_NAME, "state.json", "job.json"):
        try:
            times.append(os.stat(os.path.join(job_dir, name)).st_mtime)
        except OSError:
            pass
    return max(times)


def job_dirs(data_root: str) -> List[str]:
    """The job directories under `data_root`, the one active last first."""
    try:
        entries = [e.path for e in os.scandir(data_root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    found = [p for p in entries if _is_job_dir(p)]
    return sorted(found, key=lambda p: (-_last_activity(p), os.path.basename(p)))


def resolve_job(ref: str, data_root: str) -> str:
    """The job directory that `ref` names: a job directory, a job id under `data_root`, `latest`, or the unique
    job id that starts with `ref`. Raises ConfigError (exit 2) naming what was tried."""
    for path in (ref, os.path.join(data_root, ref)):
        if os.path.isdir(path) and _is_job_dir(path):
            return path
    if ref == "latest":
        jobs = job_dirs(data_root)
        if not jobs:
            raise ConfigError(f"no job under {data_root} (the data root; --data-root or SP_DATA_ROOT chooses "
                              "another)")
        return jobs[0]
    if os.path.isdir(ref):  # a folder without job.json yet: a SLURM job that has not started, or a mistake
        return ref
    slurm_id = ref.split("_", 1)[0].isdigit()  # a SLURM job id (status looks it up): never a start of a job id
    starts = [p for p in job_dirs(data_root) if os.path.basename(p).startswith(ref)] if ref and not slurm_id else []
    if len(starts) == 1:
        return starts[0]
    if starts:
        names = ", ".join(sorted(os.path.basename(p) for p in starts)[:8])
        raise ConfigError(f"{ref!r} is the start of several job ids under {data_root}: {names}; give more of it")
    raise ConfigError(f"no job {ref!r}: not a job directory, and no job id under {data_root} is or starts with "
                      "it (`mpipipe ls` lists them; --data-root or SP_DATA_ROOT chooses another data root)")


@dataclass
class JobLine:
    """One job as `mpipipe ls` shows it: read from job.json, state.json and the end of the journal only."""

    job_id: str
    path: str
    state: str
    started: Optional[float]
    seconds: Optional[float]
    done: Optional[int]
    total: Optional[int]
    platform: str


def _last_run(path: str, chunk: int = 1 << 16) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(the last run record, the end record after it) of a journal, read backwards from its end."""
    try:
        f = open(path, "rb")
    except OSError:
        return None, None
    with f:
        size = f.seek(0, os.SEEK_END)
        pos, data = size, b""
        while True:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            lines = data.split(b"\n")
            if pos > 0:
                lines = lines[1:]  # the first may be cut
            end = None
            for line in reversed(lines):
                if b'"run"' not in line and b'"end"' not in line:
                    continue
                rec = decode(line + b"\n")
                k = kind(rec) if rec is not None else None
                if k == END and end is None:
                    end = rec
                elif k == RUN:
                    return rec, end
            if pos == 0:
                return None, end
            chunk *= 2


def job_line(job_dir: str) -> JobLine:
    job: Dict[str, Any] = {}
    try:
        with open(os.path.join(job_dir, "job.json")) as f:
            loaded = json.load(f)
        job = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    state, age = _heartbeat(job_dir)
    run, end = _last_run(os.path.join(job_dir, JOURNAL_NAME))
    running = _rank0_running(job_dir, job, state, age)
    started = _number(run.get("time")) if run else _number(job.get("started"))
    if running:
        status, finished = "running", time.time()
    elif run is None:
        status, finished = "not started", None
    elif end is None:
        status, finished = "killed", _number(state.get("time"))
    else:
        status, finished = state_of(str(end.get("status"))), _number(end.get("time"))
    nodes = state.get("nodes") if isinstance(state.get("nodes"), dict) else None
    done = total = None
    if nodes:
        done = sum(int(c.get("done", 0)) for c in nodes.values() if isinstance(c, dict))
        total = sum(int(c.get("total", 0)) for c in nodes.values() if isinstance(c, dict))
    elif job.get("nodes"):
        total = sum(int(n.get("npartitions") or 0) for n in job["nodes"] if isinstance(n, dict))
    seconds = finished - started if started is not None and finished is not None else None
    return JobLine(str(job.get("job_id") or os.path.basename(job_dir)), job_dir, status, started, seconds,
                   done, total, str(job.get("platform") or "?"))


def _number(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# --- the command ---------------------------------------------------------------------------------------------

class _Group(click.Group):
    """Errors as one `mpipipe: error: ...` line: exit 2 for the command line, an MpipipeError's own code else."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,  # type: ignore[override]
             **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name or "mpipipe", standalone_mode=False, **extra)
        except click.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else " (see `mpipipe --help`)"
            error_line(f"{e.format_message()}{hint}")
            sys.exit(USAGE)
        except click.ClickException as e:
            error_line(e.format_message())
            sys.exit(e.exit_code)
        except MpipipeError as e:
            error_line(str(e))
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


data_root_option = click.option(
    "--data-root", "data_root", default=None, metavar="DIR",
    help="folder that holds the job directories (default: SP_DATA_ROOT, else ./mpipipe-jobs)")


def _job_dir(job: str, data_root: Optional[str]) -> str:
    return resolve_job(job, data_root or default_data_root())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mpipipe.__version__, prog_name="mpipipe")
def main() -> None:
    """Find and look at mpipipe jobs, and at the platforms here. Pipelines themselves run as
    `python your_script.py`.

    JOB, wherever a command takes one: a job directory, a job id under the data root, a unique start of
    one, or `latest` (the job that ran last).
    """


@main.command("ls", short_help="List the jobs under the data root, newest first.")
@data_root_option
def ls(data_root: Optional[str]) -> None:
    """The jobs under the data root, the one that ran last first: state, when it started, how long its last
    run took (or has been running), tasks done of all, platform."""
    root = data_root or default_data_root()
    if not os.path.isdir(root):
        raise ConfigError(f"no data root {root} (nothing ran here yet; --data-root or SP_DATA_ROOT chooses "
                          "another)")
    rows = [job_line(p) for p in job_dirs(root)]
    if not rows:
        click.echo(f"no jobs under {root}")
        return
    table = [("JOB", "STATE", "STARTED", "DURATION", "TASKS", "PLATFORM")]
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else "-"
        tasks = f"{fmt_count(r.done) if r.done is not None else '?'}/{fmt_count(r.total)}" if r.total else "-"
        table.append((r.job_id, r.state, started, fmt_dur(r.seconds) if r.seconds is not None else "-", tasks,
                      r.platform))
    widths = [max(len(row[k]) for row in table) for k in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@main.command(short_help="A job's progress per node; the exit code is its state.")
@click.argument("job")
@data_root_option
@click.pass_context
def status(ctx: click.Context, job: str, data_root: Optional[str]) -> None:
    """Progress of a job, per node: done/total partitions, failed attempts, last error (attempts are numbered
    from 0, as in the log file names pP.aA.log, `mpipipe logs -t` and the report).

    JOB is a job directory, a job id, `latest`, or the id of a SLURM job that mpipipe submitted (its SLURM job
    id(s) and their state are shown too). The exit code is the job's state: 0 succeeded, 1 failed, 3 running,
    4 stopped without an end record (killed; the same command resumes), 5 not started, 130 interrupted; 2 when
    JOB names no job.
    """
    try:
        job_dir = _job_dir(job, data_root)
    except ConfigError:
        if not job.split("_", 1)[0].isdigit():
            raise
        from mpipipe.platform.slurm import find_job_dir

        found = find_job_dir(job.split("_", 1)[0])
        if found is None:
            raise ConfigError(f"no job directory found for SLURM job {job}: SLURM no longer knows it and it is not "
                              "in this user's index of submissions; give the job directory") from None
        job_dir = found
        click.echo(f"SLURM job {job}: job directory {job_dir}")
    slurm = _slurm_lines(job_dir)
    state = "not started"
    if not os.path.exists(os.path.join(job_dir, "job.json")):
        if not slurm:
            raise ConfigError(f"{job_dir} is not a job directory (no job.json); give <data-root>/<job-id>, a job "
                              "id or `latest`")
        name = os.path.basename(os.path.abspath(job_dir))
        click.echo(f"job {name}: not started yet (rank 0 has not written job.json)")
    else:
        st = _job_status(job_dir)
        state = state_of(st["status"])
        info = st["job"]
        click.echo(f"job {info['job_id']} on {info['platform']} ({info['executors']} executors): {st['status']}, "
                   f"{st['runs']} run(s)")
        if info.get("host") or st["heartbeat"] is not None:
            beat = "" if st["heartbeat"] is None else f"; state.json written {st['heartbeat']:.0f} s ago"
            click.echo(f"  rank 0 on {info.get('host', '?')}{beat}")
        for name, node in st["nodes"].items():
            done = len(node["done"])
            pending = max(0, node["total"] - done - node["running"] - node["failed"])
            line = (f"  {name}: {done}/{node['total']} done, {node['running']} running, {pending} pending, "
                    f"{node['failed']} failed; {node['failed_attempts']} failed attempt(s)")
            click.echo(line)
            if node["last_error"] and len(node["done"]) < node["total"]:
                click.echo(f"    last error {node['last_error']}")
    for line in slurm:
        click.echo(line)
    ctx.exit(STATE_CODES[state])


def _slurm_lines(job_dir: str) -> "list[str]":
    """The SLURM jobs submitted for this job directory and their state (nothing for other jobs)."""
    if not os.path.exists(os.path.join(job_dir, "slurm", "submissions.jsonl")):
        return []
    from mpipipe.platform.slurm import status_lines

    return status_lines(job_dir)



@main.command(short_help="A job's log files, one task's attempts, or --follow.")
@click.argument("job")
@data_root_option
@click.option("--task", "-t", "task", default=None, metavar="NODE[P]",
              help="show this task's attempts, numbered from 0 (NODE[P], NODE:P, or NODE for all its partitions)")
@click.option("--follow", "-f", is_flag=True, help="print what the logs gain until the job ends (Ctrl-C to stop)")
@click.option("--tail", "-n", "tail", default=20, show_default=True, help="lines of the scheduler's log to show")
def logs(job: str, data_root: Optional[str], task: Optional[str], follow: bool, tail: int) -> None:
    """The logs of JOB (a job directory, a job id or `latest`): which files there are, one task's output, or all
    of them as they grow."""
    from mpipipe import joblogs

    job_dir = _job_dir(job, data_root)
    if task is not None:
        try:
            node, partition = joblogs.parse_task(task)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        found = joblogs.task_logs(job_dir, node, partition)
        if not found:
            raise ConfigError(f"no attempt of {task} in the journal of {job_dir} (yet); see `mpipipe status` for "
                              "the node names")
        for heading, text in found:
            click.echo(heading)
            click.echo(text.rstrip("\n"))
        return
    if follow:
        try:
            joblogs.follow(job_dir, click.echo)
        except KeyboardInterrupt:
            pass
        return
    files = joblogs.log_files(job_dir)
    if not files:
        raise ConfigError(f"{job_dir} has no logs (is it a job directory?)")
    for path, size in files:
        click.echo(f"{fmt_count(size):>10}  {path}")
    rank0 = os.path.join(job_dir, "logs", "rank-0.log")
    if os.path.exists(rank0) and tail > 0:
        click.echo(f"--- last {tail} lines of {rank0} ---")
        for line in joblogs.iter_tail(rank0, tail):
            click.echo(line)


@main.command(short_help="Write a job's self-contained HTML report.")
@click.argument("job")
@data_root_option
@click.option("--output", "-o", default=None, help="where to write the HTML file (default: <job dir>/report.html)")
def report(job: str, data_root: Optional[str], output: Optional[str]) -> None:
    """Write a self-contained HTML report of JOB (a job directory, a job id or `latest`): plan, timeline per
    rank, durations, failures."""
    from mpipipe.report import write_report

    path = write_report(_job_dir(job, data_root), output)
    click.echo(f"report written to {path}")


@main.command(short_help="Which hosts could run a task that needs REQUIREMENT.")
@click.argument("requirement")
@click.option("--job", "job", default=None, metavar="JOB",
              help="match against the hosts a job's executors reported (its job.json); a job directory, a job id "
                   "or `latest`")
@data_root_option
@click.option("--hosts", default=None, metavar="RANKS=HOST;...",
              help="match against these host descriptions (same syntax as the run flag --hosts)")
def match(requirement: str, job: Optional[str], data_root: Optional[str], hosts: Optional[str]) -> None:
    """Parse REQUIREMENT and show which executor hosts could run a task that needs it; exit code 1 when none can.

    Without --job or --hosts, matches against this machine as probed now.
    """
    from mpipipe.execution.hostprobe import apply_override, parse_overrides, probe, spec_of
    from mpipipe.execution.placement import match_report
    from mpipipe.requirements import parse

    req = parse(requirement)
    job_dir = _job_dir(job, data_root) if job is not None else None
    if job_dir is not None:
        try:
            with open(os.path.join(job_dir, "job.json")) as f:
                found = {int(r): d for r, d in json.load(f).get("hosts", {}).items()}
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {job_dir}/job.json: {getattr(e, 'strerror', None) or e}") from None
        if not found:
            raise ConfigError(f"{job_dir}/job.json records no hosts (a job from an older mpipipe?)")
    else:
        found = {1: probe()}
    if hosts:
        overrides = parse_overrides(hosts)
        base = found.get(1, probe())
        found = {r: apply_override(found.get(r, base), o) for r, o in overrides.items()} | \
            {r: d for r, d in found.items() if r not in overrides and job_dir is not None}
    click.echo(match_report(req, found))
    if not any(req.match(spec_of(d)) for d in found.values()):
        sys.exit(1)  # nothing fits: scripts can test it


@main.command(short_help="The platforms, and which one auto-detection picks.")
def platforms() -> None:
    """Each built-in platform, whether it can run here, and which one auto-detection picks and why."""
    from mpipipe.platform import registry

    for name, ok, why in registry.describe_all():
        click.echo(f"{name:8} {'available' if ok else 'unavailable':12} {why}")
    name, reason = registry.detect()
    click.echo(f"auto-detection picks {name}: {reason}")


