"""The report's HTML page: summary, plan graph, timeline, durations, slowest attempts, failures."""

from __future__ import annotations

import bisect
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import mpipipe
from mpipipe.report.assets import CSS, JS, PALETTE, SVG_DEFS
from mpipipe.report.fmt import clip, coord, esc, fmt_bytes, fmt_dur, fmt_tick, js_json, layers, nice_step
from mpipipe.report.job import MAX_BARS, MAX_FAILURE_ROWS, MAX_HISTOGRAMS, MAX_LANES, Job, disk_usage, num

# timeline geometry (pixels)
LABEL_W, PLOT_W, RIGHT_PAD, AXIS_H, BREAK_PX = 78, 1080, 14, 26, 30


def write_report(job_dir: str, out_path: Optional[str] = None) -> str:
    """Write the HTML report of the job in `job_dir` to `out_path` (default `<job_dir>/report.html`).

    Returns the path written. Raises JournalError when `job_dir` has no readable job.json.
    """
    out = os.path.abspath(out_path or os.path.join(job_dir, "report.html"))
    job = Job.load(job_dir)
    page = _Page(job, os.path.dirname(out)).render()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


# --- the page ------------------------------------------------------------------------------

@dataclass
class _Cluster:
    """Runs close in time, drawn on one stretch of the time axis; long pauses between clusters are cut out."""

    start: float
    end: float
    x0: float = 0.0
    runs: List[int] = field(default_factory=list)


