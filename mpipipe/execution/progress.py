"""What the terminal that runs rank 0 sees: live progress per node, and a closing summary.

Three ways to show progress, picked from where mpipipe's messages go (see mpipipe.console):

- a terminal: a block redrawn in place (drawn with rich) that fits the terminal's width and height: a heading
  (tasks done of all, running, failed, retried, rate, elapsed, ETA), one line per unfinished node, the finished
  nodes collapsed into one line, and "N more" when the nodes do not fit;
- a notebook (an IPython kernel): the same block as one display, updated in place;
- anything else (a pipe, a CI log, mpiexec's forwarded output, the application's own logging): one line every
  `interval` seconds, `[mpipipe] D/T tasks done ...`.

Rates are measured over the last WINDOW seconds, so they neither jump between 0 and a burst nor lag far
behind, and the ETA is always shown ("?" until a task has finished).
"""
from __future__ import annotations

import html
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from mpipipe.console import (LiveArea, ensure_terminal, log, mpipipe_command, terminal_handler, terminal_stream)
from mpipipe.fmt import fmt_bytes, fmt_count, fmt_dur, fmt_rate

if TYPE_CHECKING:
    from rich.text import Text

WINDOW = 20.0  # seconds of history behind a rate
LIVE_PERIOD = 0.5  # seconds between two drawings of the live block (at most: the interval if shorter)
NOTEBOOK_WIDTH = 100  # columns of the block in a notebook
NAME_WIDTH = 28  # at most, for a node's name

NodeCounts = Callable[[], Sequence["NodeCount"]]


@dataclass
class NodeCount:
    """One node's line: its counts now."""

    name: str
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total


