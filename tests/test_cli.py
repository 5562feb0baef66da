"""The `mpipipe` command on real job directories: ls, jobs named by directory, id, prefix or `latest`, exit codes
that say a job's state, one error format; and a script's --help."""
import json
import os
import re
import sys
import time

import pytest

from helpers import BIN, FLAKY, env_for_tests, python, run
from journal_tools import job_dir

MPIPIPE = os.path.join(BIN, "mpipipe")


def test_status_of_a_failed_job_shows_counts_and_last_error(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "5", "--mode", "exception", "--fail-partition", "2",
           "--fail-attempts", "-1", "--max-retries", "1", "--num-executors", "2")
    done = run([MPIPIPE, "status", job_dir(data_root)], timeout=60)
    assert done.returncode == 1, done.stderr  # the exit code says: failed
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
    assert done.returncode == 2 and done.stderr.startswith("mpipipe: error: ")
    assert "is not a job directory" in done.stderr


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
        assert run([MPIPIPE, "status", "latest", "--data-root", data_root], timeout=60).returncode == 3  # running
        listing = run([MPIPIPE, "ls", "--data-root", data_root], timeout=60).stdout
        assert re.search(r"^flaky-\S+ +running +\S+ \S+ +\S+ +\d+/31 +local$", listing, re.M), listing
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


# --- finding jobs: ls, job ids, latest ----------------------------------------------------------------------

def fake_job(root: str, job_id: str, runs: list, age: float) -> str:
    """A job directory with job.json and a journal of `runs` [(start, end status or None)], last active `age`
    seconds ago (what `ls` orders by)."""
    from mpipipe.execution.journal import encode, end_record, run_record

    jd = os.path.join(root, job_id)
    os.makedirs(jd, mode=0o700)
    with open(os.path.join(jd, "job.json"), "w") as f:
        json.dump({"job_id": job_id, "platform": "mpi", "executors": 3, "argv": ["x.py"],
                   "nodes": [{"id": 0, "name": "sq", "npartitions": 4, "inputs": [], "fingerprint": "ff"}]}, f)
    lines = []
    for start, status in runs:
        lines.append(encode(run_record(job_id, {"sq": "ff"}, 3, "mpi", 4, pid=1, time=start)))
        if status is not None:
            lines.append(encode(end_record(status, time=start + 75.0)))
    if lines:
        with open(os.path.join(jd, "journal.log"), "wb") as f:
            f.write(b"".join(lines))
    when = time.time() - age
    for name in os.listdir(jd):
        os.utime(os.path.join(jd, name), (when, when))
    return jd


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """A data root with a succeeded and a failed real job, and made-up ones: interrupted, killed, not started."""
    root = str(tmp_path_factory.mktemp("cli") / "jobs")
    python(FLAKY, "--data-root", root, "--job-id", "good-one", "-n", "3", "--num-executors", "1", check=True)
    python(FLAKY, "--data-root", root, "--job-id", "bad-one", "-n", "3", "--mode", "exception", "--fail-partition",
           "1", "--fail-attempts", "-1", "--max-retries", "0", "--num-executors", "1")
    now = time.time()
    fake_job(root, "stopped-by-ctrl-c", [(now - 4000, "failed"), (now - 3000, "interrupted")], age=3000)
    fake_job(root, "killed-hard", [(now - 5000, None)], age=5000)
    fake_job(root, "never-ran", [], age=6000)
    fake_job(root, "never-again", [], age=7000)
    os.makedirs(os.path.join(root, "cache"))  # not a job: no job.json, no journal
    os.utime(os.path.join(root, "bad-one", "journal.log"))  # the failed one ran last
    return root


def test_ls_lists_the_jobs_newest_first_with_state_and_duration(jobs):
    done = run([MPIPIPE, "ls", "--data-root", jobs], timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.match(r"^JOB +STATE +STARTED +DURATION +TASKS +PLATFORM$", lines[0]), lines[0]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[0] for r in rows] == ["bad-one", "good-one", "stopped-by-ctrl-c", "killed-hard", "never-ran",
                                    "never-again"]
    state = {r[0]: r[1] for r in rows}
    assert state == {"bad-one": "failed", "good-one": "succeeded", "stopped-by-ctrl-c": "interrupted",
                     "killed-hard": "killed", "never-ran": "not", "never-again": "not"}  # "not started"
    by_id = {ln.split()[0]: ln for ln in lines[1:]}
    assert re.search(r" 1m 15s +\?/4 +mpi$", by_id["stopped-by-ctrl-c"])  # the last run's 75 s
    assert re.search(r"\d\d:\d\d +[\d.]+m?s +4/4 +local$", by_id["good-one"]), by_id["good-one"]
    assert re.search(r"not started +- +- +\?/4 +mpi$", by_id["never-ran"]), by_id["never-ran"]
    assert "cache" not in by_id
    empty = run([MPIPIPE, "ls", "--data-root", os.path.join(jobs, "nosuch")], timeout=60)
    assert empty.returncode == 2 and empty.stderr.startswith("mpipipe: error: no data root ")


