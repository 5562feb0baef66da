"""The report's timeline: every task attempt as a bar in its rank's row, over time.

Runs close in time share one stretch of the axis; long pauses between them are cut out. Past MAX_BARS
attempts, each rank's row shows time slices instead of bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from mpipipe.fmt import fmt_dur
from mpipipe.report.assets import PALETTE, SVG_DEFS, node_color
from mpipipe.report.fmt import coord, esc, fmt_tick, nice_step
from mpipipe.report.job import MAX_BARS, MAX_LANES, Job

# geometry (pixels)
LABEL_W, PLOT_W, RIGHT_PAD, AXIS_H, BREAK_PX = 78, 1080, 14, 26, 30


@dataclass
class Cluster:
    """Runs close in time, drawn on one stretch of the time axis; long pauses between clusters are cut out."""

    start: float
    end: float
    x0: float = 0.0
    runs: List[int] = field(default_factory=list)



class Timeline:
    """Draws the timeline section; `data` is the page's JSON for the script (bars, errors, slices)."""

    def __init__(self, job: Job, now: float, data: Dict[str, Any]) -> None:
        self.job = job
        self.now = now
        self.data = data
        self.color = node_color
        self.clusters, self.scale = self._clusters()

    def rel(self, t: float) -> float:
        """Seconds since the first start."""
        return t - self.clusters[0].start if self.clusters else 0.0

    def _clusters(self) -> Tuple[List[Cluster], float]:
        j = self.job
        spans = []
        for r in j.runs:
            start, end = r.span()
            if r is j.runs[-1] and j.status == "running":
                end = max(end, self.now)
            if start > 0:
                spans.append((start, end, r.index))
        if not spans:
            return [], 1.0
        spans.sort()
        merged: List[Cluster] = []
        for start, end, idx in spans:  # overlapping runs first
            if merged and start <= merged[-1].end:
                merged[-1].end = max(merged[-1].end, end)
                merged[-1].runs.append(idx)
            else:
                merged.append(Cluster(start, end, runs=[idx]))
        active = sum(c.end - c.start for c in merged)
        threshold = max(10.0, 0.05 * active)
        clusters: List[Cluster] = [merged[0]]
        for c in merged[1:]:  # short pauses (between the actions of one script, say) are drawn as they are
            if c.start - clusters[-1].end <= threshold:
                clusters[-1].end = max(clusters[-1].end, c.end)
                clusters[-1].runs.extend(c.runs)
            else:
                clusters.append(c)
        while len(clusters) > 12:  # too many pauses: keep the longest ones cut out
            gaps = [(clusters[k + 1].start - clusters[k].end, k) for k in range(len(clusters) - 1)]
            _, k = min(gaps)
            clusters[k].end = max(clusters[k].end, clusters[k + 1].end)
            clusters[k].runs.extend(clusters[k + 1].runs)
            del clusters[k + 1]
        length = sum(c.end - c.start for c in clusters)
        usable = PLOT_W - BREAK_PX * (len(clusters) - 1)
        scale = usable / length if length > 0 else 1.0
        x = 0.0
        for c in clusters:
            c.x0 = x
            x += (c.end - c.start) * scale + BREAK_PX
        return clusters, scale

    def render(self) -> str:
        j = self.job
        n = len(j.a_node)
        info_hosts = j.job.get("hosts") or {}
        # rank 0 schedules: its row shows each run (and the tasks it handed to a launcher outside the world)
        ranks = sorted({int(r) for r in info_hosts if str(r).lstrip("-").isdigit()} |
                       {r for r in set(j.a_rank) if r >= 0} | ({0} if self.clusters else set()))
        if not ranks:
            return "<p class=\"dim\">No task attempt is in the journal yet.</p>"
        run_cluster: Dict[int, Cluster] = {r: c for c in self.clusters for r in c.runs}
        scale = self.scale

        def xpos(i: int, t: float) -> float:
            c = run_cluster.get(j.a_run[i]) or (self.clusters[0] if self.clusters else Cluster(t, t))
            return c.x0 + (min(max(t, c.start), c.end) - c.start) * scale

        drawable = [i for i in range(n) if j.a_t0[i] > 0]
        aggregate = len(drawable) > MAX_BARS
        by_rank: Dict[int, List[int]] = {r: [] for r in ranks}
        for i in drawable:
            by_rank.setdefault(j.a_rank[i], []).append(i)
        ranks = sorted(by_rank)
        lanes_of: Dict[int, int] = {}
        lane: Dict[int, int] = {}
        if not aggregate:
            for r, idx in by_rank.items():
                idx.sort(key=lambda i: j.a_t0[i])
                ends: List[float] = []
                for i in idx:
                    t0, t1 = j.a_t0[i], j.a_t1[i]
                    for k, e in enumerate(ends):
                        if e <= t0 + 1e-4:
                            ends[k] = t1
                            lane[i] = k
                            break
                    else:
                        if len(ends) < MAX_LANES:
                            ends.append(t1)
                            lane[i] = len(ends) - 1
                        else:
                            k = min(range(len(ends)), key=ends.__getitem__)
                            ends[k] = max(ends[k], t1)
                            lane[i] = k
                lanes_of[r] = max(1, len(ends))
        else:
            lanes_of = {r: 1 for r in ranks}
        total_lanes = sum(lanes_of.values())
        lane_h = 24 if total_lanes <= 12 else (18 if total_lanes <= 40 else max(3, min(18, int(760 / total_lanes))))
        row_pad = 3 if lane_h >= 10 else (1 if lane_h >= 5 else 0)
        bar_h = lane_h - 2 if lane_h >= 8 else max(1, lane_h - 1)
        label_every = 1 if lane_h * 1 + 2 * row_pad >= 11 else math.ceil(11 / (lane_h + 2 * row_pad))
        hosts_known = len({str(h.get("host")) for h in info_hosts.values() if isinstance(h, dict)}) > 1
        svg_w = LABEL_W + PLOT_W + RIGHT_PAD
        rows: List[str] = []
        bars_json: List[List[Any]] = self.data["bars"]
        err_index: Dict[str, int] = {}
        y = AXIS_H
        failed_total = 0
        backgrounds: List[str] = []
        for ri, r in enumerate(ranks):
            rh = lanes_of[r] * lane_h + 2 * row_pad
            host = info_hosts.get(str(r)) if isinstance(info_hosts.get(str(r)), dict) else None
            label = f"rank {r}"
            tip = label + (f" on {host.get('host')}, {host.get('cores', '?')} cores" if host else "")
            if r == 0:
                where = j.job.get("host")
                tip = (f"rank 0{f' on {where}' if where else ''}: the scheduler; a grey bar per run, from its start "
                       "to its end (tasks handed to a launcher outside the world show here too)")
            if lanes_of[r] > 1:
                tip += f", up to {lanes_of[r]} attempts at once"
            backgrounds.append(f"<rect class=\"rowbg{' odd' if ri % 2 else ''}\" x=\"{LABEL_W}\" y=\"{y}\" "
                               f"width=\"{PLOT_W}\" height=\"{rh}\"/>")
            g = [f"<g class=\"row\" data-rank=\"{r}\" data-lanes=\"{lanes_of[r]}\" transform=\"translate(0,{y})\">"]
            if ri % label_every == 0:
                short = label if not hosts_known or not host or lane_h < 14 else f"{r} · {host.get('host')}"
                if len(short) > 13:
                    short = short[:12] + "…"
                g.append(f"<text class=\"rl\" x=\"{LABEL_W - 8}\" y=\"{coord(rh / 2 + 4)}\"><title>{esc(tip)}</title>"
                         f"{esc(short)}</text>")
            g.append(f"<g transform=\"translate({LABEL_W},{row_pad})\">")
            idx = by_rank[r]
            fails = [i for i in idx if j.a_fail[i]]
            failed_total += len(fails)
            if aggregate:
                g.append(self._aggregate_row(r, idx, xpos, bar_h))
                g.append(self._aggregate_failures(r, fails, xpos, bar_h, row_pad, err_index))
            else:
                for i in idx:
                    if j.a_fail[i]:
                        continue
                    x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
                    k = len(bars_json)
                    bars_json.append(self._bar_json(i, -1))
                    g.append(f"<rect class=\"bar c{j.a_node[i] % len(PALETTE)}\" data-n=\"{j.a_node[i]}\" "
                             f"data-i=\"{k}\" x=\"{coord(x0)}\" y=\"{lane[i] * lane_h}\" "
                             f"width=\"{coord(max(1.0, x1 - x0))}\" height=\"{bar_h}\"/>")
                for i in fails:  # on top, a little taller, and wide enough that a crash in 1 ms shows
                    x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
                    w = max(4.0, x1 - x0)
                    x0 = min(x0, PLOT_W - w)
                    err = j.errors.get(i, "")
                    k = len(bars_json)
                    bars_json.append(self._bar_json(i, self._error_index(err, err_index)))
                    out = min(2, row_pad)
                    title = (f"{j.names[j.a_node[i]]}[{j.a_part[i]}] attempt {j.a_att[i]} failed after "
                             f"{fmt_dur(j.a_t1[i] - j.a_t0[i])} on rank {r}: {err[:300]}")
                    g.append(f"<rect class=\"bar fail\" data-failed=\"1\" data-n=\"{j.a_node[i]}\" data-i=\"{k}\" "
                             f"x=\"{coord(x0)}\" y=\"{lane[i] * lane_h - out}\" width=\"{coord(w)}\" "
                             f"height=\"{bar_h + 2 * out}\"><title>{esc(title)}</title></rect>")
            if r == 0:
                g.append(self._run_bars(lanes_of[r] * lane_h, bool(idx)))
            g.append("</g></g>")
            rows.append("".join(g))
            y += rh + (1 if lane_h < 8 else 2)
        height = y + AXIS_H
        under, over = self._axis(height)
        parts = [f"<div class=\"legend\">{self._legend()}</div>",
                 f"<div class=\"scroll\"><svg class=\"tl\" id=\"timeline-svg\" width=\"{svg_w}\" height=\"{height}\" "
                 f"viewBox=\"0 0 {svg_w} {height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" "
                 f"aria-label=\"timeline of task attempts per rank\" data-ranks=\"{len(ranks)}\" "
                 f"data-aggregated=\"{1 if aggregate else 0}\">{SVG_DEFS}{''.join(backgrounds)}{under}{''.join(rows)}"
                 f"{over}</svg></div>"]
        notes = []
        if aggregate:
            notes.append(f"{len(drawable):,} attempts are more than the {MAX_BARS:,} drawn one by one: each rank's "
                         "row shows time slices instead, coloured by the node that kept the rank busiest in the "
                         "slice and shaded by how busy the rank was.")
            if failed_total:
                notes.append(f"The {failed_total:,} failed attempts are marked by slice too: a red mark on top of a "
                             "row's slice says how many failed there.")
        if any(c.runs for c in self.clusters[1:]):
            notes.append("Hatched gaps cut out pauses between runs; the axis shows the time since the first start.")
        if n > len(drawable):
            notes.append(f"{n - len(drawable):,} attempt(s) without start times are not drawn.")
        notes.append("Hover a bar for its task, attempt, rank, duration and error; hover a node in the legend to "
                     "highlight its attempts.")
        return "".join(parts) + "".join(f"<p class=\"note\">{esc(t)}</p>" for t in notes)

    def _run_bars(self, row_h: int, below: bool) -> str:
        """Rank 0's runs: one bar each, from the run's start to its end (or now, while it runs); at the bottom of the
        row when tasks rank 0 handed over are drawn there too."""
        j = self.job
        by_run = {r: c for c in self.clusters for r in c.runs}
        h = max(3, min(8, row_h // 3))
        y = row_h - h if below else (row_h - h) / 2
        runs_json: List[List[Any]] = self.data.setdefault("runs", [])
        out = []
        for run in j.runs:
            c = by_run.get(run.index)
            if c is None:
                continue
            start, end = run.span()
            if run is j.runs[-1] and j.status == "running":
                end = max(end, self.now)
            x0 = c.x0 + (min(max(start, c.start), c.end) - c.start) * self.scale
            x1 = c.x0 + (min(max(end, c.start), c.end) - c.start) * self.scale
            k = len(runs_json)
            runs_json.append([run.index + 1, round(self.rel(start), 3), round(end - start, 3),
                              run.status or ("running" if j.status == "running" else "no end record"), run.ran,
                              run.failed])
            out.append(f"<rect class=\"runbar\" data-r=\"{k}\" x=\"{coord(x0)}\" y=\"{coord(y)}\" "
                       f"width=\"{coord(max(2.0, x1 - x0))}\" height=\"{h}\" rx=\"1\"/>")
        return "".join(out)

    def _bar_json(self, i: int, err: int) -> List[Any]:
        j = self.job
        return [j.a_node[i], j.a_part[i], j.a_att[i], j.a_rank[i], round(self.rel(j.a_t0[i]), 4),
                float(f"{j.a_t1[i] - j.a_t0[i]:.4g}"), err]

    def _time_at(self, x: float) -> float:
        """Seconds since the first start at plot position x."""
        c = next((c for c in reversed(self.clusters) if c.x0 <= x), None)
        if c is None:
            return 0.0
        return self.rel(min(c.end, c.start + (x - c.x0) / self.scale))

    def _nslices(self) -> int:
        return max(20, min(PLOT_W // 2, MAX_BARS // max(1, len(self._rank_count()))))

    def _error_index(self, err: str, index: Dict[str, int]) -> int:
        if err not in index:
            index[err] = len(self.data["errors"])
            self.data["errors"].append(err[:600])
        return index[err]

    def _aggregate_row(self, rank: int, idx: Sequence[int], xpos: Any, bar_h: int) -> str:
        """One rect per time slice of a rank: the busiest node's colour, shaded by how busy the rank was."""
        j = self.job
        nslices = self._nslices()
        width = PLOT_W / nslices
        busy: Dict[int, Dict[int, float]] = {}
        count: Dict[int, int] = {}
        for i in idx:
            if j.a_fail[i]:
                continue
            x0, x1 = xpos(i, j.a_t0[i]), xpos(i, j.a_t1[i])
            s0 = min(nslices - 1, int(x0 / width))
            s1 = min(nslices - 1, int(x1 / width))
            count[s0] = count.get(s0, 0) + 1
            ni = j.a_node[i]
            for s in range(s0, s1 + 1):
                lo, hi = max(x0, s * width), min(x1, (s + 1) * width)
                slot = busy.setdefault(s, {})
                slot[ni] = slot.get(ni, 0.0) + max(hi - lo, 0.02)
        if not busy:
            return ""
        peak = max(sum(v.values()) for v in busy.values())
        full = max(width, peak)  # a rank with several workers: its busiest slice counts as fully busy
        out = []
        agg = self.data["agg"]
        for s in sorted(busy):
            slot = busy[s]
            ni = max(slot, key=slot.__getitem__)
            level = min(1.0, sum(slot.values()) / full)
            k = len(agg)
            agg.append([rank, round(self._time_at(s * width), 3), count.get(s, 0), round(level, 2), ni])
            out.append(f"<rect class=\"bar agg c{ni % len(PALETTE)}\" data-n=\"{ni}\" data-a=\"{k}\" "
                       f"x=\"{coord(s * width)}\" y=\"0\" width=\"{coord(width + 0.3)}\" height=\"{bar_h}\" "
                       f"fill-opacity=\"{0.25 + 0.75 * level:.2f}\"/>")
        return "".join(out)

    def _aggregate_failures(self, rank: int, fails: Sequence[int], xpos: Any, bar_h: int, pad: int,
                            err_index: Dict[str, int]) -> str:
        """A red mark on the top part of each slice of the rank where attempts failed, with how many."""
        j = self.job
        nslices = self._nslices()
        width = PLOT_W / nslices
        per: Dict[int, List[int]] = {}
        for i in fails:
            s = min(nslices - 1, int(xpos(i, j.a_t0[i]) / width))
            per.setdefault(s, []).append(i)
        out = []
        aggf = self.data["aggf"]
        mark_h = max(3, int(bar_h * 0.45)) + min(2, pad)
        for s in sorted(per):
            first = per[s][0]
            err = self._error_index(j.errors.get(first, ""), err_index)
            k = len(aggf)
            aggf.append([rank, len(per[s]), j.a_node[first], j.a_part[first], j.a_att[first], err])
            out.append(f"<rect class=\"bar fail agg\" data-failed=\"{len(per[s])}\" data-n=\"{j.a_node[first]}\" "
                       f"data-f=\"{k}\" x=\"{coord(s * width)}\" y=\"{-min(2, pad)}\" "
                       f"width=\"{coord(max(2.0, width))}\" "
                       f"height=\"{mark_h}\"/>")
        return "".join(out)

    def _rank_count(self) -> Dict[int, int]:
        if not hasattr(self, "_ranks_cache"):
            counts: Dict[int, int] = {}
            for r in self.job.a_rank:
                counts[r] = counts.get(r, 0) + 1
            self._ranks_cache = counts
        return self._ranks_cache

    def _axis(self, height: int) -> Tuple[str, str]:
        """(grid lines and ticks, drawn under the bars; pauses cut out and run starts, drawn over them)."""
        if not self.clusters:
            return "", ""
        length = sum(c.end - c.start for c in self.clusters)
        step = nice_step(length, PLOT_W // 95)
        t_first = self.clusters[0].start
        out: List[str] = []
        over: List[str] = []
        last_x = -1e9
        for ci, c in enumerate(self.clusters):
            if ci:  # the cut-out pause before this cluster
                prev = self.clusters[ci - 1]
                gx = LABEL_W + prev.x0 + (prev.end - prev.start) * self.scale
                pause = fmt_dur(c.start - prev.end)
                over.append(f"<g class=\"gap\"><title>no run for {esc(pause)} (cut out)</title>"
                            f"<rect x=\"{coord(gx + 3)}\" y=\"{AXIS_H - 2}\" width=\"{BREAK_PX - 6}\" "
                            f"height=\"{height - 2 * AXIS_H + 4}\"/><text class=\"gapl\" x=\"{coord(gx + 3)}\" "
                            f"y=\"{AXIS_H - 8}\">run {min(c.runs) + 1}, {esc(pause)} later</text></g>")
            k = math.ceil((c.start - t_first) / step - 1e-9)
            while True:
                t = k * step
                if t_first + t > c.end + 1e-9:
                    break
                x = LABEL_W + c.x0 + (t_first + t - c.start) * self.scale
                if x - last_x >= 56:
                    out.append(f"<line class=\"grid\" x1=\"{coord(x)}\" x2=\"{coord(x)}\" y1=\"{AXIS_H}\" "
                               f"y2=\"{height - AXIS_H + 4}\"/><text class=\"tick\" x=\"{coord(x)}\" "
                               f"y=\"{height - AXIS_H + 17}\">{esc(fmt_tick(t, step))}</text>")
                    last_x = x
                k += 1
        # the start of each run after the first, when runs sit in one stretch
        j = self.job
        for r in j.runs[1:]:
            if r.time is None:
                continue
            home = next((c for c in self.clusters if r.index in c.runs), None)
            if home is None or r.time <= home.start + 1e-6:
                continue
            x = LABEL_W + home.x0 + (r.time - home.start) * self.scale
            over.append(f"<line class=\"runline\" x1=\"{coord(x)}\" x2=\"{coord(x)}\" y1=\"{AXIS_H - 6}\" "
                        f"y2=\"{height - AXIS_H}\"/><text class=\"runl\" x=\"{coord(x + 3)}\" y=\"{AXIS_H - 8}\">run "
                        f"{r.index + 1}</text>")
        out.append(f"<text class=\"axis-title\" x=\"{LABEL_W - 20}\" y=\"{height - AXIS_H + 17}\">elapsed</text>")
        return "".join(out), "".join(over)

    def _legend(self) -> str:
        j = self.job
        used = sorted(set(j.a_node)) if len(j.a_node) else list(range(len(j.nodes)))
        items = [f"<span class=\"key\" data-n=\"{ni}\"><i style=\"background:{self.color(ni)}\"></i>"
                 f"{esc(j.names[ni])}</span>" for ni in used[:40]]
        if len(used) > 40:
            items.append(f"<span class=\"dim\">and {len(used) - 40} more</span>")
        items.append("<span class=\"key failkey\"><i class=\"hatch\"></i>failed attempt</span>")
        return "".join(items)