class RateMeter:
    """Things per second over the last `window` seconds (over all the time there is, until that much has passed)."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.samples: Deque[Tuple[float, int]] = deque()

    def add(self, t: float, n: int) -> None:
        s = self.samples
        if s and t <= s[-1][0]:
            s[-1] = (s[-1][0], n)
            return
        s.append((t, n))
        while len(s) > 2 and s[1][0] <= t - self.window:
            s.popleft()

    def rate(self) -> Optional[float]:
        """None until a second has been seen."""
        if len(self.samples) < 2:
            return None
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 >= 1.0 else None


def eta(left: int, rate: Optional[float], average: Optional[float]) -> Optional[float]:
    """Seconds to go at the recent rate; at the average one while nothing finished lately; None if unknown."""
    if left <= 0:
        return 0.0
    for r in (rate, average):
        if r is not None and r > 0:
            return left / r
    return None


@dataclass
class _Counts:
    ran: int = 0
    cached: int = 0
    running: int = 0
    failed: int = 0
    retried: int = 0


class Progress:
    """Progress of one run. The scheduler calls maybe_print() every turn of its loop, finish() and summary()
    at the end; `stream` (with `tty`) sends everything there instead of through logging."""

    def __init__(self, total: int, interval: float = 2.0, stream: Optional[IO[str]] = None,
                 tty: Optional[bool] = None, mode: Optional[str] = None,
                 display: Optional[Callable[..., Any]] = None) -> None:
        self.total = total
        self.interval = interval
        self.enabled = interval > 0
        self.start = time.monotonic()
        self._last = self.start
        self._out = stream
        if stream is None:
            ensure_terminal()
        self.mode = mode or _pick_mode(stream, tty)
        self.compact = self.mode == "notebook" or (stream is None and _in_notebook())  # a one-line summary
        self.tty = self.mode == "live"
        self._display = display
        self._meter = RateMeter()
        self._meter.add(self.start, 0)
        self._node_meters: Dict[str, RateMeter] = {}
        self._counts = _Counts()
        self._area: Optional[LiveArea] = None
        self._view: Any = None  # the notebook's display handle
        self._head: Optional[str] = None  # a heading given by draw_nodes()

    # --- what the scheduler calls ------------------------------------------------------------------------

    def maybe_print(self, now: float, done: int, cached: int, running: int, failed: int, retried: int,
                    nodes: Optional[NodeCounts] = None) -> None:
        """`done`: tasks run (and finished) in this run; `cached`: tasks reused from the journal."""
        period = min(self.interval, LIVE_PERIOD) if self.mode != "plain" else self.interval
        if not self.enabled or now - self._last < period:
            return
        self._last = now
        self._counts = _Counts(done, cached, running, failed, retried)
        self._meter.add(now, done)
        if self.mode != "plain" and nodes is not None:
            counts = list(nodes())
            self._measure(now, counts)
            self._show(now, counts)
        else:
            self._emit(self.line(now))

    def finish(self, nodes: NodeCounts) -> None:
        """Leave the block at its final counts (finished nodes collapsed into one line)."""
        if not self.enabled or (self._area is None and self._view is None):
            return
        now = time.monotonic()
        counts = list(nodes())
        c = self._counts  # the last turn's; tasks may have finished since
        self._counts = _Counts(max(c.ran, sum(n.done for n in counts) - c.cached), c.cached, 0,
                               max(c.failed, sum(n.failed for n in counts)), c.retried)
        if self.mode == "notebook":
            if self._view is not None:  # the one-line summary that follows says it all
                self._view.update(_Block([]))
            return
        self._show(now, counts, final=True)
        if self._area is not None:
            self._area.close()
            self._area = None

    def summary(self, stats: Dict[str, Any], outputs: List[str]) -> None:
        """The closing lines: printed whatever the progress interval (they are the run's result)."""
        wall = time.monotonic() - self.start
        ran = stats["ran"]
        rate = ran / wall if wall > 0 else 0.0
        cmd = mpipipe_command()
        jd = _quote(str(stats["job_dir"]))
        head = (f"[mpipipe] job {stats['job_id']} {stats['status']} in {fmt_dur(wall)}: "
                f"{fmt_count(ran)} tasks ran ({fmt_rate(rate)}), {fmt_count(stats['cached'])} reused from the "
                f"journal, {stats['retried']} retried, {stats['failed']} failed")
        elsewhere = reused_elsewhere(stats, self.compact)
        if self.compact:
            self._emit(f"{head}; {stats['job_dir']}" + (f" ({elsewhere})" if elsewhere else ""))
            return
        lines = [f"{head}; {stats['executors']} executor(s) on {stats['platform']}"]
        if elsewhere:
            lines.append(f"[mpipipe] {elsewhere}")
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
        lines.append(f"[mpipipe] report: {cmd} report {jd}")
        lines.append(f"[mpipipe] logs: {cmd} logs {jd}")
        for line in lines:
            self._emit(line)

    def draw_nodes(self, head: str, nodes: Sequence[NodeCount], elapsed: float) -> None:
        """Show a heading of the caller's and one line per node (a watcher of a job that runs elsewhere)."""
        now = time.monotonic()
        counts = list(nodes)
        self._measure(now, counts)
        if self.mode == "plain":
            for line in [head] + [self._bar(n, elapsed) for n in counts]:
                self._emit(line)
            return
        self._head = head
        self._show(now, counts)

    # --- the plain line ------------------------------------------------------------------------------------

    def line(self, now: float) -> str:
        """`[mpipipe] D/T tasks done (C from journal), R running, F failed, X retried | rate, ETA, elapsed`."""
        c = self._counts
        rate = self._meter.rate()
        left = self.total - c.ran - c.cached
        return (f"[mpipipe] {fmt_count(c.ran + c.cached)}/{fmt_count(self.total)} tasks done ({fmt_count(c.cached)} "
                f"from journal), {c.running} running, {c.failed} failed, {c.retried} retried | "
                f"{fmt_rate(rate or 0.0, 'tasks')}, ETA {_eta_text(eta(left, rate, self._average(now)))}, "
                f"{fmt_dur(now - self.start)} elapsed")

    def _bar(self, n: NodeCount, elapsed: float, width: int = 24) -> str:
        """One node as a plain line: name, bar, counts, rate and ETA."""
        fill = int(width * n.done / n.total) if n.total else 0
        rate = self._node_rate(n.name)
        left = n.total - n.done - n.failed
        when = eta(left, rate, None)
        tail = f" ETA {fmt_dur(when)}" if when is not None and left > 0 else ""
        fails = f", {n.failed} failed" if n.failed else ""
        return (f"  {n.name[:24]:<24} [{'#' * fill}{'.' * (width - fill)}] {fmt_count(n.done)}/{fmt_count(n.total)} "
                f"done, {n.running} running{fails} | {fmt_rate(rate or 0.0)}{tail}")

    # --- the block -----------------------------------------------------------------------------------------

    def _measure(self, now: float, counts: Sequence[NodeCount]) -> None:
        for n in counts:
            self._node_meters.setdefault(n.name, RateMeter()).add(now, n.done)

    def _node_rate(self, name: str) -> Optional[float]:
        m = self._node_meters.get(name)
        return m.rate() if m is not None else None

    def _average(self, now: float) -> Optional[float]:
        return self._counts.ran / (now - self.start) if now - self.start >= 1.0 else None

    def _show(self, now: float, counts: List[NodeCount], final: bool = False) -> None:
        if self.mode == "notebook":
            self._notebook([t.plain for t in self.block(now, counts, NOTEBOOK_WIDTH, 10_000, final)])
            return
        if self._area is None:
            stream = self._out or terminal_stream()
            if stream is None:
                return
            self._area = LiveArea(stream)
        ascii_only = self._area.ascii_only
        self._area.show(lambda cols, rows: self.block(now, counts, cols, rows, final, ascii_only))

    def block(self, now: float, counts: Sequence[NodeCount], cols: int, rows: int, final: bool = False,
              ascii_only: bool = False) -> List["Text"]:
        """The lines of the block for a terminal of `cols` x `rows` (every line fits; at most `rows` of them)."""
        from rich.text import Text

        g = _ASCII if ascii_only else _GLYPHS
        lines = [self._heading(now, cols, final, g)]
        done = [n for n in counts if n.finished and not n.failed]
        rest = [n for n in counts if not (n.finished and not n.failed)]
        if rows <= 1:
            return lines[:1]
        budget = rows - 1 - (1 if done else 0)
        shown = rest
        if len(rest) > budget:
            keep = max(0, budget - 1)
            order = sorted(range(len(rest)), key=lambda i: (_rank(rest[i]), i))[:keep]
            shown = [rest[i] for i in sorted(order)]
        if done:
            names = ", ".join(n.name for n in done)
            line = Text(f"{g['done']} ", style="green")
            line.append(f"{len(done)} node{'s' if len(done) != 1 else ''} done", style="green")
            line.append(f": {names}", style="dim")
            lines.append(_cut(line, cols))
        if shown:
            lines.extend(self._rows(shown, cols, g))
        if len(shown) < len(rest):
            hidden = [n for n in rest if n not in shown]
            running = sum(1 for n in hidden if n.running)
            failed = sum(1 for n in hidden if n.failed)
            parts = [f"{running} running"] if running else []
            parts += [f"{failed} failed"] if failed else []
            parts += [f"{len(hidden) - running - failed} waiting"] if len(hidden) - running - failed else []
            lines.append(_cut(Text(f"{g['more']} {len(hidden)} more node{'s' if len(hidden) != 1 else ''}: "
                                   + ", ".join(parts), style="dim"), cols))
        return lines[:rows]

    def _heading(self, now: float, cols: int, final: bool, g: Dict[str, str]) -> "Text":
        from rich.text import Text

        c = self._counts
        finished = c.ran + c.cached
        rate = self._meter.rate()
        left = self.total - finished
        elapsed = now - self.start
        if self._head is not None:
            return _cut(Text(self._head, style="bold"), cols)
        parts: List[Tuple[int, Text]] = [
            (0, Text(f"{fmt_count(finished)}/{fmt_count(self.total)} tasks", style="bold"))]
        if c.cached:
            parts.append((6, Text(f"{fmt_count(c.cached)} from journal", style="dim")))
        if c.running and not final:
            parts.append((4, Text(f"{c.running} running", style="cyan")))
        if c.failed:
            parts.append((1, Text(f"{c.failed} failed", style="bold red")))
        if c.retried:
            parts.append((5, Text(f"{c.retried} retried", style="yellow")))
        if final:
            parts.append((1, Text(f"in {fmt_dur(elapsed)}")))
            parts.append((3, Text(fmt_rate(c.ran / elapsed if elapsed > 0 else 0.0, "tasks"), style="dim")))
        else:
            parts.append((3, Text(fmt_rate(rate or 0.0, "tasks") if rate is not None else "?/s", style="dim")))
            parts.append((2, Text(f"{fmt_dur(elapsed)} elapsed")))
            parts.append((1, Text(f"ETA {_eta_text(eta(left, rate, self._average(now)))}", style="bold")))
        lead = Text("mpipipe ", style="bold blue")
        bar_w = min(30, max(0, cols // 5)) if cols >= 60 else 0
        if bar_w:
            lead.append_text(_bar_text(finished, self.total, bar_w, g, "red" if c.failed else "green"))
            lead.append(" ")
        return _fit(lead, parts, cols)

    def _rows(self, shown: Sequence[NodeCount], cols: int, g: Dict[str, str]) -> List["Text"]:
        from rich.text import Text

        name_w = min(NAME_WIDTH, max(len(n.name) for n in shown), max(6, cols // 4))
        counts = [f"{fmt_count(n.done)}/{fmt_count(n.total) if n.total else '?'}" for n in shown]
        count_w = max(len(s) for s in counts)
        fixed = 2 + name_w + 1 + count_w + 1
        bar_w = min(30, cols - fixed - 24)
        out = []
        for n, count in zip(shown, counts):
            if n.failed:
                mark, style = g["failed"], "bold red"
            elif n.finished:
                mark, style = g["done"], "green"
            elif n.running:
                mark, style = g["running"], "cyan"
            else:
                mark, style = g["waiting"], "dim"
            line = Text(f"{mark} ", style=style)
            name = n.name if len(n.name) <= name_w else n.name[:max(1, name_w - 1)] + g["cut"]
            line.append(f"{name:<{name_w}} ", style="bold" if n.running else "")
            if bar_w >= 6:
                line.append_text(_bar_text(n.done, n.total, bar_w, g, "red" if n.failed else "green"))
                line.append(" ")
            line.append(f"{count:>{count_w}}")
            rate = self._node_rate(n.name)
            left = n.total - n.done - n.failed
            parts: List[Tuple[int, Text]] = []
            if n.running:
                parts.append((1, Text(f"{n.running} running", style="cyan")))
            if n.failed:
                parts.append((0, Text(f"{n.failed} failed", style="bold red")))
            if left > 0 and (n.running or n.done):
                parts.append((3, Text(fmt_rate(rate) if rate is not None else "?/s", style="dim")))
                parts.append((2, Text(f"ETA {_eta_text(eta(left, rate, None))}")))
            line.append(" ")
            out.append(_fit(line, parts, cols))
        return out

    # --- where lines go -------------------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        if self._out is not None:
            print(line, file=self._out, flush=True)
        else:
            log.info(line)

    def _notebook(self, lines: List[str]) -> None:
        shown = _Block(lines)
        if self._view is None:
            show = self._display or _ipython_display()
            self._view = show(shown, display_id=True)
        else:
            self._view.update(shown)


# --- helpers ------------------------------------------------------------------------------------------------

_GLYPHS = {"done": "✓", "failed": "✗", "running": "▸", "waiting": "·", "more": "…", "cut": "…",
           "full": "━", "empty": "━"}
_ASCII = {"done": "+", "failed": "x", "running": ">", "waiting": ".", "more": "...", "cut": "~",
          "full": "#", "empty": "-"}


def _rank(n: NodeCount) -> int:
    """Which unfinished nodes keep their line when not all fit: failed, running, started, then waiting."""
    return 0 if n.failed else 1 if n.running else 2 if n.done else 3


def _bar_text(done: int, total: int, width: int, g: Dict[str, str], color: str) -> "Text":
    from rich.text import Text

    fill = min(width, int(width * done / total)) if total > 0 else 0
    bar = Text(g["full"] * fill, style=color)
    bar.append(g["empty"] * (width - fill), style="grey35")
    return bar


def _fit(lead: "Text", parts: Sequence[Tuple[int, "Text"]], cols: int, sep: str = " · ") -> "Text":
    """`lead` and as many of `parts` as fit in `cols` (the least important, highest number, left out first)."""
    from rich.text import Text

    keep = list(parts)
    while True:
        line = lead.copy()
        for k, (_, t) in enumerate(keep):
            if k:
                line.append(sep, style="dim")
            line.append_text(t)
        if line.cell_len <= cols or len(keep) <= 1:
            return _cut(line, cols)  # the most important part stays, cut if it must be
        worst = max(range(len(keep)), key=lambda i: (keep[i][0], i))
        del keep[worst]
    return Text()  # not reached


def _cut(text: "Text", cols: int) -> "Text":
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(cols, overflow="ellipsis")
    return text


def _eta_text(seconds: Optional[float]) -> str:
    return "?" if seconds is None else fmt_dur(seconds)


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _pick_mode(stream: Optional[IO[str]], tty: Optional[bool]) -> str:
    """live (a terminal), notebook (an IPython kernel) or plain, for what this process's messages reach."""
    if stream is None:
        if terminal_handler() is None or not log.isEnabledFor(logging.INFO):
            return "plain"  # the application's logging (or nothing) gets them: lines
        if _in_notebook():
            return "notebook"
        stream = terminal_stream()
        if stream is None:
            return "plain"
    if tty is None:
        try:
            tty = bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
        except (AttributeError, ValueError):
            tty = False
    return "live" if tty else "plain"


def _in_notebook() -> bool:
    from mpipipe.notebook import in_notebook

    return in_notebook()


def reused_elsewhere(stats: Dict[str, Any], notebook: bool = False) -> str:
    """What the summary adds when reused tasks were run by an earlier run on another platform (the job id does
    not name the platform): else `mpiexec` after a local run reads as if MPI did nothing."""
    here = stats.get("platform") or "?"
    other = {p: n for p, n in (stats.get("reused_from") or {}).items() if p and p != here}
    if not other:
        return ""
    n, reused = sum(other.values()), stats.get("cached", 0)
    which = f"the {fmt_count(n)} reused tasks were" if n >= reused else \
        f"{fmt_count(n)} of the {fmt_count(reused)} reused tasks were"
    again = "mpipipe.init(fresh=True)" if notebook else "--fresh (or another --job-id)"
    return (f"{which} run earlier on {' and '.join(sorted(other))}, not on {here}: "
            f"to compute them again on {here}, run with {again}")


def _ipython_display() -> Callable[..., Any]:
    from IPython.display import display

    return display


class _Block:
    """The block as a notebook shows it: preformatted text."""

    def __init__(self, lines: List[str]) -> None:
        self.lines = lines

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    def _repr_html_(self) -> str:
        if not self.lines:
            return ""
        return f"<pre style=\"margin:0;line-height:1.3\">{html.escape(chr(10).join(self.lines))}</pre>"


def read_state(job_dir: str) -> List[NodeCount]:
    """Per-node counts from the state.json rank 0 rewrites while it runs (none if it is not there yet)."""
    try:
        with open(os.path.join(job_dir, "state.json")) as f:
            nodes = json.load(f).get("nodes", {})
        return [NodeCount(name, int(c["total"]), int(c["done"]), int(c["running"]), int(c["failed"]))
                for name, c in nodes.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
