"""The `mpipipe` command on a real job directory."""
import os

from helpers import FLAKY, python, run, BIN
from journal_tools import job_dir

MPIPIPE = os.path.join(BIN, "mpipipe")


def test_status_of_a_failed_job_shows_counts_and_last_error(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "5", "--mode", "exception", "--fail-partition", "2",
           "--fail-attempts", "-1", "--max-retries", "1", "--num-executors", "2")
    done = run([MPIPIPE, "status", job_dir(data_root)], check=True, timeout=60)
    assert ": failed, 1 run(s)" in done.stdout
    assert "square: 4/5 done, 0 running, 0 pending, 1 failed; 2 failed attempt(s)" in done.stdout
    assert "total: 0/1 done" in done.stdout
    assert "ValueError: bad value in partition 2" in done.stdout and "p2.a1.log" in done.stdout


def test_status_of_a_finished_job(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "3", "--num-executors", "1", check=True)
    done = run([MPIPIPE, "status", job_dir(data_root)], check=True, timeout=60)
    assert ": succeeded" in done.stdout and "square: 3/3 done, 0 running, 0 pending, 0 failed" in done.stdout


def test_status_of_a_folder_that_is_no_job(tmp_path):
    done = run([MPIPIPE, "status", str(tmp_path)], timeout=60)
    assert done.returncode != 0 and "is not a job directory" in done.stderr


def test_platforms_and_version():
    done = run([MPIPIPE, "platforms"], check=True, timeout=60)
    assert "local" in done.stdout and "mpi" in done.stdout and "auto-detection picks local" in done.stdout
    assert "0.1.0" in run([MPIPIPE, "--version"], check=True, timeout=60).stdout


