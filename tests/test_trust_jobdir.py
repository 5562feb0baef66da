"""Nothing another user planted runs or is trusted: a job directory that is not ours alone is refused before
anything is read from it; what mpipipe writes there is owner-only; files it did not write itself are never
loaded; and journal records are trusted with no path outside their job's folders (a hand-edited record with
a valid CRC that names /etc or a planted folder is dropped, its task runs again, and nothing of the planted
folder reaches the results or a sink).

Every run is a real command in its own process group with a timeout (helpers.run).
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import stat
from typing import Dict, List

import pytest

from fault_tools import expected_checksum, job_argv, output_checksum, run_job, write_inputs
from helpers import BIN, FLAKY, REPO, python, run
from journal_tools import job_dir, records
from mpipipe.errors import JournalError
from mpipipe.execution.journal import JOURNAL_NAME, Journal, encode, encode_ok_batch, read_raw_records, read_records
from mpipipe.execution.task import read_value, write_value
from mpipipe.joblogs import task_logs

MPIPIPE = os.path.join(BIN, "mpipipe")
BIG_VALUE = os.path.join(REPO, "tests", "pipelines", "big_value.py")
IS_ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody").pw_uid if IS_ROOT else None


def error_line(done) -> str:  # type: ignore[no-untyped-def]
    """The one `mpipipe: error:` line of a refused run (and no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("mpipipe: error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def planted_job_dir(data_root: str, job_id: str) -> str:
    """A job directory as another user could leave it: a journal whose one record (valid CRC) says that
    square[0] is done, with its output in /etc."""
    path = os.path.join(data_root, job_id)
    os.makedirs(path)
    with open(os.path.join(path, JOURNAL_NAME), "wb") as f:
        f.write(encode({"s": "ok", "k": "x:0", "n": "square", "p": 0, "a": 0, "r": 1, "t0": 1.0, "t1": 2.0,
                        "o": "/etc", "v": 0, "log": None}))
    return path


def listing(path: str) -> Dict[str, bytes]:
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, path)] = b"" if os.path.isdir(full) else open(full, "rb").read()
    return out


# --- a job directory that is not ours alone ------------------------------------------------------------

REFUSALS = [("world-writable", 0o777, None, "is writable by others (mode 0777)"),
            ("group-writable", 0o770, None, "is writable by its group (mode 0770)")]
if IS_ROOT:
    REFUSALS.append(("another-users", 0o700, "nobody", "belongs to nobody, not to root"))
    REFUSALS.append(("another-users-world-writable", 0o777, "nobody", "belongs to nobody, not to root"))


