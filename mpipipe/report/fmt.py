"""Helpers of the report's HTML and SVG: escaping, axis ticks, graph layers (durations and sizes: mpipipe.fmt)."""

from __future__ import annotations

import html
import json
import math
from typing import Any, List

# --- formatting ----------------------------------------------------------------------------

def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def fmt_tick(t: float, step: float) -> str:
    """An axis label: like fmt_dur, without the parts that are zero (ticks fall on round times)."""
    if step < 1:
        digits = next((d for d in range(4) if abs(round(step, d) - step) < 1e-9), 3)
        return f"{t:.{digits}f}s"
    t = int(round(t))
    if t < 60:
        return f"{t}s"
    if t < 3600:
        m, s = divmod(t, 60)
        return f"{m}m" if s == 0 else f"{m}m {s:02d}s"
    h, rest = divmod(t, 3600)
    return f"{h}h" if rest == 0 else f"{h}h {rest // 60:02d}m"


def nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-6) / max(1, target)
    for step in (1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600,
                 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if step >= raw:
            return step
    return 86400 * math.ceil(raw / 86400)


def js_json(value: Any) -> str:
    """JSON safe inside a <script> element (no `</script>`, `<!--` or HTML entities can appear)."""
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:max(1, n - 1)] + "…"


def layers(inputs: List[List[int]]) -> List[int]:
    """Columns of the plan graph: longest path from a source, then every node moved as far right as its consumers
    allow (a side branch sits next to where it is used). Cycles, which a plan cannot have, are cut."""
    n = len(inputs)
    layer = [0] * n
    for _ in range(n):
        changed = False
        for i, ins in enumerate(inputs):
            want = 1 + max((layer[x] for x in ins), default=-1)
            if want > layer[i] and want < n:
                layer[i], changed = want, True
        if not changed:
            break
    consumers: List[List[int]] = [[] for _ in range(n)]
    for i, ins in enumerate(inputs):
        for x in ins:
            consumers[x].append(i)
    for _ in range(n):
        changed = False
        for i in range(n):
            if consumers[i]:
                want = min(layer[c] for c in consumers[i]) - 1
                if want > layer[i]:
                    layer[i], changed = want, True
        if not changed:
            break
    return layer


def coord(x: float) -> str:
    """A coordinate with one decimal, without a trailing .0."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s
