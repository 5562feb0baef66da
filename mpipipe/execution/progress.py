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

from mpipipe.fmt import fmt_bytes, fmt_count, fmt_dur, fmt_rate


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
        eta = f", ETA {fmt_dur(left / rate)}" if rate > 0 and left > 0 else ""
        head = (f"[mpipipe] {fmt_count(done + cached)}/{fmt_count(self.total)} tasks done ({fmt_count(cached)} from "
                f"journal), {running} running, {failed} failed, {retried} retried | {fmt_rate(rate, 'tasks')}{eta}")
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
        eta = f" ETA {fmt_dur(left / rate)}" if rate > 0 and left > 0 else ""
        fails = f", {n.failed} failed" if n.failed else ""
        return (f"  {n.name[:24]:<24} [{bar}] {fmt_count(n.done)}/{fmt_count(n.total)} done, {n.running} running"
                f"{fails} | {fmt_rate(rate)}{eta}")

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
            self._draw([f"[mpipipe] {fmt_count(done)}/{fmt_count(self.total)} tasks done"]
                       + [self._bar(n, elapsed) for n in counts])

    def summary(self, stats: Dict[str, Any], outputs: List[str]) -> None:
        wall = time.monotonic() - self.start
        ran = stats["ran"]
        rate = ran / wall if wall > 0 else 0.0
        lines = [
            f"[mpipipe] job {stats['job_id']} {stats['status']} in {fmt_dur(wall)}: "
            f"{fmt_count(ran)} tasks ran ({fmt_rate(rate)}), {fmt_count(stats['cached'])} reused from the journal, "
            f"{stats['retried']} retried, {stats['failed']} failed; {stats['executors']} executor(s) on {stats['platform']}",
        ]
        if stats.get("bytes_read") or stats.get("bytes_written"):
            lines.append(f"[mpipipe] data: {fmt_bytes(stats.get('bytes_read', 0))} read, "
                         f"{fmt_bytes(stats.get('bytes_written', 0))} written, "
                         f"{fmt_count(stats.get('rows_written', 0))} rows written")
        if stats.get("speculated"):
            lines.append(f"[mpipipe] speculation: {stats['speculated']} copy(ies) of straggling tasks started, "
                         f"{stats.get('speculation_won', 0)} finished first")
        lines.append(f"[mpipipe] job directory: {stats['job_dir']}")
        slow = stats.get("slowest") or []
        if slow:
            lines.append("[mpipipe] slowest tasks: " + ", ".join(f"{n}[{p}] {fmt_dur(d)}" for d, n, p in slow))
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
