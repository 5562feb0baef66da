"""Where an mpipipe job's time went, read from its job directory: per node, the tasks, the seconds they took,
and the wall time no task covered (start-up before the first task, scheduling gaps, shut-down after the last).

The journal (read through mpipipe.report.job.Job, as `mpipipe report` reads it) gives every attempt's start
and end and its node; job.json gives each node's kind. With the command's start and end seen from outside,
the wall time splits into:

- before the job started (job.json's "started"): the interpreter, imports, building the plan;
- from there to the journal's run record: starting the executors and hearing from them;
- from the run record to the first task's start;
- within the tasks' span, the seconds when no task ran anywhere (waiting for a dependency to be scheduled,
  dispatch, or executors with nothing to do);
- from the last task's end to the journal's end record, and from there to the command's exit (the summary,
  stopping the executors, the interpreter's exit).

Only the runs of the last process that used the job directory count (a DataFrame script may make several).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import benchlib as B


def union_seconds(intervals: Sequence[Tuple[float, float]]) -> float:
    """Seconds covered by at least one interval."""
    total, end = 0.0, None
    start = 0.0
    for a, b in sorted(intervals):
        if end is None or a > end:
            if end is not None:
                total += end - start
            start, end = a, b
        elif b > end:
            end = b
    if end is not None:
        total += end - start
    return total


def profile(job_dir: str, started: Optional[float] = None, ended: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The profile of a job directory, or None when it has no task. `started`/`ended`: the command's start
    and end (time.time()), when known; without them the wall time is the journal's runs."""
    from mpipipe.errors import JournalError
    from mpipipe.report.job import Job

    try:
        job = Job.load(job_dir)
    except JournalError:
        return None
    first_run = job.invocation_start
    runs = job.runs[first_run:]
    if not runs:
        return None
    kinds = {str(n.get("name", n.get("id"))): str(n.get("kind", "?")) for n in job.nodes}
    nodes: Dict[str, Dict[str, Any]] = {}
    spans: List[Tuple[float, float]] = []
    for i in range(len(job.a_node)):
        if job.a_run[i] < first_run:
            continue
        name = job.names[job.a_node[i]]
        t0, t1 = job.a_t0[i], job.a_t1[i]
        n = nodes.setdefault(name, {"node": name, "kind": kinds.get(name, "?"), "tasks": 0, "failed": 0,
                                    "task_s": 0.0, "longest_s": 0.0, "first": t0, "last": t1})
        n["tasks"] += 1
        n["failed"] += job.a_fail[i]
        n["task_s"] += t1 - t0
        n["longest_s"] = max(n["longest_s"], t1 - t0)
        n["first"], n["last"] = min(n["first"], t0), max(n["last"], t1)
        spans.append((t0, t1))
    if not spans:
        return None
    first = min(a for a, _ in spans)
    last = max(b for _, b in spans)
    run_start = runs[0].time if runs[0].time is not None else first
    start = started if started is not None else run_start
    run_end = max([r.end for r in runs if r.end is not None] + [last])
    end = ended if ended is not None else run_end
    job_start = job.job.get("started")
    if not isinstance(job_start, (int, float)) or not start <= job_start <= run_start:
        job_start = start
    covered = union_seconds(spans)
    rows = []
    for n in sorted(nodes.values(), key=lambda n: n["first"]):
        rows.append({"node": n["node"], "kind": n["kind"], "tasks": n["tasks"], "failed": n["failed"],
                     "task_s": round(n["task_s"], 3), "longest_s": round(n["longest_s"], 3),
                     "span_s": round(n["last"] - n["first"], 3), "starts_at_s": round(n["first"] - start, 3)})
    executors = runs[-1].executors if isinstance(runs[-1].executors, int) else None
    busy = sum(n["task_s"] for n in nodes.values())
    return {"wall_s": round(end - start, 3), "executors": executors, "nodes": rows,
            "before_run_s": round(run_start - start, 3), "before_job_s": round(job_start - start, 3),
            "job_to_run_s": round(run_start - job_start, 3), "run_to_first_task_s": round(first - run_start, 3),
            "tasks_span_s": round(last - first, 3), "no_task_running_s": round((last - first) - covered, 3),
            "after_last_task_s": round(end - last, 3), "last_task_to_run_end_s": round(run_end - last, 3),
            "run_end_to_exit_s": round(end - run_end, 3), "task_s": round(busy, 3),
            "busy_share": round(busy / (executors * (last - first)), 3) if executors and last > first else None}


COLUMNS = ["node", "kind", "tasks", "task-seconds", "longest task (s)", "first start to last end (s)",
           "first start (s after command start)"]


def node_rows(p: Dict[str, Any]) -> List[List[str]]:
    return [[n["node"], n["kind"], str(n["tasks"]) + (f" ({n['failed']} failed)" if n["failed"] else ""),
             B.fmt_num(n["task_s"]), B.fmt_num(n["longest_s"]), B.fmt_num(n["span_s"]), B.fmt_num(n["starts_at_s"])]
            for n in p["nodes"]]


def summary_lines(p: Dict[str, Any]) -> Tuple[str, str]:
    """(how the wall time splits, how much of the tasks' span no task covered)."""
    f = B.fmt_num
    wall = (f"wall {f(p['wall_s'])} s = {f(p['before_job_s'])} s to the job's start (interpreter, imports, plan) + "
            f"{f(p['job_to_run_s'])} s to the run's start (executors started and ready) + "
            f"{f(p['run_to_first_task_s'])} s to the first task + {f(p['tasks_span_s'])} s from the first task's "
            f"start to the last one's end + {f(p['last_task_to_run_end_s'])} s to the run's end + "
            f"{f(p['run_end_to_exit_s'])} s to the command's exit (summary, executors stopped)")
    share = (f"; the executors were busy {p['busy_share']:.0%} of {p['executors']} x that span"
             if p.get("busy_share") is not None else "")
    gaps = (f"between the first task's start and the last one's end, no task ran for "
            f"{B.fmt_num(p['no_task_running_s'])} s{share}")
    return wall, gaps


def lines(p: Dict[str, Any]) -> List[str]:
    """The profile as text lines: how the wall time splits, a table per node, the uncovered time."""
    wall, gaps = summary_lines(p)
    rows = node_rows(p)
    widths = [max(len(r[i]) for r in rows + [COLUMNS]) for i in range(len(COLUMNS))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [COLUMNS] + rows]
    return [wall] + table + [gaps]


def markdown(p: Dict[str, Any]) -> List[str]:
    """The profile as Markdown lines: a sentence, a table, a sentence."""
    wall, gaps = summary_lines(p)
    return [wall + ".", "", B.markdown_table(COLUMNS, node_rows(p)), "", gaps + ".", ""]
