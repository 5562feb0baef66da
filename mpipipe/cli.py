"""The `mpipipe` command: look at jobs from their job directory, and at the platforms here."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Dict

import click

import mpipipe
from mpipipe.execution.journal import END, JOURNAL_NAME, OK, RUN, is_attempt, kind, read_records
from mpipipe.fmt import fmt_count


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
                node["last_error"] = f"[{rec['p']}] attempt {rec['a']}: {rec.get('e')} (log: {(rec.get('log') or ['?'])[0]})"
    from mpipipe.joblogs import job_is_running

    state, age = _heartbeat(job_dir)
    # rank 0's lock tells on its own host only; elsewhere its heartbeat does (state.json, rewritten every
    # second while rank 0 runs), from any host that sees the job directory
    elsewhere = job.get("host") not in (None, socket.gethostname())
    running = job_is_running(job_dir) or (elsewhere and state.get("status") == "running" and age < HEARTBEAT_SECONDS)
    live: Dict[str, Any] = state.get("nodes", {}) if running else {}
    for name, node in nodes.items():
        node["running"] = int(live.get(name, {}).get("running", 0))
        node["failed"] = int(live.get(name, {}).get("failed", 0)) if running else \
            (0 if end == "succeeded" else _failed_for_good(node))
    status = "running" if running else (end or ("killed (no end record; run the same command to resume)" if runs
                                                 else "not started"))
    return {"job": job, "nodes": nodes, "runs": runs, "status": status, "heartbeat": age if state else None}


HEARTBEAT_SECONDS = 30.0  # a state.json older than this is not a running rank 0's


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mpipipe.__version__, prog_name="mpipipe")
def main() -> None:
    """Look at mpipipe jobs and platforms. Pipelines themselves run as `python your_script.py`."""


@main.command()
@click.argument("job")
def status(job: str) -> None:
    """Progress of a job, per node: done/total partitions, failed attempts, last error (attempts are numbered
    from 0, as in the log file names pP.aA.log, `mpipipe logs -t` and the report).

    JOB is a job directory (<data-root>/<job-id>) or the id of a SLURM job that
    mpipipe submitted; for a SLURM job the SLURM job id(s) and their state are shown too.
    """
    job_dir = job
    if not os.path.isdir(job) and job.split("_", 1)[0].isdigit():
        from mpipipe.errors import PlatformError
        from mpipipe.platform.slurm import find_job_dir

        try:
            found = find_job_dir(job.split("_", 1)[0])
        except PlatformError as e:
            raise click.ClickException(str(e)) from None
        if found is None:
            raise click.ClickException(f"no job directory found for SLURM job {job}: SLURM no longer knows it and "
                                       "it is not in this user's index of submissions; give the job directory")
        job_dir = found
        click.echo(f"SLURM job {job}: job directory {job_dir}")
    elif not os.path.isdir(job):
        raise click.ClickException(f"{job} is neither a job directory nor a SLURM job id")
    slurm = _slurm_lines(job_dir)
    if not os.path.exists(os.path.join(job_dir, "job.json")):
        if not slurm:
            raise click.ClickException(f"{job_dir} is not a job directory (no job.json); give <data-root>/<job-id>")
        click.echo(f"job {os.path.basename(os.path.abspath(job_dir))}: not started yet (rank 0 has not written job.json)")
    else:
        st = _job_status(job_dir)
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


def _slurm_lines(job_dir: str) -> "list[str]":
    """The SLURM jobs submitted for this job directory and their state (nothing for other jobs)."""
    if not os.path.exists(os.path.join(job_dir, "slurm", "submissions.jsonl")):
        return []
    from mpipipe.platform.slurm import status_lines

    return status_lines(job_dir)


@main.command()
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--task", "-t", "task", default=None, metavar="NODE[P]",
              help="show this task's attempts, numbered from 0 (NODE[P], NODE:P, or NODE for all its partitions)")
@click.option("--follow", "-f", is_flag=True, help="print what the logs gain until the job ends (Ctrl-C to stop)")
@click.option("--tail", "-n", "tail", default=20, show_default=True, help="lines of the scheduler's log to show")
def logs(job_dir: str, task: "str | None", follow: bool, tail: int) -> None:
    """The logs of the job in JOB_DIR: which files there are, one task's output, or all of them as they grow."""
    from mpipipe import joblogs

    if task is not None:
        try:
            node, partition = joblogs.parse_task(task)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        found = joblogs.task_logs(job_dir, node, partition)
        if not found:
            raise click.ClickException(f"no attempt of {task} in the journal of {job_dir} (yet); "
                                       "see `mpipipe status` for the node names")
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
        raise click.ClickException(f"{job_dir} has no logs (is it a job directory?)")
    for path, size in files:
        click.echo(f"{fmt_count(size):>10}  {path}")
    rank0 = os.path.join(job_dir, "logs", "rank-0.log")
    if os.path.exists(rank0) and tail > 0:
        click.echo(f"--- last {tail} lines of {rank0} ---")
        for line in joblogs.iter_tail(rank0, tail):
            click.echo(line)


@main.command()
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default=None, help="where to write the HTML file (default: JOB_DIR/report.html)")
def report(job_dir: str, output: "str | None") -> None:
    """Write a self-contained HTML report of the job in JOB_DIR: plan, timeline per rank, durations, failures."""
    from mpipipe.errors import MpipipeError
    from mpipipe.report import write_report

    try:
        path = write_report(job_dir, output)
    except MpipipeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"report written to {path}")


@main.command()
@click.argument("requirement")
@click.option("--job", "job_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="match against the hosts a job's executors reported (its job.json)")
@click.option("--hosts", default=None, metavar="RANKS=HOST;...",
              help="match against these host descriptions (same syntax as the run flag --hosts)")
def match(requirement: str, job_dir: "str | None", hosts: "str | None") -> None:
    """Parse REQUIREMENT and show which executor hosts could run a task that needs it.

    Without --job or --hosts, matches against this machine as probed now.
    """
    from mpipipe.errors import MpipipeError
    from mpipipe.execution.hostprobe import apply_override, parse_overrides, probe, spec_of
    from mpipipe.execution.placement import match_report
    from mpipipe.requirements import parse

    try:
        req = parse(requirement)
        if job_dir is not None:
            with open(os.path.join(job_dir, "job.json")) as f:
                found = {int(r): d for r, d in json.load(f).get("hosts", {}).items()}
            if not found:
                raise click.ClickException(f"{job_dir}/job.json records no hosts (a job from an older mpipipe?)")
        else:
            here = probe()
            found = {1: here}
        if hosts:
            overrides = parse_overrides(hosts)
            base = found.get(1, probe())
            found = {r: apply_override(found.get(r, base), o) for r, o in overrides.items()} | \
                {r: d for r, d in found.items() if r not in overrides and job_dir is not None}
    except MpipipeError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read {job_dir}/job.json: {e.strerror}") from None
    click.echo(match_report(req, found))
    if not any(req.match(spec_of(d)) for d in found.values()):
        sys.exit(1)  # nothing fits: scripts can test it


@main.command()
def platforms() -> None:
    """Each built-in platform, whether it can run here, and which one auto-detection picks and why."""
    from mpipipe.platform import registry

    for name, ok, why in registry.describe_all():
        click.echo(f"{name:8} {'available' if ok else 'unavailable':12} {why}")
    name, reason = registry.detect()
    click.echo(f"auto-detection picks {name}: {reason}")


if __name__ == "__main__":
    sys.exit(main())
