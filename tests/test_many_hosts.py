"""Worlds across fake hosts: MPICH over three network-namespace hosts with a hostfile, and a 2-node SLURM
cluster whose nodes are namespaces.

MPICH: h1 runs rank 0 only (the hostfile's first line); h2 has two executor ranks on the machine's cores; h3
has two executor ranks in cgroups that allow 1 core and 1 GiB. SLURM: 2 nodes x 2 tasks, 1 CPU per task and
1 GiB per node. Each run must give what a local run gives, never hold more of a host than it has (h2's two
ranks never run two cpu(cores=2) tasks at once), and each rank must offer what its allocation allows.
tests/netns_hosts.py makes the hosts and the cluster; everything it makes is removed at the end of the
module, also when a test fails.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from helpers import BIN, env_for_tests, run
from netns_hosts import FakeHosts, Limits, SlurmOnFakeHosts, ensure_available, new_tag, slurm_available

PIPELINE = '''
"""Word counts (compared with a local run), tasks of cpu(cores=2) that say where and when they ran, plain tasks."""
import collections
import json
import os
import random
import socket
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def text(task):
    rng = random.Random(task.partition)
    with open(os.path.join(task.output_dir, "shard.txt"), "w") as f:
        f.write(" ".join(rng.choice(WORDS) for _ in range(2000)))
    return task.partition


def count(task):
    counts = collections.Counter()
    for d in task.input_paths:
        with open(os.path.join(d, "shard.txt")) as f:
            counts.update(f.read().split())
    with open(os.path.join(task.output_dir, "counts.json"), "w") as f:
        json.dump(counts, f, sort_keys=True)
    return sum(counts.values())


def merge(task):
    total = collections.Counter()
    for d in task.input_paths:
        with open(os.path.join(d, "counts.json")) as f:
            total.update(json.load(f))
    with open(os.path.join(task.output_dir, "total.json"), "w") as f:
        json.dump(total, f, sort_keys=True)
    return sum(total.values())


def where(task):
    return {"host": socket.gethostname(), "rank": task.rank, "host_executors": task.host_executors,
            "share": list(task.host_share()), "threads": os.environ.get("OMP_NUM_THREADS")}


def busy(task):
    t0 = time.time()
    time.sleep(0.5)
    return dict(where(task), t0=t0, t1=time.time())


driver = Driver()
driver.add_argument("--busy-cores", type=int, default=2)
args = driver.get_arguments()
ctx = Context()
shards = ComputeNode(ctx, text, npartitions=8, name="text")
counts = ComputeNode(ctx, count, inputs=[shards], npartitions=8, pointwise=True, name="count")
total = ComputeNode(ctx, merge, inputs=[counts], npartitions=1, name="merge")
cores2 = ComputeNode(ctx, busy, npartitions=6, name="busy", resources=f"cpu(cores={args['busy_cores']})")
plain = ComputeNode(ctx, where, npartitions=8, name="where")
result = driver.run(LogicalPlan(ctx, [total, cores2, plain]))
if result is not None:
    out = {n: result.values(n) for n in ("busy", "where", "merge")}
    out["total"] = os.path.join(result.outputs("merge")[0], "total.json")
    out["job_dir"] = result.job_dir
    print("RESULT " + json.dumps(out))
'''

SLOTS = {"h1": 1, "h2": 2, "h3": 2}
H3 = Limits(cpu_quota=1.0, memory=1 << 30)


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    ok, why = ensure_available()
    if not ok:
        pytest.skip(why)
    fake = FakeHosts(tmp_path_factory.mktemp("hosts"), list(SLOTS), limits={"h3": H3})
    try:
        fake.up()
        yield fake
    finally:
        fake.down()
        assert fake.leftovers() == []


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "many_hosts.py"
    path.write_text(PIPELINE)
    return str(path)


def _across(hosts: FakeHosts, script: str, data_root: str, *extra: str, iface: bool = True, timeout: float = 240):
    launcher = f"-launcher ssh -launcher-exec {hosts.standin}"
    args = ["--platform", "mpi", "--hostfile", hosts.hostfile(SLOTS), "--data-root", data_root,
            "--mpiexec-args", (f"-iface {hosts.bridge} " if iface else "") + launcher, *extra]
    return run([sys.executable, script, *args], timeout=timeout)


@pytest.fixture(scope="module")
def local(script, tmp_path_factory):
    """The same pipeline on the local platform: what every run across hosts must give."""
    done = run([sys.executable, script, "--platform", "local", "--num-executors", "2", "--data-root",
                str(tmp_path_factory.mktemp("local"))], timeout=180)
    assert done.returncode == 0, done.stderr
    return _result(done.stdout)


def _job(out: dict) -> dict:
    with open(os.path.join(out["job_dir"], "job.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def world(hosts, script, local, tmp_path_factory):
    """One run across the hosts (h2's memory set by a host-name entry of --hosts)."""
    root = str(tmp_path_factory.mktemp("jobs"))
    t0 = time.monotonic()
    done = _across(hosts, script, root, "--hosts", "h2=cpu(mem=2GiB)")
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    out = _result(done.stdout)
    return {"out": out, "local": local, "job": _job(out), "seconds": seconds, "stderr": done.stderr}


@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_the_world_spans_the_hosts_and_gives_what_a_local_run_gives(world):
    out, job = world["out"], world["job"]
    with open(out["total"]) as a, open(world["local"]["total"]) as b:
        assert json.load(a) == json.load(b)
    assert out["merge"] == world["local"]["merge"] == [16000]
    assert job["host"] == "h1"  # rank 0 lands on the hostfile's first host
    assert {r: d["host"] for r, d in job["hosts"].items()} == {"1": "h2", "2": "h2", "3": "h3", "4": "h3"}
    assert {r["host"] for r in out["where"]} <= {"h2", "h3"}


@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_no_host_runs_more_than_it_has(world):
    """h3 allows 1 core: every cpu(cores=2) task runs on h2, and h2's two ranks take turns."""
    busy = world["out"]["busy"]
    assert {b["host"] for b in busy} == {"h2"} and len(busy) == 6
    spans = sorted((b["t0"], b["t1"]) for b in busy)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.01, spans  # never two at once on one 2-core host
    assert all(b["threads"] == "2" for b in busy)


@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_each_rank_offers_its_allocation(world):
    hosts = world["job"]["hosts"]
    for rank in ("3", "4"):  # cgroups: 1 core of quota, 1 GiB
        h = hosts[rank]
        assert (h["cores"], h["memory"]) == (1, 1 << 30), h
        assert "cgroup" in h["limits"]["cores"] and "cgroup" in h["limits"]["memory"], h["limits"]
    cores = len(os.sched_getaffinity(0))
    for rank in ("1", "2"):  # the machine's cores; memory from `--hosts h2=cpu(mem=2GiB)`, shared by the host
        h = hosts[rank]
        assert (h["cores"], h["memory"], h["overridden"]) == (cores, 2 << 30, "host"), h
    assert hosts["1"]["pools"] == hosts["2"]["pools"]
    assert hosts["1"]["host_id"] != hosts["3"]["host_id"]


@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_a_task_knows_how_many_executors_share_its_host(world):
    for r in world["out"]["where"] + world["out"]["busy"]:
        assert r["host_executors"] == 2, r
        if r["host"] == "h3":
            assert r["share"] == [1, 512 << 20], r  # 1 GiB between two ranks
        else:
            assert r["share"] == [max(1, len(os.sched_getaffinity(0)) // 2), 1 << 30], r


@pytest.mark.mpi
@pytest.mark.timeout(420)
def test_status_elsewhere_shows_rank_0s_host(world):
    done = run([os.path.join(BIN, "mpipipe"), "status", world["out"]["job_dir"]], timeout=60)
    assert done.returncode == 0, done.stderr
    assert ": succeeded," in done.stdout and "rank 0 on h1" in done.stdout


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_a_loopback_hostname_is_found_before_launching(hosts, script, tmp_path):
    here = socket.gethostname()
    try:
        loopback = all(a[4][0].startswith("127.") or a[4][0] == "::1" for a in socket.getaddrinfo(here, None))
    except OSError:
        loopback = False
    if not loopback:
        pytest.skip(f"this host's name {here} resolves to a routable address")
    t0 = time.monotonic()
    done = _across(hosts, script, str(tmp_path), iface=False, timeout=120)
    assert done.returncode == 2, done.stderr
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("mpipipe: error:")]
    assert len(line) == 1 and "loopback" in line[0] and "-iface IFACE" in line[0] and "HYDRA_IFACE" in line[0]
    assert time.monotonic() - t0 < 60 and not os.listdir(tmp_path)  # nothing was started


# --- SLURM: two nodes, each a fake host ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    ok, why = slurm_available()
    if not ok:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("slurm")
    tag = new_tag()
    nodes = FakeHosts(folder / "hosts", [f"sl{tag}a", f"sl{tag}b"], tag=tag)
    cluster = SlurmOnFakeHosts(nodes, folder / "cluster")
    try:
        nodes.up()
        cluster.up()
        yield nodes, cluster
    finally:
        try:
            cluster.down()
        finally:
            nodes.down()
        assert cluster.leftovers() == [] and nodes.leftovers() == []


def _on_slurm(cluster: SlurmOnFakeHosts, script: str, data_root: str, *extra: str):
    args = ["--platform", "slurm", "--nodes", "2", "--ntasks-per-node", "2", "--cpus-per-task", "1", "--mem", "1G",
            "--time", "10", "--slurm-poll-interval", "1", "--data-root", data_root, *extra]
    return run([sys.executable, script, *args], timeout=300, env=env_for_tests(cluster.env()))


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_a_slurm_job_on_two_nodes_offers_its_allocation(slurm, script, local, tmp_path):
    nodes, cluster = slurm
    done = _on_slurm(cluster, script, str(tmp_path), "--busy-cores", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    out = _result(done.stdout)
    with open(out["total"]) as a, open(local["total"]) as b:
        assert json.load(a) == json.load(b)
    job = _job(out)
    a, b = nodes.names
    assert job["host"] == a and {r: d["host"] for r, d in job["hosts"].items()} == {"1": a, "2": b, "3": b}
    for rank, h in job["hosts"].items():  # the machine has more; the job has 1 CPU per task and 1 GiB per node
        assert (h["cores"], h["memory"]) == (1, 1 << 30), h
        assert h["limits"]["cores"] == "SLURM_CPUS_PER_TASK=1" and h["pools"]["cores"] == "rank", h
        assert h["pools"]["memory"].startswith("slurm job "), h
    shares = {(r["host"], r["host_executors"], tuple(r["share"])) for r in out["where"] + out["busy"]}
    assert shares <= {(a, 1, (1, 1 << 30)), (b, 2, (1, 512 << 20))}, shares


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_a_slurm_job_refuses_what_its_allocation_cannot_hold(slurm, script, tmp_path):
    """Two cores for a task where each rank has 1 CPU: refused before anything runs, with every rank's host."""
    nodes, cluster = slurm
    done = _on_slurm(cluster, script, str(tmp_path), "--busy-cores", "2")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "'busy' needs cpu(cores=2)" in text and "which no executor can serve" in text, text


# --- status from another host, and the cleanup (no namespaces needed) ---------------------------------------

def _job_dir(tmp_path: Path, host: str, state_age: float, status: str = "running") -> str:
    (tmp_path / "job.json").write_text(json.dumps({"job_id": "j", "platform": "mpi", "executors": 2, "host": host,
                                                   "nodes": [{"name": "n", "npartitions": 2}]}))
    (tmp_path / "journal.log").write_text("")
    state = {"status": status, "time": time.time() - state_age, "nodes": {"n": {"running": 2}}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    past = time.time() - state_age
    os.utime(tmp_path / "state.json", (past, past))
    return str(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host,age,running", [("elsewhere", 1.0, True), ("elsewhere", 120.0, False),
                                              (None, 1.0, False)])
def test_status_decides_running_from_the_heartbeat_when_rank_0_is_elsewhere(tmp_path, host, age, running):
    """No lock is visible from here; a fresh state.json written on another host says rank 0 runs there.
    On rank 0's own host the lock decides (a killed job's last state.json says nothing)."""
    from mpipipe.cli import _job_status

    st = _job_status(_job_dir(tmp_path, host or socket.gethostname(), age))
    assert (st["status"] == "running") is running, st["status"]
    assert st["nodes"]["n"]["running"] == (2 if running else 0)
    assert abs(st["heartbeat"] - age) < 5


@pytest.mark.timeout(120)
def test_fake_hosts_are_removed_even_when_a_test_fails(tmp_path):
    ok, why = ensure_available()
    if not ok:
        pytest.skip(why)
    fake = FakeHosts(tmp_path, ["a1", "a2"], limits={"a2": Limits(cpu_quota=0.5, memory=256 << 20)})
    with pytest.raises(RuntimeError):
        try:
            fake.up()
            sleeper = fake.run_on("a2", ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
            assert sleeper.stdout.strip().isdigit(), sleeper
            assert int(sleeper.stdout) in fake.pids()
            raise RuntimeError("a test failed here")
        finally:
            fake.down()
    assert fake.leftovers() == [] and fake.pids() == []
    assert not os.path.exists(f"/proc/{sleeper.stdout.strip()}/stat") or \
        open(f"/proc/{sleeper.stdout.strip()}/stat").read().split(")")[-1].split()[0] == "Z"

