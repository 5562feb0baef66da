"""A small log-log line plot written as SVG by hand (no plotting library).

write_svg(path, series, title, xlabel, ylabel): series = [{"name": str,
"points": [(x, median, lo, hi), ...]}]; each series a coloured line through
its medians, with a marker per point and a bar from lo to hi.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MARKERS = ["circle", "square", "diamond", "triangle", "ring", "down", "circle", "square"]


def _decades(lo: float, hi: float) -> List[int]:
    return list(range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1))


def _label(exp: int, unit_like: bool = False) -> str:
    v = 10.0 ** exp
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    r = 4.0
    if kind == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{colour}"/>'
    if kind == "diamond":
        return (f'<polygon points="{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} '
                f'{x - r - 1:.1f},{y:.1f}" fill="{colour}"/>')
    if kind == "triangle":
        return (f'<polygon points="{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y + r:.1f} {x - r - 1:.1f},{y + r:.1f}" '
                f'fill="{colour}"/>')
    if kind == "down":
        return (f'<polygon points="{x:.1f},{y + r + 1:.1f} {x + r + 1:.1f},{y - r:.1f} {x - r - 1:.1f},{y - r:.1f}" '
                f'fill="{colour}"/>')
    if kind == "ring":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="white" stroke="{colour}" stroke-width="2"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{colour}"/>'


def write_svg(path: str, series: List[Dict[str, Any]], title: str, xlabel: str, ylabel: str) -> None:
    pts = [p for s in series for p in s["points"] if p[1] and p[1] > 0]
    if not pts:
        return
    width, height = 860, 520
    legend_h = 18 * len(series) + 10
    left, right, top, bottom = 80, 30, 50, 60 + legend_h
    pw, ph = width - left - right, height - top - bottom
    xs = [p[0] for p in pts]
    ys = [v for p in pts for v in (p[1], p[2] or p[1], p[3] or p[1]) if v and v > 0]
    xd, yd = _decades(min(xs), max(xs)), _decades(min(ys), max(ys))
    x0, x1 = 10.0 ** xd[0], 10.0 ** xd[-1]
    y0, y1 = 10.0 ** yd[0], 10.0 ** yd[-1]
    if x0 == x1:
        x1 *= 10
    if y0 == y1:
        y1 *= 10

    def X(v: float) -> float:
        return left + (math.log10(v) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) * pw

    def Y(v: float) -> float:
        return top + ph - (math.log10(v) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>']
    # grid and ticks: decades, with minor lines at 2..9
    for e in yd:
        for m in range(1, 10):
            v = m * 10.0 ** e
            if v < y0 or v > y1:
                continue
            y = Y(v)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                       f'stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            if m == 1:
                out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_label(e)}</text>')
    for e in xd:
        for m in range(1, 10):
            v = m * 10.0 ** e
            if v < x0 or v > x1:
                continue
            x = X(v)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" '
                       f'stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            if m == 1:
                out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{_label(e)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{top + ph + 40}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(22,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    for i, s in enumerate(series):
        colour, marker = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
        p = sorted(q for q in s["points"] if q[1] and q[1] > 0)
        if not p:
            continue
        line = " ".join(f"{X(q[0]):.1f},{Y(q[1]):.1f}" for q in p)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for q in p:
            x = X(q[0])
            if q[2] and q[3] and q[3] > q[2]:
                out.append(f'<line x1="{x:.1f}" y1="{Y(q[2]):.1f}" x2="{x:.1f}" y2="{Y(q[3]):.1f}" '
                           f'stroke="{colour}" stroke-width="1.5"/>')
            out.append(f'<g><title>{escape(s["name"])}: {q[0]:,} tasks, {q[1]:.1f} µs/task</title>'
                       f'{_marker(marker, x, Y(q[1]), colour)}</g>')
        ly = top + ph + 58 + 18 * i
        out.append(f'<line x1="{left}" y1="{ly - 4}" x2="{left + 24}" y2="{ly - 4}" stroke="{colour}" '
                   'stroke-width="2"/>')
        out.append(_marker(marker, left + 12, ly - 4, colour))
        out.append(f'<text x="{left + 32}" y="{ly}">{escape(s["name"])}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
