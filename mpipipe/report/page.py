"""The report's HTML page: summary, plan graph, durations, slowest attempts, failures (the timeline: timeline.py)."""

from __future__ import annotations

import bisect
import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

import mpipipe
from mpipipe.atomic import PRIVATE_FILE, atomic_write
from mpipipe.fmt import fmt_bytes, fmt_dur
from mpipipe.report.assets import CSS, JS, node_color
from mpipipe.report.fmt import clip, coord, esc, js_json, layers
from mpipipe.report.job import MAX_FAILURE_ROWS, MAX_HISTOGRAMS, Job, disk_usage, num
from mpipipe.report.timeline import Timeline


def write_report(job_dir: str, out_path: Optional[str] = None) -> str:
    """Write the HTML report of the job in `job_dir` to `out_path` (default `<job_dir>/report.html`).

    Returns the path written. Raises JournalError when `job_dir` has no readable job.json.
    """
    out = os.path.abspath(out_path or os.path.join(job_dir, "report.html"))
    job = Job.load(job_dir)
    page = _Page(job, os.path.dirname(out)).render()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    folder, job_real = os.path.realpath(os.path.dirname(out)), os.path.realpath(job_dir)
    inside = folder == job_real or folder.startswith(job_real + os.sep)
    # in the job directory owner-only like all its files; elsewhere (to be mailed or published) the umask decides
    atomic_write(out, page.encode("utf-8"), PRIVATE_FILE if inside else None)
    return out


# --- the plan's layout ---------------------------------------------------------------------

PLAN_W = 1180  # the widest the plan is drawn: the page's width inside its margins
BOX_W, BOX_MIN, BOX_H = 210, 150, 66  # a node's box: width (narrowed down to BOX_MIN when a layer is wide)
GAP_X, VIA_W = 16, 12  # between boxes; the slot an edge passes a layer in
GAP_LAYER, GAP_WRAP, PAD = 44, 18, 12  # between layers; between the bands of a wrapped layer; around


def _ordered_layers(item_layer: List[int], preds: List[List[int]]) -> List[List[int]]:
    """The items of each layer, ordered by the mean position of their neighbours (fewer crossings)."""
    nlayers = max(item_layer) + 1
    rows: List[List[int]] = [[] for _ in range(nlayers)]
    for it, lay in enumerate(item_layer):
        rows[lay].append(it)
    succs: List[List[int]] = [[] for _ in item_layer]
    for it, ps in enumerate(preds):
        for p_ in ps:
            succs[p_].append(it)
    pos = {it: float(k) for row in rows for k, it in enumerate(row)}
    for sweep in range(4):
        order = rows[1:] if sweep % 2 == 0 else rows[-2::-1]
        nb = preds if sweep % 2 == 0 else succs
        for row in order:
            row.sort(key=lambda it: (sum(pos[x] for x in nb[it]) / len(nb[it]) if nb[it] else pos[it]))
            for k, it in enumerate(row):
                pos[it] = float(k)
    return rows


class _PlanGeometry:
    """Where each item (a node's box or an edge's slot) of the ordered layers goes."""

    def __init__(self, rows: List[List[int]], kinds: List[str]) -> None:
        self.kinds = kinds
        widest = max((sum(1 for it in row if kinds[it] == "node"), sum(1 for it in row if kinds[it] == "via"), len(row))
                     for row in rows)
        nodes, vias, count = widest
        room = PLAN_W - 2 * PAD - vias * VIA_W - GAP_X * max(0, count - 1)
        self.bw = int(max(BOX_MIN, min(BOX_W, room / nodes))) if nodes else BOX_W
        self._left: Dict[int, float] = {}
        self._top: Dict[int, float] = {}
        self._h: Dict[int, float] = {}
        bands: List[Tuple[List[int], float]] = []  # items, y of their top
        y = float(PAD)
        for row in rows:
            parts = self._wrap(row)
            for k, part in enumerate(parts):
                h = BOX_H if any(kinds[it] == "node" for it in part) else 10.0
                bands.append((part, y))
                for it in part:
                    self._top[it] = y
                    self._h[it] = h
                y += h + (GAP_WRAP if k < len(parts) - 1 else GAP_LAYER)
        self.bands = len(bands)
        self.height = int(y - GAP_LAYER + PAD)
        inner = max(self._span(part) for part, _ in bands)
        self.width = int(inner + 2 * PAD)
        for part, _ in bands:  # each band centred
            x = PAD + (inner - self._span(part)) / 2
            for it in part:
                self._left[it] = x
                x += self.box_w(it) + GAP_X

    def box_w(self, it: int) -> float:
        return self.bw if self.kinds[it] == "node" else VIA_W

    def box_h(self, it: int) -> float:
        return self._h[it]

    def _span(self, part: List[int]) -> float:
        return sum(self.box_w(it) for it in part) + GAP_X * max(0, len(part) - 1)

    def _wrap(self, row: List[int]) -> List[List[int]]:
        parts: List[List[int]] = [[]]
        for it in row:
            if parts[-1] and self._span(parts[-1] + [it]) > PLAN_W - 2 * PAD:
                parts.append([])
            parts[-1].append(it)
        return parts

    def left(self, it: int) -> float:
        return self._left[it]

    def top(self, it: int) -> float:
        return self._top[it]

    def cx(self, it: int) -> float:
        return self._left[it] + self.box_w(it) / 2


