"""`write_report`: the HTML report of a job, checked as text and rendered in a real headless Chromium."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple

import pytest

import chromium
from helpers import REPO, env_for_tests, python
from journal_tools import job_dir
from mpipipe.errors import JournalError
from mpipipe.execution.journal import FAILED, OK, encode, is_attempt, kind, read_records
from mpipipe.report import MAX_BARS, write_report

REPORT_JOB = os.path.join(REPO, "tests", "pipelines", "report_job.py")
ARTIFACTS = os.path.join(REPO, ".artifacts")
HTML_ERROR = "<script>alert(\"pwned\")</script> & 'quotes' <b>not bold</b>"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <script> elements."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.scripts: List[str] = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if self._in_script:
            self.scripts[-1] += data

    def having(self, attr: str, value: Optional[str] = None, tag: Optional[str] = None):  # type: ignore[no-untyped-def]
        return [a for t, a in self.tags if attr in a and (value is None or a[attr] == value) and (tag in (None, t))]

    def with_class(self, cls: str, tag: Optional[str] = None):  # type: ignore[no-untyped-def]
        return [a for t, a in self.tags if cls in (a.get("class") or "").split() and tag in (None, t)]


def rows(doc: Elements) -> List[int]:
    return [int(a["data-rank"]) for a in doc.having("data-rank", tag="g") if "row" in (a.get("class") or "").split()]


def run_report_job(data_root: str, *args: str, env: Optional[Dict[str, str]] = None,  # type: ignore[no-untyped-def]
                   check: bool = True):
    return python(REPORT_JOB, "--data-root", data_root, "--scale", "0.5", *args, env=env_for_tests(env),
                  check=check, timeout=180)


@pytest.fixture(scope="module")
def retried_job(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A finished job whose clean[3] failed twice and score[7] once before they succeeded; 3 executor ranks."""
    root = str(tmp_path_factory.mktemp("report") / "jobs")
    done = run_report_job(root, "--num-executors", "3")
    assert "summary=" in done.stdout and "3 retried" in done.stderr
    jd = job_dir(root)
    return jd, write_report(jd)


@pytest.fixture(scope="session")
def browser(request) -> str:  # type: ignore[no-untyped-def]
    """Debian's chromium, installed with apt-get on first use (once per session)."""
    exe = chromium.ensure()
    took = chromium.install_seconds()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if took is not None and reporter is not None:
        reporter.write_line(f"\nchromium was missing: installed with apt-get in {took:.1f}s")
    return exe


# --- the HTML as text ----------------------------------------------------------------------

def test_report_has_one_row_per_rank_every_attempt_and_the_failed_ones(retried_job):
    jd, path = retried_job
    assert path == os.path.join(jd, "report.html")
    text = open(path, encoding="utf-8").read()
    doc = Elements(text)
    recs = [r for r in read_records(os.path.join(jd, "journal.log")) if is_attempt(r)]
    failed = [r for r in recs if kind(r) == FAILED]
    assert sorted((r["n"], r["p"], r["a"]) for r in failed) == [("clean", 3, 0), ("clean", 3, 1), ("score", 7, 0)]
    assert sorted(rows(doc)) == [0, 1, 2, 3]  # rank 0, the scheduler, too
    assert len(doc.with_class("bar", tag="rect")) == len(recs)
    assert len(doc.with_class("runbar", tag="rect")) == 1  # rank 0's one run
    fail_bars = doc.having("data-failed", "1", tag="rect")
    assert len(fail_bars) == 3 and all("fail" in a["class"].split() for a in fail_bars)
    # the plan: five nodes, five edges, every node done
    assert len(doc.having("data-node", tag="g")) == 5
    assert len(doc.with_class("edge", tag="path")) == 5
    assert "all 12 done · 2 retried" in text and "all 12 done · 1 retried" in text
    # the header and the tables
    assert 'id="job-status">succeeded<' in text
    assert re.search(r"Retried</div><div class=\"tl-value\">3<", text)
    labels = re.findall(r"<div class=\"tl-label\">([^<]*)</div>", text)
    assert len(labels) == len(set(labels)) == 7 and "Failed attempts" not in labels, labels  # no tile twice
    assert "ok on attempt&nbsp;2" in text and "ok on attempt&nbsp;1" in text
    assert 'href="logs/tasks/clean/p3.a1.log"' in text and 'href="logs/tasks/score/p7.a0.log"' in text
    assert "exited with code 3" in text
    assert text.count("<tr>") >= 15  # the slowest attempts