@pytest.mark.parametrize("case,mode,owner,why", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_a_job_directory_not_ours_alone_is_refused_before_anything_is_read(case, mode, owner, why, tmp_path):
    data_root = str(tmp_path / "shared")
    os.makedirs(data_root)
    os.chmod(data_root, 0o1777)  # a shared data root (like /tmp) is fine: the job directory must be ours
    jd = planted_job_dir(data_root, "job")
    os.chmod(jd, mode)
    if owner:
        os.chown(jd, pwd.getpwnam(owner).pw_uid, -1)
    before = listing(jd)
    done = python(FLAKY, "--data-root", data_root, "--job-id", "job", "-n", "3", "--num-executors", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert f"job directory {jd} is not safe to use" in line and why in line, line
    assert "use a folder of your own" in line
    assert listing(jd) == before  # no lock, no logs, no journal record: nothing was read or written there
    assert "total=" not in done.stdout


@pytest.mark.skipif(not IS_ROOT, reason="making a link owned by another user needs root")
def test_a_job_directory_that_is_another_users_symbolic_link_is_refused(tmp_path):
    data_root = str(tmp_path / "shared")
    os.makedirs(data_root)
    mine = str(tmp_path / "mine")
    os.makedirs(mine, mode=0o700)
    os.symlink(mine, os.path.join(data_root, "job"))
    os.lchown(os.path.join(data_root, "job"), NOBODY, -1)
    done = python(FLAKY, "--data-root", data_root, "--job-id", "job", "-n", "2", "--num-executors", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "is a symbolic link that another user made" in error_line(done)
    assert os.listdir(mine) == []


@pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root")
def test_a_journal_that_another_user_owns_is_not_loaded(data_root):
    python(FLAKY, "--data-root", data_root, "-n", "3", "--num-executors", "1", check=True)
    jd = job_dir(data_root)
    os.chown(os.path.join(jd, JOURNAL_NAME), NOBODY, -1)
    done = python(FLAKY, "--data-root", data_root, "-n", "3", "--num-executors", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert f"journal {jd}/{JOURNAL_NAME} is not loaded: the file belongs to nobody" in line, line
    assert "only files that you alone can write are trusted" in line


# --- what mpipipe writes is owner-only ---------------------------------------------------------------

def test_everything_mpipipe_writes_in_the_job_directory_is_owner_only(tmp_path):
    """Under umask 022 (0644 files, 0755 folders by default): folders 0700, mpipipe's own files 0600. A task's
    own files keep the user's umask (a sink may link them into the user's folder), inside 0700 folders."""
    data_root = str(tmp_path / "new" / "jobs")  # made by mpipipe, with its parent
    old = os.umask(0o022)
    try:
        python(FLAKY, "--data-root", data_root, "-n", "4", "--mode", "exception", "--fail-partition", "1",
               "--fail-attempts", "1", "--num-executors", "2", check=True)
        jd = job_dir(data_root)
        python(BIG_VALUE, "--data-root", data_root, "--job-id", "big", "-n", "1", "--mb", "0.1",
               "--num-executors", "1", check=True)
        run([MPIPIPE, "report", jd], check=True, timeout=60)
    finally:
        os.umask(old)
    task_files = {"value.txt", "total.txt"}  # what the task bodies wrote
    seen: List[str] = []
    for top in (jd, os.path.join(data_root, "big")):
        for dirpath, dirs, files in os.walk(top):
            for name in dirs:
                mode = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
                assert mode == 0o700, f"{os.path.join(dirpath, name)}: {mode:04o}"
            for name in files:
                path = os.path.join(dirpath, name)
                mode = stat.S_IMODE(os.stat(path).st_mode)
                seen.append(os.path.relpath(path, top))
                assert mode == (0o644 if name in task_files else 0o600), f"{path}: {mode:04o}"
    for d in (data_root, os.path.dirname(data_root), jd):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    for expected in ("job.json", "journal.log", "lock", "state.json", "report.html", "logs/rank-0.log",
                     "logs/rank-1/executor.log", "logs/rank-1/worker-0.log", "logs/tasks/square/p1.a0.log"):
        assert expected in seen, (expected, sorted(seen))
    assert any(p.startswith("values/big/") for p in seen), sorted(seen)


# --- files mpipipe did not write itself are not loaded --------------------------------------------------

def test_a_value_file_is_read_only_from_the_jobs_values_and_only_if_trusted(tmp_path):
    jd = str(tmp_path / "job")
    os.makedirs(jd, mode=0o700)
    write_value(jd, "values/n/p0.a0.r1.7.json", json.dumps({"x": 1}))
    assert read_value(jd, "values/n/p0.a0.r1.7.json") == {"x": 1}
    assert stat.S_IMODE(os.stat(os.path.join(jd, "values", "n", "p0.a0.r1.7.json")).st_mode) == 0o600
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    for ref in ("../secret.json", "/etc/passwd", "values/../../secret.json", "values/n/../../../secret.json",
                "values/n/x.txt", "outputs/n/p0.json"):
        with pytest.raises(JournalError, match="not in values/"):
            read_value(jd, ref)
    os.chmod(os.path.join(jd, "values", "n", "p0.a0.r1.7.json"), 0o666)  # anyone could have rewritten it
    with pytest.raises(JournalError, match="is not loaded: the file is writable by others"):
        read_value(jd, "values/n/p0.a0.r1.7.json")


# --- journal records name nothing outside their job ----------------------------------------------------

def test_records_that_name_files_outside_the_job_are_dropped_on_every_read(tmp_path, caplog):
    jd = tmp_path / "job"
    jd.mkdir(mode=0o700)
    out = f"{jd}/outputs/n/part-00000"
    good = {"s": "ok", "k": "f:0", "n": "n", "p": 0, "a": 0, "r": 1, "t0": 1.0, "t1": 2.0, "o": out, "v": 1,
            "log": [f"{jd}/logs/rank-1/worker-0.log", 0, 5]}
    lines = [
        encode(good),
        encode(dict(good, k="f:1", p=1, o="/etc")),  # line 2: hand-edited, valid CRC
        encode(dict(good, k="f:2", p=2, o=f"{jd}/outputs/n/../../../planted")),
        encode(dict(good, k="f:3", p=3, o=f"{jd}/outputs/other/part-00003")),  # another node's folder
        encode(dict(good, k="f:4", p=4, n="..", o=f"{jd}/outputs/../part-00004")),
        encode(dict(good, k="f:5", p=5, o=None, vf="values/n/../../../etc/passwd")),
        encode(dict(good, k="f:6", p=6, o=None, log=["/etc/shadow", 0, None])),  # kept, without its log
        encode(dict(good, k="f:10", p=10, o=f"{jd}/outputs/n/.staging")),  # attempts in progress: never a result
        encode_ok_batch("f", "n", 1, [dict(good, p=7, o=f"{jd}/outputs/n/part-00007", vf=None),
                                      dict(good, p=8, o="/etc/ssh", vf=None),
                                      dict(good, p=9, o=None, vf="values/n/p9.a0.r1.1.json")]),
    ]
    (jd / JOURNAL_NAME).write_bytes(b"".join(lines))
    assert len(list(read_raw_records(str(jd / JOURNAL_NAME)))) == len(lines)  # all intact: the CRCs are valid
    with caplog.at_level("WARNING", logger="mpipipe.journal"):
        got = {r["p"]: r for r in read_records(str(jd / JOURNAL_NAME))}
    assert sorted(got) == [0, 6, 7, 9]
    assert got[6]["log"] is None and got[0]["log"] == good["log"]
    assert got[9]["vf"] == "values/n/p9.a0.r1.1.json"
    text = caplog.text
    assert "7 record(s) ignored, they name files outside their job directory" in text
    assert "line 2: output '/etc' is not a partition folder of the job's outputs/n/" in text
    assert "1 log reference(s) outside the job directory are not shown: line 7: '/etc/shadow'" in text
    done = Journal(str(jd)).replay_by_node()
    assert sorted(done["f"]) == [0, 6, 7, 9]
    assert all(r.get("o") in (None, out, f"{jd}/outputs/n/part-00007") for r in done["f"].values())


def test_logs_of_a_task_never_show_a_file_outside_the_job(data_root, tmp_path):
    python(FLAKY, "--data-root", data_root, "-n", "3", "--mode", "exception", "--fail-partition", "1",
           "--fail-attempts", "1", "--num-executors", "1", check=True)
    jd = job_dir(data_root)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show me")
    os.symlink(str(secret), os.path.join(jd, "logs", "tasks", "square", "link.log"))
    recs = list(read_raw_records(os.path.join(jd, JOURNAL_NAME)))
    edited = []
    for r in recs:
        if r.get("s") == "failed":
            r = dict(r, log=[str(secret), 0, None])
        elif r.get("s") == "ok" and r.get("p") == 1 and r.get("n") == "square":
            r = dict(r, log=[os.path.join(jd, "logs", "tasks", "square", "link.log"), 0, None])
        edited.append(encode(r))
    with open(os.path.join(jd, JOURNAL_NAME), "wb") as f:
        f.write(b"".join(edited))
    shown = task_logs(jd, "square", 1)
    assert len(shown) == 2
    assert all("do not show me" not in heading + text for heading, text in shown)
    assert "not a file of the job directory" in shown[1][1]
    cli = run([MPIPIPE, "logs", jd, "-t", "square[1]"], check=True, timeout=60)
    assert "do not show me" not in cli.stdout + cli.stderr
    listed = run([MPIPIPE, "logs", jd], check=True, timeout=60).stdout
    assert "link.log" not in listed


def test_a_hand_edited_output_is_never_reused_or_returned(data_root, tmp_path):
    """square[1]'s record says its output is a planted folder (value 1000): the task runs again, and `total`
    adds the true value; a record that names /etc as total's output is not returned as the job's output."""
    args = ("--data-root", data_root, "-n", "4", "--num-executors", "2")
    assert "total=14" in python(FLAKY, *args, check=True).stdout
    jd = job_dir(data_root)
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "value.txt").write_text("1000")
    lines = []
    for r in read_raw_records(os.path.join(jd, JOURNAL_NAME)):
        if r.get("s") == "ok" and r["n"] == "square" and r["p"] == 1:
            r = dict(r, o=str(planted))
        elif r.get("s") == "okb" and r["n"] == "square" and 1 in r["p"]:
            r = dict(r, o=[str(planted) if p == 1 else o for p, o in zip(r["p"], r["o"])])
        elif r.get("s") == "ok" and r["n"] == "total":
            r = dict(r, o="/etc")
        lines.append(encode(r))
    with open(os.path.join(jd, JOURNAL_NAME), "wb") as f:
        f.write(b"".join(lines))
    done = python(FLAKY, *args, check=True)
    assert "total=14" in done.stdout, done.stdout
    assert "record(s) ignored, they name files outside their job directory" in done.stderr
    assert "[mpipipe] outputs: /etc" not in done.stderr
    assert f"[mpipipe] outputs: {jd}/outputs/total/part-00000" in done.stderr
    ran = [r for r in records(data_root) if r.get("s") == "ok"][-2:]
    assert sorted((r["n"], r["p"]) for r in ran) == [("square", 1), ("total", 0)]


def test_a_hand_edited_output_never_reaches_a_sink(tmp_path):
    """enrich[0]'s record names a planted folder of Parquet files with other rows: the task runs again and
    the sink gets the true rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs, dims = write_inputs(str(tmp_path / "data"))
    root, out = str(tmp_path / "jobs"), str(tmp_path / "out")
    argv = job_argv(inputs, dims, out, root, "--num-executors", "2")
    run_job(argv)
    jd = job_dir(root)
    planted = tmp_path / "planted"
    planted.mkdir()
    source = os.path.join(jd, "outputs", "enrich", "part-00000")
    for f in glob.glob(os.path.join(source, "*.parquet")):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("score"), "score", pa.array([-1] * len(t), t["score"].type))
        pq.write_table(t, str(planted / os.path.basename(f)))
    lines = []
    for r in read_raw_records(os.path.join(jd, JOURNAL_NAME)):
        if r.get("n") == "enrich" and r.get("s") == "ok" and r["p"] == 0:
            r = dict(r, o=str(planted))
        elif r.get("n") == "enrich" and r.get("s") == "okb" and 0 in r["p"]:
            r = dict(r, o=[str(planted) if p == 0 else o for p, o in zip(r["p"], r["o"])])
        lines.append(encode(r))
    with open(os.path.join(jd, JOURNAL_NAME), "wb") as f:
        f.write(b"".join(lines))
    shutil.rmtree(out)
    done = run_job(argv)
    assert "record(s) ignored, they name files outside their job directory" in done.stderr
    assert output_checksum(out) == expected_checksum(inputs, dims)


def test_a_slurm_element_spec_someone_else_could_have_written_is_not_unpickled(tmp_path):
    """python -m mpipipe.launchers.shard_main loads a pickle: one in a folder others can write is refused."""
    import pickle
    import subprocess
    import sys

    marker = tmp_path / "ran"

    class Plant:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "shared"
    folder.mkdir()
    spec = folder / "spec.pkl"
    spec.write_bytes(pickle.dumps({"paths": ["x"], "payload": pickle.dumps(Plant())}))
    os.chmod(folder, 0o777)
    done = subprocess.run([sys.executable, "-m", "mpipipe.launchers.shard_main", str(spec)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "MPIPIPE_ARRAY_INDEX": "0"})
    assert done.returncode == 2 and "is not loaded" in done.stderr, done.stderr
    assert not marker.exists()
