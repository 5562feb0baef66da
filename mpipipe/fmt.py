"""How mpipipe writes numbers for people: durations, sizes, counts and rates, one format each.

The progress lines, the closing summary, the SLURM watcher, `mpipipe` and the
HTML report all use these, so a duration or a size reads the same wherever it
is shown.
"""
from __future__ import annotations

import math


def fmt_dur(seconds: float) -> str:
    """A duration, to about three significant digits: 850µs, 2.5ms, 250ms, 2.35s, 12.3s, 2m 05s, 1h 02m;
    "?" for a negative or unknown one."""
    s = seconds
    if not math.isfinite(s) or s < 0:
        return "?"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 0.01:
        return f"{s * 1e3:.1f}ms"
    if s < 1:
        return f"{s * 1e3:.0f}ms"
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m}m {sec:02d}s"
    h, rest = divmod(int(round(s)), 3600)
    return f"{h}h {rest // 60:02d}m"


def fmt_bytes(n: float) -> str:
    """A size in binary units: 512 B, 1.5 KiB, 3.2 GiB (TiB at most)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_count(n: int) -> str:
    """A count with thousands separators: 1,234,567."""
    return f"{n:,}"


def fmt_rate(per_second: float, unit: str = "") -> str:
    """A rate: whole numbers from 100 on, one decimal from 10, two below (a slow SLURM job's 0.25 tasks/s
    shows as such, not as 0); `unit` goes before "/s" ("1,234 tasks/s", or "1,234/s" without one)."""
    r = per_second
    if not math.isfinite(r):
        text = "?"
    elif abs(r) >= 100:
        text = f"{r:,.0f}"
    elif abs(r) >= 10:
        text = f"{r:.1f}"
    else:
        text = f"{r:.2f}"
    return f"{text} {unit}/s" if unit else f"{text}/s"