def test_report_escapes_what_comes_from_the_journal(retried_job):
    _, path = retried_job
    text = open(path, encoding="utf-8").read()
    assert HTML_ERROR not in text and "<script>alert" not in text and "<b>not bold" not in text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27; &lt;b&gt;not bold" in text
    doc = Elements(text)
    assert len(doc.scripts) == 3  # the error recorder, the data, the page's code: nothing from the journal
    data = json.loads(doc.scripts[1])
    assert any(HTML_ERROR in e for e in data["errors"])
    assert "\\u003cscript\\u003e" in text and "</script> &" not in text


def test_report_is_self_contained(retried_job):
    _, path = retried_job
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text)
    assert not re.search(r"\bsrc\s*=", text)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert "@import" not in text
    assert os.path.getsize(path) < 200_000


def test_report_to_another_path_links_logs_from_there(retried_job, tmp_path):
    jd, _ = retried_job
    out = write_report(jd, str(tmp_path / "elsewhere" / "r.html"))
    assert out == str(tmp_path / "elsewhere" / "r.html")
    text = open(out, encoding="utf-8").read()
    rel = os.path.relpath(os.path.join(jd, "logs", "tasks", "clean", "p3.a1.log"), str(tmp_path / "elsewhere"))
    assert f'href="{rel}"' in text


def test_report_of_a_failed_then_resumed_job(tmp_path):
    root = str(tmp_path / "jobs")
    first = run_report_job(root, "--num-executors", "2", env={"REPORT_FAIL_FOR_GOOD": "5"}, check=False)
    assert first.returncode == 1, first.stderr
    jd = job_dir(root)
    text = open(write_report(jd), encoding="utf-8").read()
    assert 'id="job-status">failed<' in text
    assert re.search(r"<div class=\"tile bad\"[^>]*><div class=\"tl-label\">Failed</div><div class=\"tl-value\">1<",
                     text)
    assert "score[5]" in text and "cannot be computed" in text and "0/1 done" in text  # summary never ran
    ok_before = sum(1 for r in read_records(os.path.join(jd, "journal.log")) if kind(r) == OK)

    run_report_job(root, "--num-executors", "2")  # the same job, now without the failure: resumes
    text = open(write_report(jd), encoding="utf-8").read()
    doc = Elements(text)
    assert 'id="job-status">succeeded<' in text
    assert "2 run(s) in 2 invocations" in text
    assert re.search(rf"Reused</div><div class=\"tl-value\">{ok_before}<", text)
    assert "ok on attempt&nbsp;0" in text  # score[5]: failed for good in run 1, fine in run 2
    assert len(doc.with_class("runline", tag="line")) == 1  # run 2 started a few seconds later: same stretch
    assert sorted(rows(doc)) == [0, 1, 2]
    assert len(doc.with_class("runbar", tag="rect")) == 2


# --- synthetic journals: big, resumed after a pause, running, damaged -----------------------

