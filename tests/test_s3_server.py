"""The local S3 server (tests/s3_server.py) and how pyarrow reaches it, in-process and from a child.

Uses the session fixture `s3`, registered in tests/conftest.py (`from s3_server import s3`).
"""
import json
import os
import shutil
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from helpers import pid_alive, run
from s3_server import s3_server

pytestmark = pytest.mark.timeout(120)

PARTS = {"dir/part-0.parquet": 3, "dir/sub/part-1.parquet": 5}   # key -> rows


def table(first: int, rows: int) -> pa.Table:
    return pa.table({"id": list(range(first, first + rows)), "word": [f"w{i}" for i in range(rows)]})


def files_under(fs: pafs.FileSystem, path: str):
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


@pytest.mark.parametrize("how", ["env", "uri", "explicit"])
def test_write_list_read_parquet(s3, monkeypatch, how):
    """Two Parquet files written, listed and read back; the endpoint comes from the environment
    (AWS_ENDPOINT_URL*), from the URI's query string, or from an explicit S3FileSystem."""
    bucket = f"roundtrip-{how}"
    s3.make_bucket(bucket)
    if how == "env":
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        fs, root = pafs.FileSystem.from_uri(f"s3://{bucket}/dir")
    elif how == "uri":
        fs, root = pafs.FileSystem.from_uri(s3.uri(f"{bucket}/dir", self_contained=True))
    else:
        fs, root = s3.filesystem(), f"{bucket}/dir"
    assert isinstance(fs, pafs.S3FileSystem) and root == f"{bucket}/dir"

    first = 0
    for key, rows in PARTS.items():
        if how == "env":   # plain s3:// strings: pyarrow resolves the filesystem itself
            pq.write_table(table(first, rows), f"s3://{bucket}/{key}")
        else:
            pq.write_table(table(first, rows), f"{bucket}/{key}", filesystem=fs)
        first += rows

    assert files_under(fs, root) == sorted(f"{bucket}/{key}" for key in PARTS)
    for key, rows in PARTS.items():
        assert pq.ParquetFile(fs.open_input_file(f"{bucket}/{key}")).metadata.num_rows == rows

    if how == "env":
        dataset = ds.dataset(f"s3://{bucket}/dir", format="parquet")
    else:
        dataset = ds.dataset(root, format="parquet", filesystem=fs)
    assert dataset.count_rows() == sum(PARTS.values())
    assert sorted(dataset.to_table().column("id").to_pylist()) == list(range(sum(PARTS.values())))


CHILD = r"""
import json, sys
import pyarrow as pa, pyarrow.dataset as ds, pyarrow.fs as pafs, pyarrow.parquet as pq
bucket = sys.argv[1]
pq.write_table(pa.table({"id": [100, 101]}), f"s3://{bucket}/dir/from-child.parquet")
fs, root = pafs.FileSystem.from_uri(f"s3://{bucket}/dir")
infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
print(json.dumps({"files": files, "rows": ds.dataset(f"s3://{bucket}/dir", format="parquet").count_rows()}))
"""


def test_child_process_reaches_server_with_env_only(s3):
    """A child started with nothing but PATH and s3.env() reads the parent's files and writes
    its own: what a subprocess executor needs to pass on."""
    bucket = s3.make_bucket("child-env")[len("s3://"):]
    fs = s3.filesystem()
    first = 0
    for key, rows in PARTS.items():
        pq.write_table(table(first, rows), f"{bucket}/{key}", filesystem=fs)
        first += rows

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **s3.env()}
    done = run([sys.executable, "-c", CHILD, bucket], env=env, timeout=90, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])

    expected = sorted([f"{bucket}/{key}" for key in PARTS] + [f"{bucket}/dir/from-child.parquet"])
    assert got == {"files": expected, "rows": sum(PARTS.values()) + 2}
    assert files_under(fs, f"{bucket}/dir") == expected      # the child's write is visible here
    assert "S3 subsystem" not in done.stderr                  # clean pyarrow S3 shutdown


def test_child_process_without_env_has_no_endpoint():
    """Control for the test above: without the variables, from_uri would go to AWS, not to us.
    (Checked through the options the filesystem pickles; no request is made.)"""
    probe = ("import pyarrow.fs as f; fs, _ = f.FileSystem.from_uri('s3://b/k?region=us-east-1');"
             "print(fs.__reduce__()[1][0]['endpoint_override'] or '<none>')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    done = run([sys.executable, "-c", probe], env=env, timeout=60, check=True)
    assert done.stdout.strip() == "<none>"


def test_from_uri_takes_endpoint_from_env(s3, monkeypatch):
    """from_uri copies AWS_ENDPOINT_URL_S3 (preferred) or AWS_ENDPOINT_URL into endpoint_override;
    checked without any request, through the options the filesystem pickles."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    fs, _ = pafs.FileSystem.from_uri("s3://")
    assert fs.__reduce__()[1][0]["endpoint_override"] == s3.endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    fs, _ = pafs.FileSystem.from_uri("s3://")
    assert fs.__reduce__()[1][0]["endpoint_override"] == s3.endpoint


@pytest.mark.xfail(reason="pyarrow's S3FileSystem() ignores AWS_ENDPOINT_URL(_S3) "
                          "(apache/arrow#49643); only FileSystem.from_uri reads them", strict=False)
def test_s3filesystem_without_arguments_takes_endpoint_from_env(s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    assert pafs.S3FileSystem().__reduce__()[1][0]["endpoint_override"] == s3.endpoint


def test_server_runs_in_its_own_process_group_and_is_stopped():
    with s3_server() as server:
        pid = server.pid
        assert os.getpgid(pid) == pid != os.getpgid(0)
        assert server.make_bucket("lifecycle") == "s3://lifecycle"
        with pytest.raises(ValueError):
            server.make_bucket("Not_A_Bucket")
    assert server.proc.returncode is not None
    assert not pid_alive(pid)


ORPHAN = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from s3_server import s3_server
with s3_server() as server:
    print(server.pid, server.log_path, flush=True)
    time.sleep(120)
"""


def test_server_stops_when_the_process_that_started_it_is_killed():
    """SIGKILL to the test process leaves no moto server behind (PR_SET_PDEATHSIG)."""
    import subprocess
    from helpers import env_for_tests, kill_group, wait_for

    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, os.path.dirname(__file__)],
                            stdout=subprocess.PIPE, text=True, env=env_for_tests(),
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()      # pid and log file, once the server answers
        assert line.split()[:1] and line.split()[0].isdigit(), f"no server pid: {line!r}"
        server_pid, log_path = int(line.split()[0]), line.split()[1]
        assert pid_alive(server_pid)
        os.kill(proc.pid, 9)               # the starter only; the server is in its own group
        proc.wait(timeout=30)
        wait_for(lambda: not pid_alive(server_pid), timeout=30, what=f"server {server_pid} to exit")
        # the killed starter could not remove its temporary directory
        shutil.rmtree(os.path.dirname(log_path), ignore_errors=True)
    finally:
        kill_group(proc)                   # the starter's group (no-op once it is gone)
        proc.stdout.close()


def test_start_that_never_answers_fails_with_server_output_and_stops_it():
    """startup_timeout=0: the server cannot be up yet, so the start fails and cleans up."""
    with pytest.raises(RuntimeError, match="did not answer") as info:
        with s3_server(startup_timeout=0):
            pass   # pragma: no cover
    assert "--- server output ---" in str(info.value)
    assert not pid_alive(info.value.pid)