def test_a_job_is_named_by_directory_id_prefix_or_latest(jobs, tmp_path):
    by_dir = run([MPIPIPE, "status", os.path.join(jobs, "good-one")], timeout=60)
    by_id = run([MPIPIPE, "status", "good-one", "--data-root", jobs], timeout=60)
    by_prefix = run([MPIPIPE, "status", "goo", "--data-root", jobs], timeout=60)
    from_env = run([MPIPIPE, "status", "good-one"], env=env_for_tests({"SP_DATA_ROOT": jobs}), timeout=60)
    def same(out: str) -> str:
        return re.sub(r"written \d+ s ago", "written N s ago", out)

    assert same(by_dir.stdout) == same(by_id.stdout) == same(by_prefix.stdout) == same(from_env.stdout)
    assert "job good-one on local" in by_id.stdout and by_id.returncode == 0
    latest = run([MPIPIPE, "status", "latest", "--data-root", jobs], timeout=60)
    assert latest.stdout.startswith("job bad-one on local") and latest.returncode == 1
    unique = run([MPIPIPE, "status", "stop", "--data-root", jobs], timeout=60)
    assert unique.returncode == 130 and unique.stdout.startswith("job stopped-by-ctrl-c on mpi")
    two = run([MPIPIPE, "status", "never", "--data-root", jobs], timeout=60)
    assert two.returncode == 2 and "the start of several job ids" in two.stderr
    assert "never-again, never-ran" in two.stderr
    none = run([MPIPIPE, "logs", "zz", "--data-root", jobs], timeout=60)
    assert none.returncode == 2 and "no job 'zz'" in none.stderr
    logs = run([MPIPIPE, "logs", "latest", "--data-root", jobs, "-t", "square[1]"], timeout=60)
    assert logs.returncode == 0 and "square[1] attempt 0: failed" in logs.stdout
    out = tmp_path / "r.html"
    rep = run([MPIPIPE, "report", "good-one", "--data-root", jobs, "-o", str(out)], timeout=120)
    assert rep.returncode == 0 and out.exists(), rep.stderr
    none = run([MPIPIPE, "report", "latest", "--data-root", str(tmp_path / "empty")], timeout=60)
    assert none.returncode == 2 and none.stderr.startswith("mpipipe: error: no job under ")


def test_status_exit_codes_say_the_jobs_state(jobs):
    codes = {ref: run([MPIPIPE, "status", ref, "--data-root", jobs], timeout=60).returncode
             for ref in ("good-one", "bad-one", "stopped-by-ctrl-c", "killed-hard", "never-ran", "nosuch")}
    assert codes == {"good-one": 0, "bad-one": 1, "stopped-by-ctrl-c": 130, "killed-hard": 4, "never-ran": 5,
                     "nosuch": 2}


def test_one_error_format_and_exit_code_2_for_the_command_line(jobs):
    for argv in (["nosuch"], ["status"], ["status", "good-one", "--bogus"], ["logs", "good-one", "-t", "a[b"],
                 ["report", "missing-job", "--data-root", jobs]):
        done = run([MPIPIPE, *argv], timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mpipipe: error: "), (argv, done.stderr)
        assert "Usage:" not in done.stderr and "Error:" not in done.stderr
    same = run([sys.executable, "-m", "mpipipe", "status", "good-one", "--data-root", jobs], timeout=60)
    assert same.returncode == 0 and same.stdout.startswith("job good-one")


# --- a script's --help ---------------------------------------------------------------------------------------

def test_a_scripts_help_leaves_the_slurm_flags_to_help_all():
    short = python(FLAKY, "--help", check=True, timeout=60).stdout
    assert "--num-executors" in short and "--fail-partition" in short and "--help-all" in short
    assert not re.search(r"[\s\[]--partition\b", short) and "--slurm-" not in short and "SLURM options (" not in short
    everything = python(FLAKY, "--help-all", check=True, timeout=60).stdout
    assert "SLURM options (" in everything and "--partition NAME" in everything and "--slurm-requeue" in everything
    assert len(short.splitlines()) < 0.7 * len(everything.splitlines())
    for argv in (["--platform", "slurm", "--help"], ["--help", "--platform=slurm"]):
        assert "--partition NAME" in python(FLAKY, *argv, check=True, timeout=60).stdout
    assert python(FLAKY, "--partition", "x", "--dry-run", timeout=60).returncode == 0  # hidden, still taken