def synthetic_job(path: str, attempts: int, ranks: int, gap: float = 0.0, fail_every: int = 0,
                  workers: int = 1, torn: bool = False, end: bool = True, start: float = 1.7e9) -> str:
    """A job directory with job.json and a journal of `attempts` attempts on ranks 1..ranks (two runs if gap)."""
    os.makedirs(os.path.join(path, "outputs"), exist_ok=True)
    nodes = [{"id": 0, "name": "read", "kind": "datasource", "npartitions": attempts // 2, "inputs": [],
              "pointwise": False, "fingerprint": "aaaa"},
             {"id": 1, "name": "map<&>", "kind": "sql", "npartitions": attempts - attempts // 2, "inputs": [0],
              "pointwise": True, "fingerprint": "bbbb"}]
    job = {"job_id": "synthetic", "mpipipe": "0.1.0", "argv": ["synthetic.py"], "platform": "mpi",
           "executors": ranks, "started": start, "runs": 1, "host": "h0",
           "hosts": {str(r): {"host": f"h{r % 4}", "cores": 4} for r in range(1, ranks + 1)}, "nodes": nodes}
    with open(os.path.join(path, "job.json"), "w") as f:
        json.dump(job, f)
    lines = []
    runs = [(0, attempts // 2 if gap else attempts, start), (attempts // 2, attempts, start + gap + 50)] if gap \
        else [(0, attempts, start)]
    for k, (lo, hi, t) in enumerate(runs):
        lines.append(encode({"type": "run", "job": "synthetic", "time": t, "pid": 100 + k, "executors": ranks,
                             "platform": "mpi", "total": attempts}))
        clock = {(r, w): t + 0.5 for r in range(1, ranks + 1) for w in range(workers)}
        for i in range(lo, hi):
            node = 0 if i < attempts // 2 else 1
            p = i if node == 0 else i - attempts // 2
            slot = (1 + i % ranks, (i // ranks) % workers)
            dur = 0.01 + 0.002 * (i % 7) + (0.05 if i % 97 == 0 else 0.0)
            t0 = clock[slot]
            clock[slot] = t0 + dur + 0.001
            failed = bool(fail_every) and i % fail_every == 0
            rec = {"s": "failed" if failed else "ok", "k": f"{nodes[node]['fingerprint']}:{p}",
                   "n": nodes[node]["name"], "p": p, "a": 0, "r": slot[0], "t0": t0, "t1": t0 + dur,
                   "log": [f"{path}/logs/rank-{slot[0]}/worker-0.log", 0, 10]}
            if failed:
                rec.update(e=f"ValueError: {HTML_ERROR} #{i}", where=f"rank {slot[0]}")
            lines.append(encode(rec))
            if failed:  # the retry
                rec = dict(rec, s="ok", a=1, t0=t0 + dur, t1=t0 + 2 * dur)
                del rec["e"], rec["where"]
                clock[slot] += dur
                lines.append(encode(rec))
        if end:
            lines.append(encode({"type": "end", "status": "succeeded", "time": max(clock.values()) + 0.1}))
    with open(os.path.join(path, "journal.log"), "wb") as f:
        f.write(b"".join(lines))
        if torn:
            f.write(b'0badc0de {"s":"ok","k":"aaaa:1","n":"re')
    return path


def test_big_job_is_aggregated_with_a_pause_cut_out(tmp_path):
    jd = synthetic_job(str(tmp_path / "big"), 60_000, 24, gap=7200, fail_every=20, torn=True)
    path = write_report(jd)
    text = open(path, encoding="utf-8").read()
    doc = Elements(text)
    assert sorted(rows(doc)) == list(range(0, 25))
    (svg,) = doc.having("data-aggregated", tag="svg")
    assert svg["data-aggregated"] == "1"
    assert len(doc.with_class("bar", tag="rect")) <= 2 * MAX_BARS
    assert sum(int(a["data-failed"]) for a in doc.having("data-failed", tag="rect")) == 3_000  # marked per slice
    assert "time slices" in text and "The 3,000 failed attempts are marked by slice" in text
    assert len(doc.with_class("gap", tag="g")) == 1 and "2h 00m later" in text  # the pause between the runs
    assert "map&lt;&amp;&gt;" in text and "<script>alert" not in text
    assert os.path.getsize(path) < 4_000_000, os.path.getsize(path)
    assert re.search(r"Retried</div><div class=\"tl-value\">3,000<", text)


def test_concurrent_attempts_of_a_rank_get_lanes(tmp_path):
    jd = synthetic_job(str(tmp_path / "lanes"), 400, 3, workers=2)
    doc = Elements(open(write_report(jd), encoding="utf-8").read())
    lanes = {int(a["data-rank"]): a["data-lanes"] for a in doc.having("data-rank", tag="g")}
    assert lanes == {0: "1", 1: "2", 2: "2", 3: "2"}  # rank 0: its runs only
    assert len(doc.with_class("bar", tag="rect")) == 400


def test_report_of_a_running_or_killed_job(tmp_path):
    jd = synthetic_job(str(tmp_path / "live"), 200, 2, end=False, torn=True)
    with open(os.path.join(jd, "lock"), "w") as f:
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    text = open(write_report(jd), encoding="utf-8").read()
    assert 'id="job-status">running<' in text and "so far" in text and "no end record yet" in text
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with open(os.path.join(jd, "lock"), "w") as f:
        f.write(f"pid {gone.pid} on {socket.gethostname()}")
    assert 'id="job-status">killed<' in open(write_report(jd), encoding="utf-8").read()


def test_a_journal_in_the_earlier_format_gives_the_same_report(tmp_path):
    """synthetic_job writes run and end records as versions before this one did ({"type": ...}); the same
    records in this version's format (as Journal.append stores them) read the same."""
    from mpipipe.execution.journal import Journal, read_raw_records
    from mpipipe.report.job import Job

    old = synthetic_job(str(tmp_path / "old"), 400, 4, gap=600, fail_every=25)
    new = str(tmp_path / "new")
    shutil.copytree(old, new)
    os.unlink(os.path.join(new, "journal.log"))
    j = Journal(new)
    j.open()
    for rec in read_raw_records(os.path.join(old, "journal.log")):
        j.append({k: (v.replace(old, new) if isinstance(v, str) else v) for k, v in rec.items()})
    j.close()
    assert [r for r in read_raw_records(os.path.join(new, "journal.log")) if "type" in r] == []

    def facts(job):  # type: ignore[no-untyped-def]
        return (job.runs, job.status, job.ran, job.failed_attempt_count, job.retried, job.reused, job.done,
                list(job.a_node), list(job.a_part), list(job.a_fail), list(job.a_t0), job.errors, len(job.failing))

    assert facts(Job.load(new)) == facts(Job.load(old))
    assert Job.load(new).runs[0].status == "succeeded" and len(Job.load(new).runs) == 2


# --- the plan graph: 3, 9 and 30 nodes --------------------------------------------------------------------------

PLAN_SIZES = (3, 9, 30)


def plan_spec(n: int) -> List[Tuple[str, List[int]]]:
    """(name, inputs) of a plan of `n` nodes: a chain of 3, a 9-node join, or a seeded 30-node web."""
    if n == 3:
        return [("read", []), ("clean", [0]), ("write", [1])]
    if n == 9:
        return [("events", []), ("users", []), ("clean_events", [0]), ("clean_users", [1]), ("joined", [2, 3]),
                ("by_day", [4]), ("by_user", [4]), ("top_users", [6, 3]), ("summary", [5, 7])]
    rng = random.Random(7)
    spec: List[Tuple[str, List[int]]] = [(f"source_{k}", []) for k in range(4)]
    for k in range(4, n):
        ins = sorted(rng.sample(range(max(0, k - 8), k), rng.randint(1, min(3, k))))
        spec.append((f"step_{k:02d}_{rng.choice(['clean', 'join', 'score', 'rank', 'dedup'])}", ins))
    return spec


def plan_job(path: str, n: int, start: float = 1.7e9) -> str:
    """A finished job whose plan has `n` nodes, every partition done once on ranks 1..3."""
    from mpipipe.execution.journal import end_record, ok_record, run_record

    os.makedirs(os.path.join(path, "outputs"), exist_ok=True)
    nodes = [{"id": i, "name": name, "kind": "sql" if ins else "datasource", "npartitions": 2 + i % 5,
              "inputs": ins, "pointwise": len(ins) == 1, "fingerprint": f"f{i:03d}"}
             for i, (name, ins) in enumerate(plan_spec(n))]
    job = {"job_id": f"plan-{n}", "mpipipe": "0.1.0", "argv": ["plan.py"], "platform": "local", "executors": 3,
           "started": start, "host": "h0", "hosts": {str(r): {"host": "h0", "cores": 4} for r in (1, 2, 3)},
           "nodes": nodes}
    with open(os.path.join(path, "job.json"), "w") as f:
        json.dump(job, f)
    lines = [encode(run_record(job["job_id"], {x["name"]: x["fingerprint"] for x in nodes}, 3, "local",
                               sum(x["npartitions"] for x in nodes), pid=1, time=start))]
    t = start + 0.2
    for i, x in enumerate(nodes):
        for p in range(x["npartitions"]):
            lines.append(encode(ok_record(f"{x['fingerprint']}:{p}", x["name"], p, 0, 1 + (i + p) % 3, t, t + 0.05,
                                          None)))
            t += 0.02
    lines.append(encode(end_record("succeeded", time=t + 0.1)))
    with open(os.path.join(path, "journal.log"), "wb") as f:
        f.write(b"".join(lines))
    return path


def boxes(doc: Elements, width: float, height: float = 66) -> Dict[int, Tuple[float, float, float, float]]:
    """Each plan node's box (left, top, right, bottom), from its group's translate()."""
    out = {}
    for a in doc.having("data-node", tag="g"):
        x, y = (float(v) for v in re.match(r"translate\(([-\d.]+),([-\d.]+)\)", a["transform"]).groups())
        out[int(a["data-node"])] = (x, y, x + width, y + height)
    return out


def overlapping(b: Dict[int, Tuple[float, float, float, float]]) -> List[Tuple[int, int]]:
    keys = sorted(b)
    return [(i, k) for n, i in enumerate(keys) for k in keys[n + 1:]
            if b[i][0] < b[k][2] and b[k][0] < b[i][2] and b[i][1] < b[k][3] and b[k][1] < b[i][3]]


@pytest.mark.parametrize("n", PLAN_SIZES)
def test_the_plan_is_drawn_top_down_in_the_pages_width(tmp_path, n):
    from mpipipe.report.page import BOX_MIN, PLAN_W

    jd = plan_job(str(tmp_path / f"plan{n}"), n)
    doc = Elements(open(write_report(jd), encoding="utf-8").read())
    (svg,) = doc.with_class("plan", tag="svg")
    assert int(svg["width"]) <= PLAN_W and int(svg["data-box-width"]) >= BOX_MIN
    b = boxes(doc, float(svg["data-box-width"]))
    assert len(b) == n and not overlapping(b)
    assert all(0 <= left and right <= int(svg["width"]) for left, _, right, _ in b.values())
    spec = plan_spec(n)
    for i, (_, ins) in enumerate(spec):
        for x in ins:
            assert b[i][1] >= b[x][3] + 20, (spec[x][0], spec[i][0])  # a node sits below what it reads
    assert len(doc.with_class("edge", tag="path")) == sum(len(ins) for _, ins in spec)


@pytest.mark.parametrize("n", PLAN_SIZES)
def test_the_plan_fits_the_page_in_chromium(browser, tmp_path, n):
    """At 1400 px the plan is drawn at its size (text as designed), at 1000 px scaled to the page: never wider than
    its section, no box on another, the plan section kept as a screenshot (.artifacts/report-plan-N.png)."""
    report = write_report(plan_job(str(tmp_path / f"plan{n}"), n))
    os.makedirs(ARTIFACTS, exist_ok=True)
    for window in ("1400,1000", "1000,900"):
        with chromium.DevTools(timeout=60, window=window) as page:
            page.open(report)
            facts = page.evaluate("""(function(){var svg=document.querySelector('svg.plan'),
                box=svg.getBoundingClientRect(),wrap=svg.parentNode,sec=document.getElementById('plan');
                var nodes=[].map.call(document.querySelectorAll('g.pnode'),function(g){
                  var r=g.querySelector('rect.box').getBoundingClientRect();return [r.left,r.top,r.right,r.bottom];});
                return {left:box.left,right:box.right,scale:box.width/svg.width.baseVal.value,
                  scroll:wrap.scrollWidth,client:wrap.clientWidth,secLeft:sec.getBoundingClientRect().left,
                  secRight:sec.getBoundingClientRect().right,page:document.documentElement.scrollWidth,
                  view:document.documentElement.clientWidth,nodes:nodes};})()""")
            assert facts["scroll"] <= facts["client"] + 1, facts  # no horizontal scrolling inside the section
            assert facts["page"] <= facts["view"], facts  # nor of the page
            assert facts["secLeft"] - 1 <= facts["left"] and facts["right"] <= facts["secRight"] + 1, facts
            if window.startswith("1400"):
                assert facts["scale"] > 0.99, facts  # drawn at its own size: 13 px names stay 13 px
            else:
                assert facts["scale"] > 0.7, facts
            b = {k: tuple(v) for k, v in enumerate(facts["nodes"])}
            assert len(b) == n and not overlapping(b)
            assert all(facts["left"] - 1 <= v[0] and v[2] <= facts["right"] + 1 for v in b.values())
            if window.startswith("1400"):
                shot = os.path.join(ARTIFACTS, f"report-plan-{n}.png")
                width, height = page.screenshot(shot, "#plan")
                assert width >= 300 and height >= 150 and os.path.getsize(shot) > 5_000
            assert page.page_errors() == []


def test_report_needs_a_job_directory(tmp_path):
    with pytest.raises(JournalError, match="not a job directory"):
        write_report(str(tmp_path))


def test_report_of_a_job_that_has_not_run_a_task_yet(tmp_path):
    jd = synthetic_job(str(tmp_path / "empty"), 0, 2, end=False)
    text = open(write_report(jd), encoding="utf-8").read()
    assert "No task has finished yet" in text
    assert sorted(rows(Elements(text))) == [0, 1, 2]


# --- in a real browser -----------------------------------------------------------------------

def png_size(path: str) -> Tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def check_in_browser(report: str, ranks: List[int]) -> None:
    """The rendered DOM (--dump-dom) has one timeline row per rank; the page logs no error and loads nothing."""
    dumped = chromium.headless(report, "--dump-dom", "--virtual-time-budget=2000", timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    console = [line for line in dumped.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or ":ERROR:CONSOLE" in line], console
    dom = Elements(dumped.stdout)
    (root,) = [a for t, a in dom.tags if t == "html"]
    assert "data-errors" not in root, root["data-errors"]
    assert root.get("data-ready") == "1", "the page's script did not run to its end"
    assert sorted(rows(dom)) == ranks
    assert not re.search(r"<rect class=\"bar[^>]*>\s*<title>", dumped.stdout)  # the script replaced the titles
    with chromium.DevTools(timeout=60) as page:
        page.open(report)
        assert page.evaluate("document.querySelectorAll('svg.tl g.row[data-rank]').length") == len(ranks)
        assert page.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
        assert page.page_errors() == []
        assert [u for u in page.requests() if not u.startswith("file://")] == []  # self-contained


def hover(page: "chromium.DevTools", selector: str) -> List[str]:
    """Move the mouse onto the first element matching selector; the tooltip's display and text."""
    return page.evaluate(f"""(function(){{var r=document.querySelector({json.dumps(selector)});
        var b=r.getBoundingClientRect();r.dispatchEvent(new MouseEvent('mousemove',{{bubbles:true,
        clientX:b.x+b.width/2,clientY:b.y+b.height/2}}));var t=document.getElementById('tip');
        return [t.style.display,t.textContent];}})()""")


def test_report_tooltips_and_highlight_in_chromium(retried_job, browser):
    _, report = retried_job
    with chromium.DevTools(timeout=60) as page:
        page.open(report)
        shown, text = hover(page, "rect.bar.fail")
        assert shown == "block" and "attempt" in text and "FAILED" in text and "rank " in text
        assert HTML_ERROR in text or "exited with code 3" in text  # shown as text, never as markup
        assert page.evaluate("document.querySelectorAll('#tip script, #tip b b').length") == 0
        shown, text = hover(page, "rect.runbar")
        assert shown == "block" and text.startswith("run 1") and "succeeded" in text
        shown, text = hover(page, "rect.bar.c0")
        assert shown == "block" and text.startswith("load[") and "FAILED" not in text
        lit = page.evaluate("""(function(){var k=document.querySelector('.key[data-n="1"]');
            k.dispatchEvent(new MouseEvent('mouseenter'));var svg=document.getElementById('timeline-svg');
            var hl=svg.classList.contains('hl'),on=svg.querySelectorAll('.bar.on').length,
            all=svg.querySelectorAll('.bar[data-n="1"]').length;k.dispatchEvent(new MouseEvent('mouseleave'));
            return [hl,on,all,svg.classList.contains('hl')];})()""")
        assert lit[0] is True and lit[1] == lit[2] > 0 and lit[3] is False
        assert page.page_errors() == []


def test_report_renders_in_headless_chromium(retried_job, browser, tmp_path):
    _, report = retried_job
    check_in_browser(report, [0, 1, 2, 3])
    os.makedirs(ARTIFACTS, exist_ok=True)
    for name, size in (("report.png", "1400,1000"), ("report-full.png", "1400,2000")):
        shot = str(tmp_path / name)
        done = chromium.headless(report, f"--screenshot={shot}", "--virtual-time-budget=2000", window=size,
                                 timeout=120)
        assert done.returncode == 0 and os.path.exists(shot), done.stderr[-3000:]
        assert png_size(shot) == tuple(int(v) for v in size.split(","))
        assert os.path.getsize(shot) > 20_000  # not a blank page
        shutil.copyfile(shot, os.path.join(ARTIFACTS, name))


def test_big_report_renders_in_headless_chromium(browser, tmp_path):
    jd = synthetic_job(str(tmp_path / "big"), 60_000, 24, gap=7200, fail_every=20)
    report = write_report(jd)
    check_in_browser(report, list(range(0, 25)))
    shot = str(tmp_path / "report-big.png")
    done = chromium.headless(report, f"--screenshot={shot}", "--virtual-time-budget=2000", timeout=120)
    assert done.returncode == 0 and png_size(shot) == (1400, 1000), done.stderr[-3000:]
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copyfile(shot, os.path.join(ARTIFACTS, "report-big.png"))
