"""Integration test of scripts/slurm-up and scripts/slurm-down.

Brings a real single-node SLURM cluster up in a temporary directory (on its
own ports, so it can run next to a cluster in the default .slurm directory),
runs batch and MPI (pmi2) jobs on it, checks that slurm-up and slurm-down are
idempotent and that slurm-down leaves no daemon behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

try:
    from slurm_cluster import (REPO, daemon_pids, free_ports, pid_running,
                               slurm_available, start_cluster, stop_cluster)
except ImportError:  # tests/ is a package
    from tests.slurm_cluster import (REPO, daemon_pids, free_ports,
                                     pid_running, slurm_available,
                                     start_cluster, stop_cluster)

pytestmark = pytest.mark.slurm

_AVAILABLE, _REASON = slurm_available()
if not _AVAILABLE:
    pytestmark = [pytest.mark.slurm,
                  pytest.mark.skip(reason=f"no local SLURM cluster: {_REASON}")]


def _run(cmd, env, timeout=30.0, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          check=check)


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _job_done(job_id: str, env) -> bool:
    # squeue lists pending/running/completing jobs only: empty means finished.
    return _run(["squeue", "-h", "-j", job_id, "-o", "%T"], env).stdout.strip() == ""


def _job_state(job_id: str, env) -> str:
    out = _run(["scontrol", "show", "job", job_id], env).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


@pytest.fixture(scope="module")
def cluster(request):
    # Not pytest's tmp_path: pytest deletes old basetemp directories when
    # other pytest runs start, which would pull the state, spool and pid files
    # from under a running cluster.  .slurm/ is git-ignored.
    parent = REPO / ".slurm" / "test-clusters"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="c-", dir=parent)).resolve()
    ctld_port, slurmd_port = free_ports(2)
    extra = {"MPIPIPE_SLURM_CTLD_PORT": str(ctld_port),
             "MPIPIPE_SLURM_SLURMD_PORT": str(slurmd_port)}
    failed_before = request.session.testsfailed
    try:
        env = start_cluster(directory, extra_env=extra)
        yield directory, env, extra
    finally:
        stop_cluster(directory, extra_env=extra)
    if request.session.testsfailed == failed_before:
        shutil.rmtree(directory, ignore_errors=True)  # keep the logs of failures


def test_up_writes_env_and_node_is_idle(cluster):
    directory, env, _ = cluster
    conf = directory / "slurm.conf"
    assert env["SLURM_CONF"] == str(conf)
    assert (directory / "env").read_text().strip() == f"export SLURM_CONF={conf}"
    host = _run(["hostname", "-s"], env).stdout.strip()
    out = _run(["sinfo", "-h", "-N", "-o", "%N %T %c"], env).stdout.split()
    assert out == [host, "idle", "8"], out
    pids = daemon_pids(directory)
    assert pid_running(pids["slurmctld"], "slurmctld")
    assert pid_running(pids["slurmd"], "slurmd")


def test_sbatch_wrap(cluster):
    directory, env, _ = cluster
    output = directory / "hello.out"
    job_id = _run(["sbatch", "--parsable", f"--output={output}",
                   "--wrap", "echo hello"], env).stdout.strip().split(";")[0]
    assert job_id.isdigit(), job_id
    _wait_for(lambda: _job_done(job_id, env), 60, f"job {job_id} to finish")
    assert _job_state(job_id, env) == "COMPLETED"
    assert output.read_text().strip() == "hello"


def test_srun_pmi2(cluster):
    _, env, _ = cluster
    host = _run(["hostname", "-s"], env).stdout.strip()
    out = _run(["srun", "--mpi=pmi2", "-n", "2", "hostname", "-s"], env, timeout=60)
    assert out.stdout.splitlines() == [host, host], out
    # The pmi2 plugin really is active: each task sees its PMI rank and size.
    out = _run(["srun", "--mpi=pmi2", "-n", "2", "bash", "-c",
                'echo "$PMI_RANK/$PMI_SIZE"'], env, timeout=60)
    assert sorted(out.stdout.split()) == ["0/2", "1/2"], out


@pytest.mark.slow
def test_requeue_and_signal_before_time_limit(cluster):
    """--requeue jobs restart after scontrol requeue (~30 s with cred_expire=30);
    --signal=B:USR1@30 reaches the batch shell before the time limit."""
    directory, env, _ = cluster
    script = directory / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "trap 'echo got USR1; exit 0' USR1\n"
        'echo "start ${SLURM_RESTART_COUNT:-0}"\n'
        "for i in $(seq 300); do sleep 1; done\n"
        "echo no signal\n")
    script.chmod(0o755)
    rq_out, sig_out = directory / "requeue.out", directory / "signal.out"
    rq = _run(["sbatch", "--parsable", "--requeue", "--open-mode=append",
               f"--output={rq_out}", str(script)], env).stdout.strip()
    sig = _run(["sbatch", "--parsable", "--time=1", "--signal=B:USR1@30",
                f"--output={sig_out}", str(script)], env).stdout.strip()
    try:
        _wait_for(lambda: rq_out.exists() and "start 0" in rq_out.read_text(),
                  30, "the requeue job to start")
        _run(["scontrol", "requeue", rq], env)
        _wait_for(lambda: "start 1" in rq_out.read_text(), 120,
                  "the requeued job to start again")
        _wait_for(lambda: _job_done(sig, env), 120, "the signalled job to end")
        text = sig_out.read_text()
        assert "got USR1" in text and "no signal" not in text, text
        assert _job_state(sig, env) == "COMPLETED"
    finally:
        _run(["scancel", rq, sig], env, check=False)


def test_up_again_is_idempotent(cluster):
    directory, env, extra = cluster
    before = daemon_pids(directory)
    t0 = time.monotonic()
    env2 = start_cluster(directory, extra_env=extra, timeout=60)
    assert time.monotonic() - t0 < 10
    assert env2["SLURM_CONF"] == env["SLURM_CONF"]
    assert daemon_pids(directory) == before
    assert all(pid_running(p) for p in before.values())


def test_down_stops_everything_and_is_idempotent(cluster):
    directory, env, extra = cluster
    pids = daemon_pids(directory)
    assert {"slurmctld", "slurmd"} <= pids.keys()
    # Leave a job running: slurm-down must cancel it.
    sleeper = directory / "sleeper.pid"
    _run(["sbatch", "--parsable", "--output=/dev/null", "--wrap",
          f"echo $$ > {sleeper}.tmp && mv {sleeper}.tmp {sleeper} && exec sleep 600"],
         env)
    _wait_for(sleeper.exists, 30, "the sleep job to start")
    pids["job"] = int(sleeper.read_text())
    assert pid_running(pids["job"], "sleep")

    log = stop_cluster(directory, extra_env=extra)
    if "still used by Slurm daemons" in log:
        # Another cluster on this machine shares the munged we started; it is
        # handed over to that cluster (or left running), not stopped.
        pids.pop("munged", None)
    for name, pid in pids.items():
        assert not pid_running(pid), f"{name} {pid} still running:\n{log}"
    assert not list((directory / "run").glob("*.pid"))
    assert not (directory / "env").exists()
    assert (directory / "log" / "slurmctld.log").is_file()
    # Nothing listens on the cluster's ports any more.
    for port in extra.values():
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.settimeout(5)
            s.connect(("127.0.0.1", int(port)))

    stop_cluster(directory, extra_env=extra)  # nothing running: still fine
