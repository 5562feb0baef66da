"""mpipipe.fmt: one format for durations, sizes, counts and rates, wherever mpipipe shows them."""
from __future__ import annotations

import io
import os
import re

import pytest

from mpipipe.fmt import fmt_bytes, fmt_count, fmt_dur, fmt_rate


@pytest.mark.parametrize("seconds, shown", [
    (0.0, "0µs"), (0.000_25, "250µs"), (0.0025, "2.5ms"), (0.25, "250ms"), (2.345, "2.35s"), (12.34, "12.3s"),
    (59.94, "59.9s"), (65, "1m 05s"), (3599.4, "59m 59s"), (7200, "2h 00m"), (3 * 86400 + 61, "72h 01m"),
    (-1, "?"), (float("nan"), "?"), (float("inf"), "?"),
])
def test_durations(seconds, shown):
    assert fmt_dur(seconds) == shown


@pytest.mark.parametrize("n, shown", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (3 * 2**20, "3.0 MiB"),
    (5.5 * 2**30, "5.5 GiB"), (2**40, "1.0 TiB"), (3 * 2**50, "3072.0 TiB"),
])
def test_sizes(n, shown):
    assert fmt_bytes(n) == shown


def test_counts():
    assert fmt_count(0) == "0" and fmt_count(999) == "999" and fmt_count(1_234_567) == "1,234,567"


@pytest.mark.parametrize("rate, unit, shown", [
    (44_123.4, "tasks", "44,123 tasks/s"), (123.4, "", "123/s"), (12.34, "", "12.3/s"), (0.25, "tasks", "0.25 tasks/s"),
    (0, "", "0.00/s"), (float("nan"), "", "?/s"),
])
def test_rates(rate, unit, shown):
    assert fmt_rate(rate, unit) == shown


def test_the_progress_lines_and_the_summary_use_them():
    from mpipipe.execution.progress import NodeCount, Progress

    out = io.StringIO()
    p = Progress(2000, interval=1.0, stream=out, tty=False)
    p.maybe_print(p._last + 2.0, 1500, 100, 3, 1, 2)
    head = out.getvalue()
    assert head.startswith("[mpipipe] 1,600/2,000 tasks done (100 from journal), 3 running, 1 failed, 2 retried | "
                           "750 tasks/s, ETA 533ms"), head
    bar = p._bar(NodeCount("square", 4000, 1200, 2, 0), 10.0)
    assert "1,200/4,000 done, 2 running | 0.00/s" in bar
    out.truncate(0)
    out.seek(0)
    p.summary({"job_id": "j", "status": "succeeded", "ran": 1500, "cached": 100, "retried": 2, "failed": 0,
               "executors": 3, "platform": "mpi", "job_dir": "/d", "bytes_read": 3 * 2**20, "bytes_written": 1536,
               "rows_written": 12345, "slowest": [(65.0, "square", 3)]}, [])
    text = out.getvalue()
    assert re.search(r"job j succeeded in \S+: 1,500 tasks ran \([\d,.]+/s\), 100 reused from the journal", text)
    assert "data: 3.0 MiB read, 1.5 KiB written, 12,345 rows written" in text
    assert "slowest tasks: square[3] 1m 05s" in text


def test_no_module_formats_durations_or_sizes_of_its_own():
    """progress.py, the SLURM watcher, the CLI and the report all go through mpipipe.fmt."""
    import mpipipe

    root = os.path.dirname(mpipipe.__file__)
    own = re.compile(r"^\s*def _?(fmt|format)_?(dur|duration|secs|seconds|time|bytes|size|rate|count)\w*\(")
    # requirements.py spells sizes and durations in the requirement syntax that parse() reads back (exact,
    # not for reading by people)
    others = ("fmt.py", "requirements.py")
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.relpath(path, root) not in others:
                with open(path, encoding="utf-8") as f:
                    found += [f"{path}:{n}" for n, line in enumerate(f, 1) if own.search(line)]
    assert not found, found
