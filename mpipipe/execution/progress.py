"""What the terminal that runs rank 0 sees: live progress per node, and a closing summary.

On a terminal, one bar per node is redrawn in place (done/running/failed of
total, tasks per second, ETA). Anywhere else (a pipe, a log file, mpiexec's
forwarded output) a one-line summary is printed every `interval` seconds.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, Optional, Sequence


def _fmt_secs(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class NodeCount:
    """One node's line: its counts now."""

    name: str
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0


class Progress:
    def __init__(self, total: int, interval: float = 2.0, stream: Optional[IO[str]] = None,
                 tty: Optional[bool] = None) -> None:
        self.total = total
        self.interval = interval
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last = self.start
        self._last_done = 0
        self._node_last: Dict[str, int] = {}
        self.enabled = interval > 0
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
        self.tty = tty
        self._drawn = 0  # lines of the last drawing, to redraw them in place

    def maybe_print(self, now: float, done: int, cached: int, running: int, failed: int, retried: int,
                    nodes: Optional[Callable[[], Sequence[NodeCount]]] = None) -> None:
        # on a terminal the bars move faster than the one-line summary would
        period = min(self.interval, 0.5) if self.tty else self.interval
        if not self.enabled or now - self._last < period:
            return
        elapsed = max(now - self._last, 1e-9)
        rate = (done - self._last_done) / elapsed
        self._last, self._last_done = now, done
        left = self.total - done - cached
        eta = f", ETA {_fmt_secs(left / rate)}" if rate > 0 and left > 0 else ""
        head = (f"[mpipipe] {done + cached:,}/{self.total:,} tasks done ({cached:,} from journal), {running} running, "
                f"{failed} failed, {retried} retried | {rate:,.0f} tasks/s{eta}")
        if self.tty and nodes is not None:
            self._draw([head] + [self._bar(n, elapsed) for n in nodes()])
        else:
            print(head, file=self.stream, flush=True)

    def draw_nodes(self, head: str, nodes: Sequence[NodeCount], elapsed: float) -> None:
        """Redraw a heading and one bar per node in place (terminals only)."""
        self._draw([head] + [self._bar(n, elapsed) for n in nodes])

    def _bar(self, n: NodeCount, elapsed: float, width: int = 24) -> str:
        before = self._node_last.get(n.name, n.done)
        self._node_last[n.name] = n.done
        rate = (n.done - before) / elapsed
        fill = int(width * n.done / n.total) if n.total else width
        bar = "#" * fill + "." * (width - fill)
        left = n.total - n.done - n.failed
        eta = f" ETA {_fmt_secs(left / rate)}" if rate > 0 and left > 0 else ""
        fails = f", {n.failed} failed" if n.failed else ""
        return (f"  {n.name[:24]:<24} [{bar}] {n.done:,}/{n.total:,} done, {n.running} running{fails}"
                f" | {rate:,.0f}/s{eta}")

    def _draw(self, lines: List[str]) -> None:
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first line of the last drawing
        out.extend("\x1b[2K" + line + "\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def finish(self, nodes: Callable[[], Sequence[NodeCount]]) -> None:
        """Leave the bars at their final counts on a terminal."""
        if self.enabled and self.tty and self._drawn:
            elapsed = max(time.monotonic() - self._last, 1e-9)
            counts = list(nodes())
            done = sum(n.done for n in counts)
            self._draw([f"[mpipipe] {done:,}/{self.total:,} tasks done"] + [self._bar(n, elapsed) for n in counts])

    def summary(self, stats: Dict[str, Any], outputs: List[str]) -> None:
        wall = time.monotonic() - self.start
        ran = stats["ran"]
        rate = ran / wall if wall > 0 else 0.0
        lines = [
            f"[mpipipe] job {stats['job_id']} {stats['status']} in {_fmt_secs(wall)}: "
            f"{ran:,} tasks ran ({rate:,.0f}/s), {stats['cached']:,} reused from the journal, "
            f"{stats['retried']} retried, {stats['failed']} failed; {stats['executors']} executor(s) on {stats['platform']}",
        ]
        if stats.get("bytes_read") or stats.get("bytes_written"):
            lines.append(f"[mpipipe] data: {_fmt_bytes(stats.get('bytes_read', 0))} read, "
                         f"{_fmt_bytes(stats.get('bytes_written', 0))} written, {stats.get('rows_written', 0):,} rows written")
        if stats.get("speculated"):
            lines.append(f"[mpipipe] speculation: {stats['speculated']} copy(ies) of straggling tasks started, "
                         f"{stats.get('speculation_won', 0)} finished first")
        lines.append(f"[mpipipe] job directory: {stats['job_dir']}")
        slow = stats.get("slowest") or []
        if slow:
            lines.append("[mpipipe] slowest tasks: " + ", ".join(f"{n}[{p}] {d:.2f}s" for d, n, p in slow))
        if outputs:
            shown = outputs[:3] + ([f"... ({len(outputs)} in all)"] if len(outputs) > 3 else [])
            lines.append("[mpipipe] outputs: " + " ".join(shown))
        lines.append(f"[mpipipe] report: mpipipe report {stats['job_dir']}   logs: mpipipe logs {stats['job_dir']}")
        if self.enabled:
            print("\n".join(lines), file=self.stream, flush=True)


def read_state(job_dir: str) -> List[NodeCount]:
    """Per-node counts from the state.json rank 0 rewrites while it runs (none if it is not there yet)."""
    import json

    try:
        with open(os.path.join(job_dir, "state.json")) as f:
            nodes = json.load(f).get("nodes", {})
        return [NodeCount(name, int(c["total"]), int(c["done"]), int(c["running"]), int(c["failed"]))
                for name, c in nodes.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
