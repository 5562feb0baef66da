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
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False))
def status(job_dir: str) -> None:
    """Progress of the job in JOB_DIR, per node: done/total partitions, failed attempts, last error."""
    if not os.path.exists(os.path.join(job_dir, "job.json")):
        raise click.ClickException(f"{job_dir} is not a job directory (no job.json); give <data-root>/<job-id>")
    st = _job_status(job_dir)
    job = st["job"]
    click.echo(f"job {job['job_id']} on {job['platform']} ({job['executors']} executors): {st['status']}, "
               f"{st['runs']} run(s)")
    for name, node in st["nodes"].items():
        line = f"  {name}: {len(node['done'])}/{node['total']} done, {node['failed_attempts']} failed attempt(s)"
        click.echo(line)
        if node["last_error"] and len(node["done"]) < node["total"]:
            click.echo(f"    last error {node['last_error']}")


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
