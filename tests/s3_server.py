"""A real, local S3-compatible server for the tests: moto's server, run as a subprocess.

    with s3_server() as s3:                 # or the session-scoped pytest fixture `s3`
        s3.make_bucket("data")
        pq.write_table(table, "data/dir/part-0.parquet", filesystem=s3.filesystem())
        subprocess.run([...], env={**os.environ, **s3.env()})   # children reach it too

How pyarrow finds the server (checked with pyarrow 26):

* `pyarrow.fs.FileSystem.from_uri("s3://bucket/key")` -- and everything that takes an
  "s3://..." string (pq.read_table, pq.write_table, pyarrow.dataset.dataset) -- reads
  AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL. The scheme comes from the URL, so
  "http://127.0.0.1:PORT" gives plain HTTP; without a scheme pyarrow uses https.
  Setting an endpoint also switches to path-style requests and skips the region lookup.
* `pyarrow.fs.S3FileSystem()` with no arguments ignores both variables (and `endpoint_url`
  in an AWS config file), so it goes to real AWS. Use `FileSystem.from_uri("s3://")[0]`,
  `S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL_S3"])` or `filesystem()`.
* A URI can also carry everything itself, without any environment variable:
  "s3://KEY:SECRET@bucket/key?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1"
  (see `uri(..., self_contained=True)`); endpoint_override=http://127.0.0.1:PORT works too.

Always give pyarrow credentials (any will do). Without them -- anonymous=True, or no
AWS_ACCESS_KEY_ID anywhere -- the AWS SDK in pyarrow 26 sends uploads unsigned, as
"aws-chunked" bodies with a trailing checksum, and moto stores that framing verbatim: the
object is corrupt ("Parquet magic bytes not found"). AWS_REQUEST_CHECKSUM_CALCULATION=
when_required avoids it too, but credentials keep the requests like the real thing.

The server is moto: it keeps everything in memory and does not check signatures, credentials,
regions or bucket names, so a test passing here says nothing about IAM or naming rules.

A process that has used pyarrow's S3 must not fork (multiprocessing "fork") while S3 requests
run on other threads: the child deadlocks. fork+exec (subprocess) and "spawn" are fine.
An S3 output stream left open until interpreter exit hangs the exit (pyarrow finalizes S3 in
an atexit hook, then the stream's destructor waits forever for its upload): close writers.
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, Iterator, Optional

import pytest

DEFAULT_REGION = "us-east-1"
_HOST = "127.0.0.1"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# urllib would honour http_proxy/HTTPS_PROXY; the server is local, so never use a proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class S3Server:
    """A running server: where it is, how to reach it, and a few conveniences."""

    def __init__(self, proc: subprocess.Popen, port: int, region: str, log_path: str):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.host_port = f"{_HOST}:{port}"
        self.endpoint = f"http://{self.host_port}"
        # moto accepts any credentials; these only have to be present and consistent
        self.access_key = "mpipipe-test-access-key"
        self.secret_key = "mpipipe-test-secret-key"
        self.region = region
        self.log_path = log_path

    def env(self) -> Dict[str, str]:
        """Variables to add to a child's environment ({**os.environ, **s3.env()}) so that
        `pyarrow.fs.FileSystem.from_uri("s3://...")` in that child reaches this server."""
        return {
            # pyarrow prefers the S3-specific variable; older releases know only the other
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            # the AWS SDK for C++ reads AWS_REGION, older SDKs and tools AWS_DEFAULT_REGION
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # never ask an EC2 instance-metadata service for credentials or a region
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, **options):
        """An in-process pyarrow S3FileSystem for this server (no environment needed)."""
        import pyarrow.fs as pafs

        kwargs = dict(endpoint_override=self.endpoint, access_key=self.access_key,
                      secret_key=self.secret_key, region=self.region)
        kwargs.update(options)
        return pafs.S3FileSystem(**kwargs)

    def uri(self, path: str, self_contained: bool = False) -> str:
        """"s3://<path>"; with self_contained, the credentials go in the user-info part and the
        endpoint, scheme and region in the query string, so the URI works in a process that
        has none of the env() variables. (Credentials are needed: see the module docstring.)"""
        path = path.lstrip("/")
        if not self_contained:
            return "s3://" + path
        return (f"s3://{self.access_key}:{self.secret_key}@{path}"
                f"?endpoint_override={self.host_port}&scheme=http&region={self.region}")

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` (fine if it exists already); returns "s3://<name>".

        Done with a plain HTTP request rather than pyarrow, so that the calling process
        does not have to start pyarrow's S3 subsystem (AWS SDK threads, atexit finalizer).
        moto accepts any name, so the usual S3 naming rules are checked here."""
        if not _BUCKET_NAME.match(name) or ".." in name:
            raise ValueError(f"not a valid S3 bucket name: {name!r}")
        body = b""
        if self.region != "us-east-1":
            body = ('<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    f"<LocationConstraint>{self.region}</LocationConstraint>"
                    "</CreateBucketConfiguration>").encode()
        request = urllib.request.Request(f"{self.endpoint}/{name}", data=body, method="PUT")
        try:
            with _DIRECT.open(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            if "BucketAlreadyOwnedByYou" not in detail:
                raise RuntimeError(f"creating bucket {name!r} failed: HTTP {e.code}: {detail}")
        return f"s3://{name}"

    def log(self) -> str:
        """What the server printed so far (werkzeug logs one line per request)."""
        return _read_tail(self.log_path)

    def __repr__(self) -> str:
        return f"S3Server(endpoint={self.endpoint!r}, pid={self.pid}, region={self.region!r})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return s.getsockname()[1]


def _read_tail(path: str, limit: int = 20000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return data[-limit:].decode(errors="replace")


def _answers(endpoint: str) -> bool:
    """True once the server answers a ListBuckets request (moto's reply to GET /)."""
    try:
        with _DIRECT.open(f"{endpoint}/", timeout=2) as response:
            return response.status == 200 and b"ListAllMyBucketsResult" in response.read()
    except (OSError, ValueError):   # refused, reset, timed out, HTTP errors: not ready yet
        return False


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after `grace`.

    start_new_session=True made the server the leader of its own group (pgid == pid). A
    group is signalled only while the leader has not been reaped (returncode is None):
    until then its pid, and so the group id, cannot belong to anything else."""
    if proc.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"S3 server pid {proc.pid} did not exit after SIGKILL")


# moto's `moto_server` command, run so that it also stops if the test process dies without
# cleaning up (SIGKILL, a crash): on Linux the kernel sends it SIGTERM when its parent exits.
# (PR_SET_PDEATHSIG follows the parent *thread*: start servers from a thread that lives on.)
_LAUNCHER = """\
import os, runpy, signal, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process that started this server is gone")
sys.argv = ["moto_server"] + sys.argv[2:]
runpy.run_module("moto.server", run_name="__main__", alter_sys=True)
"""


def _start(workdir: str, region: str, timeout: float) -> S3Server:
    port = _free_port()
    log_path = os.path.join(workdir, f"moto-{port}.log")
    env = dict(os.environ, MOTO_PORT=str(port), PYTHONUNBUFFERED="1")
    # Never let the server see real credentials or an endpoint pointing at itself
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), "-H", _HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=workdir, env=env, start_new_session=True)
    server = S3Server(proc, port, region, log_path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise _StartFailed(f"S3 server (moto) exited with status {proc.returncode} "
                                   f"before answering on {server.endpoint}", server.log(), proc.pid)
            # the second poll(): a reply is only ours if our server is still running
            if _answers(server.endpoint) and proc.poll() is None:
                return server
            if time.monotonic() > deadline:
                raise _StartFailed(f"S3 server (moto) did not answer on {server.endpoint} "
                                   f"within {timeout:.0f}s", server.log(), proc.pid)
            time.sleep(0.1)
    except BaseException:
        _stop(proc, grace=5.0)
        raise


class _StartFailed(RuntimeError):
    def __init__(self, message: str, log: str, pid: int):
        super().__init__(f"{message}\n--- server output ---\n{log}")
        self.log = log
        self.pid = pid


@contextlib.contextmanager
def s3_server(region: str = DEFAULT_REGION, startup_timeout: float = 30.0,
              stop_grace: float = 5.0, attempts: int = 3) -> Iterator[S3Server]:
    """Start moto's S3 server on a free 127.0.0.1 port, yield an S3Server, stop it on exit.

    The free port is found by binding port 0 and closing the socket, so another process can
    take it before the server binds it; a start that fails with "Address already in use" is
    retried on a new port (up to `attempts` times)."""
    workdir = tempfile.mkdtemp(prefix="mpipipe-s3-")
    server: Optional[S3Server] = None
    try:
        for attempt in range(1, attempts + 1):
            try:
                server = _start(workdir, region, startup_timeout)
                break
            except _StartFailed as e:
                if attempt == attempts or "Address already in use" not in e.log:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            _stop(server.proc, stop_grace)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3 server for the whole test session; tests should use their own bucket names.

    Register it with `from s3_server import s3  # noqa: F401` in tests/conftest.py."""
    with s3_server() as server:
        yield server
