"""What the terminal that runs rank 0 sees: a periodic progress line and a closing summary."""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Dict, List, Optional


def _fmt_secs(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
    def __init__(self, total: int, interval: float = 2.0, stream: Optional[IO[str]] = None) -> None:
        self.total = total
        self.interval = interval
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last = self.start
        self._last_done = 0
        self.enabled = interval > 0

    def maybe_print(self, now: float, done: int, cached: int, running: int, failed: int, retried: int) -> None:
        if not self.enabled or now - self._last < self.interval:
            return
        rate = (done - self._last_done) / max(now - self._last, 1e-9)
        self._last, self._last_done = now, done
        left = self.total - done - cached
        eta = f", ETA {_fmt_secs(left / rate)}" if rate > 0 and left > 0 else ""
        print(
            f"[mpipipe] {done + cached:,}/{self.total:,} tasks done ({cached:,} from journal), {running} running, "
            f"{failed} failed, {retried} retried | {rate:,.0f} tasks/s{eta}",
            file=self.stream, flush=True,
        )

    def summary(self, stats: Dict[str, Any], outputs: List[str]) -> None:
        wall = time.monotonic() - self.start
        ran = stats["ran"]
        rate = ran / wall if wall > 0 else 0.0
        lines = [
            f"[mpipipe] job {stats['job_id']} {stats['status']} in {_fmt_secs(wall)}: "
            f"{ran:,} tasks ran ({rate:,.0f}/s), {stats['cached']:,} reused from the journal, "
            f"{stats['retried']} retried, {stats['failed']} failed; {stats['executors']} executor(s) on {stats['platform']}",
            f"[mpipipe] job directory: {stats['job_dir']}",
        ]
        slow = stats.get("slowest") or []
        if slow:
            lines.append("[mpipipe] slowest tasks: " + ", ".join(f"{n}[{p}] {d:.2f}s" for d, n, p in slow))
        if outputs:
            shown = outputs[:3] + ([f"... ({len(outputs)} in all)"] if len(outputs) > 3 else [])
            lines.append("[mpipipe] outputs: " + " ".join(shown))
        if self.enabled:
            print("\n".join(lines), file=self.stream, flush=True)