class _Page:
    def __init__(self, job: Job, out_dir: str) -> None:
        self.job = job
        self.out_dir = out_dir
        self.now = time.time()
        self.data: Dict[str, Any] = {"nodes": job.names, "bars": [], "errors": [], "agg": [], "aggf": []}

    def color(self, ni: int) -> str:
        return PALETTE[ni % len(PALETTE)]

    def render(self) -> str:
        j = self.job
        title = f"mpipipe report: {j.job.get('job_id', os.path.basename(j.job_dir))}"
        self.clusters, self.scale = self._clusters()
        parts = [
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            # first script of the page: records any error of what follows (tests read the attribute)
            "<script>window.__reportErrors=[];window.addEventListener('error',function(e){"
            "window.__reportErrors.push(String(e.message||e));"
            "document.documentElement.setAttribute('data-errors',window.__reportErrors.join(' | '));});</script>",
            f"<title>{esc(title)}</title>", f"<style>{CSS}</style></head><body>",
            self._header(),
            self._section("plan", "Plan", self._plan()),
            self._section("timeline", "Timeline", self._timeline()),
            self._section("durations", "Task durations", self._durations()),
            self._section("slowest", "Slowest attempts", self._slowest()),
            self._section("failures", "Failures", self._failures()),
            f"<footer>Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.now)))} by mpipipe "
            f"{esc(mpipipe.__version__)} from {esc(j.job_dir)}</footer>",
            "<div id=\"tip\" role=\"tooltip\"></div>",
            f"<script type=\"application/json\" id=\"report-data\">{js_json(self.data)}</script>",
            f"<script>{JS}</script></body></html>\n",
        ]
        return "".join(parts)

    @staticmethod
    def _section(ident: str, title: str, body: str) -> str:
        return f"<section id=\"{ident}\"><h2>{esc(title)}</h2>{body}</section>"

    def _rel(self, t: float) -> float:
        return t - self.clusters[0].start if self.clusters else 0.0

    def _logref(self, log: Any) -> str:
        """A log reference as a link relative to the report (the byte range of a shared worker log in words)."""
        if not log:
            return "<span class=\"dim\">none</span>"
        if isinstance(log, (list, tuple)):
            path, start, end = (list(log) + [None, None, None])[:3]
        else:
            path, start, end = log, None, None
        path = str(path)
        shown = path
        try:
            if os.path.isabs(path) and os.path.commonpath([path, self.job.job_dir]) == self.job.job_dir:
                shown = os.path.relpath(path, self.job.job_dir)
        except ValueError:
            pass
        rng = ""
        if isinstance(start, int) and isinstance(end, int) and (start or end) and end >= start:
            rng = f" <span class=\"dim\">bytes {start:,}–{end:,}</span>"
        href = None
        try:
            href = os.path.relpath(path, self.out_dir).replace(os.sep, "/") if os.path.isabs(path) else None
        except ValueError:
            href = None
        if href:
            return f"<a class=\"mono\" href=\"{esc(quote(href))}\">{esc(shown)}</a>{rng}"
        return f"<span class=\"mono\">{esc(shown)}</span>{rng}"

    # header ------------------------------------------------------------------------------
    def _header(self) -> str:
        j, info = self.job, self.job.job
        status = j.status
        pills = {"succeeded": "ok", "failed": "bad", "interrupted": "warn", "running": "run", "killed": "bad"}
        cls = pills.get(status, "idle")
        hosts = info.get("hosts") or {}
        host_names = sorted({str(h.get("host")) for h in hosts.values() if isinstance(h, dict) and h.get("host")})
        wall = sum(c.end - c.start for c in self.clusters)
        started = j.runs[0].time if j.runs and j.runs[0].time else num(info.get("started"))
        meta = [f"platform <b>{esc(info.get('platform', '?'))}</b>",
                f"<b>{esc(info.get('executors', '?'))}</b> executor rank(s)"]
        if host_names:
            shown = ", ".join(host_names[:4]) + (f" and {len(host_names) - 4} more" if len(host_names) > 4 else "")
            meta.append(f"on {len(host_names)} host(s): {esc(shown)}")
        if started:
            meta.append("started " + esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))))
        invocations = sum(1 for k, r in enumerate(j.runs) if k == 0 or r.pid != j.runs[k - 1].pid)
        meta.append(f"{len(j.runs)} run(s)" + (f" in {invocations} invocations" if invocations > 1 else ""))
        meta.append(f"mpipipe {esc(info.get('mpipipe', '?'))}")
        argv = info.get("argv") or []
        cmd = " ".join(str(a) for a in argv)
        if len(cmd) > 400:
            cmd = cmd[:400] + " …"
        nbytes, nfiles, complete = disk_usage(os.path.join(j.job_dir, "outputs"))
        size = fmt_bytes(nbytes) if complete else f"≥ {fmt_bytes(nbytes)}"
        nodes_line = f"{len(j.nodes):,} node{'s' if len(j.nodes) != 1 else ''}"
        tiles = [
            ("Wall time", fmt_dur(wall), "so far" if not j.ended else f"{len(j.runs)} run(s)",
             "time from each run's start to its end, pauses between runs left out", False),
            ("Tasks ran", f"{j.ran:,}", "successful attempts", "successful attempts, over all runs", False),
            ("Reused", f"{j.reused:,}", "from the journal", "tasks of the plan finished by an earlier process and "
                                                           "taken from the journal by the latest one", False),
            ("Retried", f"{j.retried:,}", "attempts tried again", "failed attempts that were tried again", False),
            ("Failed", f"{j.failed_for_good:,}", "tasks not recovered", "tasks whose last attempt failed",
             j.failed_for_good > 0),
            ("Failed attempts", f"{j.failed_attempt_count:,}", "retried or not", "every failed attempt, retried or not",
             False),
            ("Plan tasks", f"{j.total_tasks():,}", nodes_line, "partitions and nodes of the plan", False),
            ("Output bytes", size, f"{nfiles:,} files", f"{nfiles:,} files under outputs/" +
             ("" if complete else " (stopped counting: too many)"), False),
        ]
        tile_html = "".join(
            f"<div class=\"tile{' bad' if bad else ''}\" title=\"{esc(tip)}\"><div class=\"tl-label\">{esc(label)}"
            f"</div><div class=\"tl-value\">{esc(value)}</div><div class=\"tl-sub\">{esc(sub)}</div></div>"
            for label, value, sub, tip, bad in tiles)
        running = ""
        if not j.ended and j.runs:
            running = ("<p class=\"note\">The latest run has no end record yet: it is still running, or it was "
                       "killed. Attempts in flight are not in the journal yet.</p>")
        return (f"<header><h1>Job <span class=\"mono\">{esc(info.get('job_id', '?'))}</span>"
                f"<span class=\"pill {cls}\" id=\"job-status\">{esc(status)}</span></h1>"
                f"<p class=\"meta\">{' · '.join(meta)}</p>"
                f"<p class=\"cmd mono\" title=\"the command line\">{esc(cmd)}</p>"
                f"<div class=\"tiles\">{tile_html}</div>{running}{self._runs_table()}</header>")

    def _runs_table(self) -> str:
        j = self.job
        if len(j.runs) < 2:
            return ""
        rows = []
        for r in j.runs[-30:]:
            start, end = r.span()
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)) if r.time else "?"
            rows.append(f"<tr><td>{r.index + 1}</td><td>{esc(when)}</td><td>{esc(r.pid)}</td><td>{esc(r.platform)}</td>"
                        f"<td class=\"num\">{esc(r.executors)}</td><td class=\"num\">{fmt_dur(end - start)}</td>"
                        f"<td class=\"num\">{r.ran:,}</td><td class=\"num\">{r.failed:,}</td>"
                        f"<td>{esc(r.status or ('no end record'))}</td></tr>")
        more = f"<p class=\"dim\">the last 30 of {len(j.runs)} runs</p>" if len(j.runs) > 30 else ""
        return ("<details class=\"runs\"><summary>Runs (each start of the scheduler; a resumed job has several)"
                "</summary><table><thead><tr><th>run</th><th>started</th><th>pid</th><th>platform</th>"
                "<th>executors</th><th>duration</th><th>ran</th><th>failed attempts</th><th>status</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>{more}</details>")

    # plan graph --------------------------------------------------------------------------
    def _plan(self) -> str:
        j = self.job
        if not j.nodes:
            return "<p class=\"dim\">job.json lists no nodes.</p>"
        nn = len(j.nodes)
        ids = {n.get("id"): i for i, n in enumerate(j.nodes)}
        inputs = [[ids[x] for x in (n.get("inputs") or []) if x in ids and ids[x] != i] for i, n in enumerate(j.nodes)]
        layer = layers(inputs)
        # an edge across several columns passes through a slot in each column between (no box is crossed)
        items: List[Tuple[str, int]] = [("node", i) for i in range(nn)]  # item -> ("node", i) or ("via", edge)
        item_layer = list(layer)
        preds: List[List[int]] = [[] for _ in range(nn)]
        chains: List[Tuple[int, int, List[int]]] = []  # (src node, dst node, items along the edge)
        for dst, ins in enumerate(inputs):
            for src in ins:
                prev, chain = src, [src]
                for lay in range(layer[src] + 1, layer[dst]):
                    items.append(("via", len(chains)))
                    item_layer.append(lay)
                    preds.append([prev])
                    prev = len(items) - 1
                    chain.append(prev)
                preds[dst].append(prev)
                chain.append(dst)
                chains.append((src, dst, chain))
        nlayers = max(item_layer) + 1
        columns: List[List[int]] = [[] for _ in range(nlayers)]
        for it, lay in enumerate(item_layer):
            columns[lay].append(it)
        succs: List[List[int]] = [[] for _ in items]
        for it, ps in enumerate(preds):
            for p_ in ps:
                succs[p_].append(it)
        pos = {it: float(k) for col in columns for k, it in enumerate(col)}
        for sweep in range(4):  # order columns by the mean position of neighbours (fewer crossings)
            order = columns[1:] if sweep % 2 == 0 else columns[-2::-1]
            for col in order:
                nb = preds if sweep % 2 == 0 else succs
                col.sort(key=lambda it: (sum(pos[x] for x in nb[it]) / len(nb[it]) if nb[it] else pos[it]))
                for k, it in enumerate(col):
                    pos[it] = float(k)
        bw, bh, gx, gy, pad, via_h = 224, 66, 64, 14, 10, 10
        heights = [bh if kind == "node" else via_h for kind, _ in items]
        col_h = [sum(heights[it] for it in col) + gy * max(0, len(col) - 1) for col in columns]
        height = int(pad * 2 + max(col_h))
        width = pad * 2 + nlayers * bw + (nlayers - 1) * gx
        top: Dict[int, float] = {}
        for c, col in enumerate(columns):
            y = pad + (height - 2 * pad - col_h[c]) / 2
            for it in col:
                top[it] = y
                y += heights[it] + gy

        def left_x(it: int) -> float:
            return pad + item_layer[it] * (bw + gx)

        def mid_y(it: int) -> float:
            return top[it] + heights[it] / 2

        out = [f"<div class=\"scroll\"><svg class=\"plan\" width=\"{width}\" height=\"{height}\" "
               f"viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" "
               f"aria-label=\"plan graph\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
               f"markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#8a94a6\"/>"
               f"</marker></defs>"]
        for src, dst, chain in chains:
            d = []
            x, y = left_x(src) + bw, mid_y(src)
            d.append(f"M{coord(x)},{coord(y)}")
            for it in chain[1:]:
                x2, y2 = left_x(it), mid_y(it)
                if it == dst:
                    x2 -= 1
                mx = (x + x2) / 2
                d.append(f"C{coord(mx)},{coord(y)} {coord(mx)},{coord(y2)} {coord(x2)},{coord(y2)}")
                if it != dst:  # straight through the column
                    x = x2 + bw
                    d.append(f"L{coord(x)},{coord(y2)}")
                    y = y2
            out.append(f"<path class=\"edge\" d=\"{''.join(d)}\" marker-end=\"url(#arrow)\"/>")
        for i, n in enumerate(j.nodes):
            x, y = left_x(i), top[i]
            total = int(n.get("npartitions") or 0)
            done, failed, fattempts = j.done[i], j.failed_tasks[i], j.failed_attempts_node[i]
            state = "bad" if failed else ("ok" if total and done >= total else ("part" if done else "todo"))
            name = str(n.get("name", i))
            kind = str(n.get("kind", "?"))
            line2 = f"{kind} · {total:,} partition{'s' if total != 1 else ''}"
            line3 = (("done" if total == 1 else f"all {total:,} done") if total and done >= total
                     else f"{done:,}/{total:,} done")
            if failed:
                line3 += f" · {failed:,} failed"
            elif fattempts:
                line3 += f" · {fattempts:,} retried"
            fits = int((bw - 22) / 5.8)  # characters of 11px text that fit in the box
            badge = ""
            if n.get("pointwise") and len(line3) + 11 <= fits:
                badge = f"<text class=\"pkind end\" x=\"{bw - 8}\" y=\"51\">pointwise</text>"
            frac = done / total if total else 0.0
            tip = (f"{name}\nkind: {kind}\npartitions: {total:,}{' (pointwise)' if n.get('pointwise') else ''}\n"
                   f"done: {done:,}\nfailed (last attempt): {failed:,}\nfailed attempts: {fattempts:,}\n"
                   f"fingerprint: {n.get('fingerprint', '?')}")
            out.append(
                f"<g class=\"pnode {state}\" data-node=\"{i}\" transform=\"translate({coord(x)},{coord(y)})\">"
                f"<title>{esc(tip)}</title>"
                f"<rect class=\"box\" width=\"{bw}\" height=\"{bh}\" rx=\"6\"/>"
                f"<rect x=\"0\" y=\"0\" width=\"6\" height=\"{bh}\" rx=\"3\" fill=\"{self.color(i)}\"/>"
                f"<text class=\"pname\" x=\"14\" y=\"19\">{esc(clip(name, int((bw - 22) / 8.0)))}</text>"
                f"<text class=\"pkind\" x=\"14\" y=\"35\">{esc(clip(line2, fits))}</text>"
                f"<text class=\"pcount {state}\" x=\"14\" y=\"51\">{esc(clip(line3, fits))}</text>{badge}"
                f"<rect class=\"pbar\" x=\"14\" y=\"57\" width=\"{bw - 26}\" height=\"4\" rx=\"2\"/>"
                f"<rect class=\"pbar-done {state}\" x=\"14\" y=\"57\" width=\"{coord((bw - 26) * frac)}\" height=\"4\" "
                f"rx=\"2\"/></g>")
        out.append("</svg></div>")
        return "".join(out)

    # timeline ----------------------------------------------------------------------------
    def _clusters(self) -> Tuple[List[_Cluster], float]:
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
        merged: List[_Cluster] = []
        for start, end, idx in spans:  # overlapping runs first
            if merged and start <= merged[-1].end:
                merged[-1].end = max(merged[-1].end, end)
                merged[-1].runs.append(idx)
            else:
                merged.append(_Cluster(start, end, runs=[idx]))
        active = sum(c.end - c.start for c in merged)
        threshold = max(10.0, 0.05 * active)
        clusters: List[_Cluster] = [merged[0]]
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

    def _timeline(self) -> str:
        j = self.job
        n = len(j.a_node)
        info_hosts = j.job.get("hosts") or {}
        ranks = sorted({int(r) for r in info_hosts if str(r).lstrip("-").isdigit()} |
                       {r for r in set(j.a_rank) if r >= 0})
        if not ranks:
            return "<p class=\"dim\">No task attempt is in the journal yet.</p>"
        run_cluster: Dict[int, _Cluster] = {r: c for c in self.clusters for r in c.runs}
        scale = self.scale

        def xpos(i: int, t: float) -> float:
            c = run_cluster.get(j.a_run[i]) or (self.clusters[0] if self.clusters else _Cluster(t, t))
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

    def _bar_json(self, i: int, err: int) -> List[Any]:
        j = self.job
        return [j.a_node[i], j.a_part[i], j.a_att[i], j.a_rank[i], round(self._rel(j.a_t0[i]), 4),
                float(f"{j.a_t1[i] - j.a_t0[i]:.4g}"), err]

    def _time_at(self, x: float) -> float:
        """Seconds since the first start at plot position x."""
        c = next((c for c in reversed(self.clusters) if c.x0 <= x), None)
        if c is None:
            return 0.0
        return self._rel(min(c.end, c.start + (x - c.x0) / self.scale))

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
                       f"data-f=\"{k}\" x=\"{coord(s * width)}\" y=\"{-min(2, pad)}\" width=\"{coord(max(2.0, width))}\" "
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
            c = next((c for c in self.clusters if r.index in c.runs), None)
            if c is None or r.time <= c.start + 1e-6:
                continue
            x = LABEL_W + c.x0 + (r.time - c.start) * self.scale
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

    # durations ---------------------------------------------------------------------------
    def _durations(self) -> str:
        j = self.job
        if not j.durations:
            return "<p class=\"dim\">No task has finished yet.</p>"
        order = sorted(j.durations, key=lambda ni: -sum(j.durations[ni]))
        shown = sorted(order[:MAX_HISTOGRAMS])
        cards = [self._histogram(ni, sorted(j.durations[ni])) for ni in shown]
        more = (f"<p class=\"note\">{len(order) - len(shown)} more node(s) with less total time are left out.</p>"
                if len(order) > len(shown) else "")
        return (f"<p class=\"note\">Successful attempts per node; the dark line is the median, the dashed one the "
                f"95th percentile.</p><div class=\"cards\">{''.join(cards)}</div>{more}")

    def _histogram(self, ni: int, d: List[float]) -> str:
        n = len(d)
        q = lambda f: d[min(n - 1, int(f * (n - 1) + 0.5))]  # noqa: E731
        lo, hi = d[0], d[-1]
        use_log = lo > 0 and hi / lo >= 20
        w, h, left, right, top, base = 260, 96, 8, 252, 8, 70
        nb = min(24, max(6, int(2 * math.sqrt(n))))
        if hi - lo < 1e-9:
            edges = [lo - 0.5 * max(lo, 1e-3), hi + 0.5 * max(hi, 1e-3)]
            nb = 1
        elif use_log:
            a, b = math.log(lo), math.log(hi)
            edges = [math.exp(a + (b - a) * k / nb) for k in range(nb + 1)]
        else:
            edges = [lo + (hi - lo) * k / nb for k in range(nb + 1)]
        counts = [0] * nb
        prev = 0
        for k in range(nb):
            cut = n if k == nb - 1 else bisect.bisect_left(d, edges[k + 1])
            counts[k] = cut - prev
            prev = cut
        peak = max(counts) or 1

        def xof(v: float) -> float:
            if nb == 1:
                return (left + right) / 2
            if use_log:
                f = (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))
            else:
                f = (v - lo) / (hi - lo)
            return left + f * (right - left)

        bw = (right - left) / nb
        bars = []
        for k, c in enumerate(counts):
            if not c:
                continue
            bh = max(1.5, (base - top) * c / peak)
            x = left + k * bw if nb > 1 else left + (right - left) * 0.35
            width = bw - 1 if nb > 1 else (right - left) * 0.3
            bars.append(f"<rect x=\"{coord(x)}\" y=\"{coord(base - bh)}\" width=\"{coord(max(1, width))}\" height=\"{coord(bh)}\" "
                        f"fill=\"{self.color(ni)}\"><title>{c:,} attempt(s), {esc(fmt_dur(edges[k]))}–"
                        f"{esc(fmt_dur(edges[k + 1]))}</title></rect>")
        med, p95 = q(0.5), q(0.95)
        marks = (f"<line class=\"med\" x1=\"{coord(xof(med))}\" x2=\"{coord(xof(med))}\" y1=\"{top - 2}\" y2=\"{base}\"/>"
                 f"<line class=\"p95\" x1=\"{coord(xof(p95))}\" x2=\"{coord(xof(p95))}\" y1=\"{top - 2}\" y2=\"{base}\"/>")
        axis = (f"<line class=\"hbase\" x1=\"{left}\" x2=\"{right}\" y1=\"{base}\" y2=\"{base}\"/>"
                f"<text class=\"hl\" x=\"{left}\" y=\"{base + 14}\">{esc(fmt_dur(lo))}</text>"
                f"<text class=\"hl end\" x=\"{right}\" y=\"{base + 14}\">{esc(fmt_dur(hi))}</text>"
                + (f"<text class=\"hl mid\" x=\"{(left + right) / 2}\" y=\"{base + 14}\">log scale</text>"
                   if use_log else ""))
        stats = (f"n={n:,} · median {fmt_dur(med)} · p95 {fmt_dur(p95)} · max {fmt_dur(hi)} · "
                 f"total {fmt_dur(sum(d))}")
        name = self.job.names[ni]
        return (f"<div class=\"card\" data-n=\"{ni}\"><div class=\"card-title\"><i style=\"background:"
                f"{self.color(ni)}\"></i>{esc(name)}</div><div class=\"card-stats\">{esc(stats)}</div>"
                f"<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">"
                f"{''.join(bars)}{marks}{axis}</svg></div>")

    # tables ------------------------------------------------------------------------------
    def _slowest(self) -> str:
        j = self.job
        if not j.slowest:
            return "<p class=\"dim\">No task attempt is in the journal yet.</p>"
        rows = []
        for dur, i, extra in sorted(j.slowest, key=lambda it: (-it[0], it[1])):
            status = "<span class=\"badtext\">failed</span>" if extra["failed"] else "ok"
            start = fmt_dur(self._rel(j.a_t0[i])) if j.a_t0[i] > 0 and self.clusters else "?"
            rows.append(f"<tr><td><i class=\"sw\" style=\"background:{self.color(j.a_node[i])}\"></i>"
                        f"{esc(j.names[j.a_node[i]])}</td><td class=\"num\">{j.a_part[i]}</td>"
                        f"<td class=\"num\">{j.a_att[i]}</td><td class=\"num\">{j.a_rank[i]}</td>"
                        f"<td class=\"num\"><b>{esc(fmt_dur(dur))}</b></td><td class=\"num\">+{esc(start)}</td>"
                        f"<td>{status}</td><td>{self._logref(extra['log'])}</td></tr>")
        return ("<table class=\"data\"><thead><tr><th>node</th><th>partition</th><th>attempt</th><th>rank</th>"
                "<th>duration</th><th>started</th><th>outcome</th><th>log</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")

    def _failures(self) -> str:
        j = self.job
        if not j.failing and not j.untracked_failures:
            return "<p class=\"okmsg\">No task attempt failed.</p>"
        items = sorted(j.failing.values(), key=lambda f: (not f.last_failed, not f.current, f.node, f.partition))
        rows = []
        for f in items[:MAX_FAILURE_ROWS]:
            if f.last_failed:
                outcome = ("<span class=\"badtext\">failed</span>" if j.ended
                           else "<span class=\"badtext\">failed (job not ended)</span>")
            else:
                outcome = f"<span class=\"oktext\">ok on attempt&nbsp;{f.ok_attempt}</span>"
            if not f.current:
                outcome += " <span class=\"dim\">(earlier version of the node)</span>"
            attempts = ", ".join(str(a) for a in f.attempts[:12]) + (" …" if len(f.attempts) > 12 else "")
            err = f.error or "?"
            err_html = (f"<pre class=\"err\">{esc(err)}</pre>" if len(err) <= 400 else
                        f"<details><summary class=\"err\">{esc(err[:200])} …</summary><pre class=\"err\">{esc(err)}"
                        f"</pre></details>")
            rows.append(f"<tr class=\"{'bad' if f.last_failed else ''}\"><td class=\"mono\">{esc(f.node)}"
                        f"[{f.partition}]</td><td class=\"num\">{len(f.attempts)}<div class=\"dim\">attempt "
                        f"{esc(attempts)}</div></td><td>{outcome}</td><td>{err_html}<div class=\"dim\">"
                        f"{esc(f.where or f'rank {f.rank}')}</div></td><td>{self._logref(f.log)}</td></tr>")
        notes = []
        if len(items) > MAX_FAILURE_ROWS:
            notes.append(f"The first {MAX_FAILURE_ROWS} of {len(items):,} tasks with failed attempts are listed "
                         "(those that failed for good first).")
        if j.untracked_failures:
            notes.append(f"{j.untracked_failures:,} more failed attempts of other tasks are only counted.")
        summary = (f"<p>{j.failed_for_good:,} task(s) failed on their last attempt; {j.retried:,} failed "
                   f"attempt(s) were retried.</p>")
        return (summary + "<table class=\"data failures\"><thead><tr><th>task</th><th>failed attempts</th>"
                "<th>outcome</th><th>last error</th><th>log (last failed attempt)</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>" + "".join(f"<p class=\"note\">{esc(t)}</p>" for t in notes))