def test_status_while_the_job_runs_shows_running_and_pending(data_root):
    import subprocess
    import time

    from helpers import env_for_tests, kill_group

    proc = subprocess.Popen([BIN + "/python", FLAKY, "--data-root", data_root, "-n", "30", "--sleep", "0.5",
                             "--num-executors", "2"], env=env_for_tests(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        out = ""
        while time.monotonic() < deadline:
            if os.path.exists(data_root) and os.listdir(data_root):
                jd = job_dir(data_root)
                if os.path.exists(os.path.join(jd, "state.json")):
                    out = run([MPIPIPE, "status", jd], timeout=60).stdout
                    if "running" in out and " 2 running" in out:
                        break
            time.sleep(0.2)
        assert ": running," in out and "square:" in out and " 2 running, " in out and " pending" in out, out
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def test_logs_of_one_task_and_the_list_of_logs(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "4", "--mode", "exception", "--fail-partition", "1",
           "--fail-attempts", "1", "--num-executors", "2", check=True)
    jd = job_dir(data_root)
    one = run([MPIPIPE, "logs", jd, "--task", "square[1]"], check=True, timeout=60).stdout
    assert "square[1] attempt 0: failed" in one and "ValueError: bad value in partition 1" in one
    assert "square[1] attempt 1: ok" in one
    listing = run([MPIPIPE, "logs", jd], check=True, timeout=60).stdout
    assert "rank-0.log" in listing and "worker-0.log" in listing and "p1.a0.log" in listing
    bad = run([MPIPIPE, "logs", jd, "--task", "nosuch[3]"], timeout=60)
    assert bad.returncode != 0 and "no attempt of nosuch[3]" in bad.stderr
    followed = run([MPIPIPE, "logs", jd, "--follow"], check=True, timeout=60)  # the job has ended: returns
    assert followed.returncode == 0


def test_report_command_writes_html(data_root, tmp_path):
    python(FLAKY, "--data-root", data_root, "-n", "3", "--num-executors", "1", check=True)
    out = tmp_path / "r.html"
    done = run([MPIPIPE, "report", job_dir(data_root), "-o", str(out)], check=True, timeout=60)
    assert str(out) in done.stdout and out.read_text().lstrip().lower().startswith("<!doctype html")


def test_match_against_a_jobs_hosts_and_against_given_hosts(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "2", "--num-executors", "2",
           "--hosts", "2=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2", check=True)
    jd = job_dir(data_root)
    done = run([MPIPIPE, "match", "cuda(mem=8GiB) * 2", "--job", jd], timeout=60)
    assert done.returncode == 0 and "rank 2: yes" in done.stdout and "rank 1: no" in done.stdout
    assert "1 of 2 rank(s) can run it" in done.stdout
    none = run([MPIPIPE, "match", "cuda(mem=80GiB)", "--hosts", "1=cpu(cores=2) & cuda(mem=16GiB)"], timeout=60)
    assert none.returncode == 1 and "0 of 1 rank(s)" in none.stdout
    bad = run([MPIPIPE, "match", "cuda(mem=8GB"], timeout=60)
    assert bad.returncode != 0 and "^" in bad.stderr


def test_large_values_stay_out_of_the_journal_status_stays_fast_and_values_come_back(data_root):
    """Tasks that return 3 MiB each: the journal holds references (values/<node>/...json, owner-only files),
    `mpipipe status` reads a journal of a few hundred bytes, result.values() gives the values back, and a
    resumed run reuses them. A value under the limit stays in its record."""
    import re
    import stat
    import time

    from helpers import REPO

    big_value = os.path.join(REPO, "tests", "pipelines", "big_value.py")
    argv = (big_value, "--data-root", data_root, "--job-id", "big", "-n", "3", "--mb", "3", "--num-executors", "2")
    first = python(*argv, check=True, timeout=120)
    size = 3 * (1 << 20)
    expected = [f"value {p} len={size} head={'abc'[p] * 3} small=[1, 2.5, None]" for p in range(3)]
    assert [ln for ln in first.stdout.splitlines() if ln.startswith("value ")] == expected
    jd = os.path.join(data_root, "big")
    journal_size = os.path.getsize(os.path.join(jd, "journal.log"))
    assert journal_size < 4096, journal_size  # 9 MiB of values, as three references
    files = sorted(os.listdir(os.path.join(jd, "values", "big")))
    assert len(files) == 3 and all(re.fullmatch(r"p\d\.a0\.r\d\.\d+\.json", f) for f in files), files
    for f in files:
        st = os.stat(os.path.join(jd, "values", "big", f))
        assert st.st_size > size and stat.S_IMODE(st.st_mode) == 0o600
    t0 = time.monotonic()
    status = run([MPIPIPE, "status", jd], check=True, timeout=60)
    assert "big: 3/3 done" in status.stdout and time.monotonic() - t0 < 10
    again = python(*argv, check=True, timeout=120)  # resumed: nothing runs, the values come from their files
    assert [ln for ln in again.stdout.splitlines() if ln.startswith("value ")] == expected
    assert "0 tasks ran" in again.stderr and "3 reused from the journal" in again.stderr
    from mpipipe.execution.journal import OK, kind
    from mpipipe.execution.task import VALUE_INLINE_BYTES

    small_kib = (VALUE_INLINE_BYTES // 2) / (1 << 20)
    python(big_value, "--data-root", data_root, "--job-id", "small", "-n", "1", "--mb", str(small_kib),
           "--num-executors", "1", check=True, timeout=120)
    (rec,) = [r for r in records_of(os.path.join(data_root, "small")) if kind(r) == OK]
    assert rec["v"]["partition"] == 0 and "vf" not in rec
    assert not os.path.exists(os.path.join(data_root, "small", "values"))


def records_of(jd):
    from mpipipe.execution.journal import read_records

    return list(read_records(os.path.join(jd, "journal.log")))


def test_status_and_logs_read_a_journal_of_either_format(tmp_path):
    """`mpipipe status` and `mpipipe logs -t` on a journal in this version's format and on the same records as
    versions before wrote them (run and end records: {"type": ...})."""
    import json
    import zlib

    from mpipipe import joblogs
    from mpipipe.cli import _job_status
    from mpipipe.execution.journal import (KIND, Journal, end_record, failed_record, ok_batch_record, ok_record,
                                          run_record)

    seen = []
    for fmt in ("now", "before"):
        jd = tmp_path / fmt
        (jd / "logs").mkdir(parents=True)
        (jd / "logs" / "w.log").write_text("hello from p1\n")
        (jd / "job.json").write_text(json.dumps({"job_id": "j", "platform": "mpi", "executors": 1,
                                                 "nodes": [{"name": "sq", "npartitions": 3}]}))
        log = (str(jd / "logs" / "w.log"), 0, None)
        oks = [ok_record("ff:0", "sq", 0, 0, 1, 1.0, 2.0, None), ok_record("ff:2", "sq", 2, 0, 1, 1.0, 2.0, None)]
        records = [run_record("j", {"sq": "ff"}, executors=1, platform="mpi", total=3, time=0.0),
                   failed_record("ff:1", "sq", 1, 0, 1, 1.0, 2.0, "ValueError: nope", log),
                   ok_batch_record("ff", "sq", 1, oks),
                   end_record("failed", time=3.0)]
        if fmt == "now":
            j = Journal(str(jd))
            j.open()
            for rec in records:
                j.append(rec)
            j.close()
        else:
            with open(jd / "journal.log", "wb") as f:
                for rec in records:
                    if rec[KIND] in ("run", "end"):
                        rec = {"type": rec[KIND], **{k: v for k, v in rec.items() if k != KIND}}
                    body = json.dumps(rec, separators=(",", ":")).encode()
                    f.write(b"%08x %s\n" % (zlib.crc32(body), body))
        st = _job_status(str(jd))
        node = st["nodes"]["sq"]
        (heading, text), = joblogs.task_logs(str(jd), "sq", 1)
        seen.append((st["status"], st["runs"], sorted(node["done"]), node["failed"], node["failed_attempts"],
                     node["last_error"].replace(str(jd), "JD"), heading.replace(str(jd), "JD"), text))
    assert seen[0] == seen[1] == ("failed", 1, [0, 2], 1, 1, "[1] attempt 0: ValueError: nope (log: JD/logs/w.log)",
                                  "--- sq[1] attempt 0: failed on rank 1: ValueError: nope (JD/logs/w.log) ---",
                                  "hello from p1\n")
