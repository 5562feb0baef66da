"""A job's report: one self-contained HTML file (inline CSS, SVG and a little JavaScript, nothing fetched).

`write_report(job_dir)` reads only the job directory (`job.json` and the journal), so it
works while the job runs, after it ended and after it was killed, whatever the platform.
The page shows the job's summary, the plan as a layered graph, a timeline with one row
per executor rank and one bar per task attempt, the task durations per node, the
slowest attempts and the failures. Big jobs stay readable and the file stays small:
beyond `MAX_BARS` attempts the timeline shows per-rank time slices instead of bars.
"""
from __future__ import annotations

from mpipipe.report.job import MAX_BARS
from mpipipe.report.page import write_report

__all__ = ["MAX_BARS", "write_report"]
