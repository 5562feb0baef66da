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