def _spread(left: float, width: float, ends: List[Tuple[float, int]]) -> List[Tuple[float, int]]:
    """Points along a side of `width` for edges whose other ends lie at the given x, in their order."""
    ends = sorted(ends)
    if len(ends) == 1 or width < 20:
        return [(left + width / 2, k) for _, k in ends]
    margin = min(24.0, width / 4)
    step = (width - 2 * margin) / (len(ends) - 1)
    return [(left + margin + step * i, k) for i, (_, k) in enumerate(ends)]


# --- the page ------------------------------------------------------------------------------

class _Page:
    def __init__(self, job: Job, out_dir: str) -> None:
        self.job = job
        self.out_dir = out_dir
        self.now = time.time()
        self.data: Dict[str, Any] = {"nodes": job.names, "bars": [], "errors": [], "agg": [], "aggf": []}
        self.timeline = Timeline(job, self.now, self.data)
        self.clusters = self.timeline.clusters
        self.color = node_color

    def render(self) -> str:
        j = self.job
        title = f"mpipipe report: {j.job.get('job_id', os.path.basename(j.job_dir))}"
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
            self._section("timeline", "Timeline", self.timeline.render()),
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
        return self.timeline.rel(t)

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
            ("Failed", f"{j.failed_for_good:,}", "tasks not recovered",
             f"tasks whose last attempt failed; {j.failed_attempt_count:,} failed attempt(s) in all, retried or not",
             j.failed_for_good > 0),
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
        """The plan top-down, one band per layer (a node below the nodes it reads), fitted to the page's width:
        boxes narrow down to BOX_MIN and a layer wider than the page wraps onto more bands."""
        j = self.job
        if not j.nodes:
            return "<p class=\"dim\">job.json lists no nodes.</p>"
        nn = len(j.nodes)
        ids = {n.get("id"): i for i, n in enumerate(j.nodes)}
        inputs = [[ids[x] for x in (n.get("inputs") or []) if x in ids and ids[x] != i] for i, n in enumerate(j.nodes)]
        layer = layers(inputs)
        # an edge across several layers passes through a slot in each layer between (no box is crossed)
        kinds: List[str] = ["node"] * nn
        item_layer = list(layer)
        preds: List[List[int]] = [[] for _ in range(nn)]
        chains: List[List[int]] = []  # the items along each edge, source first
        for dst, ins in enumerate(inputs):
            for src in ins:
                prev, chain = src, [src]
                for lay in range(layer[src] + 1, layer[dst]):
                    kinds.append("via")
                    item_layer.append(lay)
                    preds.append([prev])
                    prev = len(kinds) - 1
                    chain.append(prev)
                preds[dst].append(prev)
                chain.append(dst)
                chains.append(chain)
        rows = _ordered_layers(item_layer, preds)
        g = _PlanGeometry(rows, kinds)
        out = [f"<div class=\"scroll\"><svg class=\"plan\" width=\"{g.width}\" height=\"{g.height}\" "
               f"viewBox=\"0 0 {g.width} {g.height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" "
               f"aria-label=\"plan graph\" data-bands=\"{g.bands}\" data-box-width=\"{g.bw}\">"
               f"<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" "
               f"markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#8a94a6\"/></marker></defs>"]
        # where edges leave a box (bottom) and enter one (top): spread along the side, in the order of the other end
        leave: Dict[int, List[Tuple[float, int]]] = {}
        enter: Dict[int, List[Tuple[float, int]]] = {}
        for k, chain in enumerate(chains):
            leave.setdefault(chain[0], []).append((g.cx(chain[1]), k))
            enter.setdefault(chain[-1], []).append((g.cx(chain[-2]), k))
        start_x = {k: x for it, ends in leave.items() for x, k in _spread(g.left(it), g.box_w(it), ends)}
        end_x = {k: x for it, ends in enter.items() for x, k in _spread(g.left(it), g.box_w(it), ends)}
        for k, chain in enumerate(chains):
            x, y = start_x[k], g.top(chain[0]) + g.box_h(chain[0])
            d = [f"M{coord(x)},{coord(y)}"]
            for it in chain[1:]:
                last = it == chain[-1]
                x2, y2 = (end_x[k], g.top(it) - 1) if last else (g.cx(it), g.top(it))
                bend = max(10.0, (y2 - y) / 2)
                d.append(f"C{coord(x)},{coord(y + bend)} {coord(x2)},{coord(y2 - bend)} {coord(x2)},{coord(y2)}")
                x, y = x2, y2
                if not last:  # straight down through the slot
                    y = g.top(it) + g.box_h(it)
                    d.append(f"L{coord(x)},{coord(y)}")
            out.append(f"<path class=\"edge\" d=\"{''.join(d)}\" marker-end=\"url(#arrow)\"/>")
        bw, bh = g.bw, BOX_H
        fits = int((bw - 22) / 5.8)  # characters of 11px text that fit in a box
        for i, n in enumerate(j.nodes):
            x, y = g.left(i), g.top(i)
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
            badge = ""
            if n.get("pointwise") and len(line3) + 11 <= fits:
                badge = f"<text class=\"pkind end\" x=\"{bw - 8}\" y=\"51\">pointwise</text>"
            frac = done / total if total else 0.0
            tip = (f"{name}\nkind: {kind}\npartitions: {total:,}{' (pointwise)' if n.get('pointwise') else ''}\n"
                   f"done: {done:,}\nfailed (last attempt): {failed:,}\nfailed attempts: {fattempts:,}\n"
                   f"fingerprint: {n.get('fingerprint', '?')}")
            out.append(
                f"<g class=\"pnode {state}\" data-node=\"{i}\" data-layer=\"{layer[i]}\" "
                f"transform=\"translate({coord(x)},{coord(y)})\">"
                f"<title>{esc(tip)}</title>"
                f"<rect class=\"box\" width=\"{bw}\" height=\"{bh}\" rx=\"6\"/>"
                f"<rect x=\"0\" y=\"0\" width=\"6\" height=\"{bh}\" rx=\"3\" fill=\"{self.color(i)}\"/>"
                f"<text class=\"pname\" x=\"14\" y=\"19\">{esc(clip(name, int((bw - 22) / 8.0)))}</text>"
                f"<text class=\"pkind\" x=\"14\" y=\"35\">{esc(clip(line2, fits))}</text>"
                f"<text class=\"pcount {state}\" x=\"14\" y=\"51\">{esc(clip(line3, fits))}</text>{badge}"
                f"<rect class=\"pbar\" x=\"14\" y=\"57\" width=\"{bw - 26}\" height=\"4\" rx=\"2\"/>"
                f"<rect class=\"pbar-done {state}\" x=\"14\" y=\"57\" width=\"{coord((bw - 26) * frac)}\" "
                f"height=\"4\" rx=\"2\"/></g>")
        out.append("</svg></div>")
        return "".join(out)

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
            bars.append(f"<rect x=\"{coord(x)}\" y=\"{coord(base - bh)}\" width=\"{coord(max(1, width))}\" "
                        f"height=\"{coord(bh)}\" "
                        f"fill=\"{self.color(ni)}\"><title>{c:,} attempt(s), {esc(fmt_dur(edges[k]))}–"
                        f"{esc(fmt_dur(edges[k + 1]))}</title></rect>")
        med, p95 = q(0.5), q(0.95)
        marks = "".join(f"<line class=\"{cls}\" x1=\"{coord(xof(v))}\" x2=\"{coord(xof(v))}\" y1=\"{top - 2}\" "
                        f"y2=\"{base}\"/>" for cls, v in (("med", med), ("p95", p95)))
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
                   f"attempt(s) were retried. Attempts are numbered from 0, as in the error message, "
                   f"<span class=\"mono\">mpipipe status</span>, <span class=\"mono\">mpipipe logs</span> and the "
                   f"log files (<span class=\"mono\">pP.aA.log</span>).</p>")
        return (summary + "<table class=\"data failures\"><thead><tr><th>task</th><th>failed attempts</th>"
                "<th>outcome</th><th>last error</th><th>log (last failed attempt)</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>" + "".join(f"<p class=\"note\">{esc(t)}</p>" for t in notes))
