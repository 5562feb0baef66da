"""The `mpipipe` command: look at jobs from their job directory, and at the platforms here."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

import click

import mpipipe
from mpipipe.execution.journal import JOURNAL_NAME, read_records


def _job_status(job_dir: str) -> Dict[str, Any]:
    """Per node: partitions done and failed attempts, from job.json and the journal (no running job needed)."""
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    nodes = {n["name"]: {"total": n["npartitions"], "done": set(), "failed_attempts": 0, "last_error": None}
             for n in job["nodes"]}
    runs, end = 0, None
    for rec in read_records(os.path.join(job_dir, JOURNAL_NAME)):
        if rec.get("type") == "run":
            runs, end = runs + 1, None
        elif rec.get("type") == "end":
            end = rec.get("status")
        elif rec.get("n") in nodes:
            node = nodes[rec["n"]]
            if rec.get("s") == "ok":
                node["done"].add(rec["p"])
            else:
                node["failed_attempts"] += 1
                node["last_error"] = f"[{rec['p']}] attempt {rec['a']}: {rec.get('e')} (log: {(rec.get('log') or ['?'])[0]})"
    return {"job": job, "nodes": nodes, "runs": runs, "status": end or ("running or killed" if runs else "not started")}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mpipipe.__version__, prog_name="mpipipe")
def main() -> None:
    """Look at mpipipe jobs and platforms. Pipelines themselves run as `python your_script.py`."""


@main.command()
@click.argument("job")
def status(job: str) -> None:
    """Progress of a job, per node: done/total partitions, failed attempts, last error.

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
        for name, node in st["nodes"].items():
            line = f"  {name}: {len(node['done'])}/{node['total']} done, {node['failed_attempts']} failed attempt(s)"
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
def platforms() -> None:
    """Each built-in platform, whether it can run here, and which one auto-detection picks and why."""
    from mpipipe.platform import registry

    for name, ok, why in registry.describe_all():
        click.echo(f"{name:8} {'available' if ok else 'unavailable':12} {why}")
    name, reason = registry.detect()
    click.echo(f"auto-detection picks {name}: {reason}")


if __name__ == "__main__":
    sys.exit(main())
