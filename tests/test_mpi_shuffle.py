"""Shuffles over MPI (--shuffle mpi): which shuffles move rank to rank, where their buckets live on a rank
(memory, or local disk past the budget), and real runs under mpiexec compared row for row with the files
shuffle: every kind of reader, faults, a spill to disk, a run that stops and is run again, and the local
platform, where files are used."""
from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BIN, REPO, env_for_tests, kill_tree, mpiexec, python, wait_for
from journal_tools import records
from table_tools import assert_rows
from test_shuffle_files import UNORDERED, _table
from mpipipe.config import build_config
from mpipipe.data.buckets import bucket_folders_of, reader_of
from mpipipe.errors import ConfigError, PlanError
from mpipipe.execution.journal import read_records
from mpipipe.execution import shuffle_store
from mpipipe.execution.shuffle_store import ShuffleStore, sweep_dead
from mpipipe.logical import (Context, DataSinkNode, DataSourceNode, HashPartitionNode, LimitNode, LogicalPlan,
                             ParquetDataSet, PythonScriptNode, RootNode, SqlEngineNode)
from mpipipe.logical.shuffles import choose_transports, owner_rank, shuffle_exchange

FILES_SCRIPT = os.path.join(REPO, "tests", "pipelines", "shuffle_files.py")
SCRIPT = os.path.join(REPO, "tests", "pipelines", "mpi_shuffle.py")


def _rows(n: int, seed: int, first: int = 0) -> pa.Table:
    """test_shuffle_files' table (ids, keys, floats, strings with nulls, binary) with ids first..first+n-1."""
    return _table(n, seed).set_column(0, "id", pa.array(range(first, first + n), pa.int64()))


@pytest.fixture()
def inputs(tmp_path):
    os.makedirs(tmp_path / "in")
    for i in range(3):
        pq.write_table(_rows(1500, i, i * 1500), str(tmp_path / "in" / f"p{i}.parquet"), row_group_size=400)
    return str(tmp_path / "in" / "*.parquet")


# --- which shuffles move over MPI -------------------------------------------------------------------


def _plan(tmp_path, **hash_options):
    pq.write_table(_rows(100, 1), str(tmp_path / "a.parquet"))
    pq.write_table(_rows(100, 2, 100), str(tmp_path / "b.parquet"))
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([str(tmp_path / "*.parquet")]))
    hashed = HashPartitionNode(ctx, (src,), 4, ["key"], **hash_options)
    grouped = SqlEngineNode(ctx, (hashed,), "SELECT key, count(*) AS n FROM {0} GROUP BY key",
                            partial_aggregate=False)
    return ctx, src, hashed, grouped


def test_a_shuffle_only_the_plan_reads_moves_and_its_readers_are_pinned(tmp_path):
    ctx, _src, hashed, grouped = _plan(tmp_path)
    sink = DataSinkNode(ctx, (grouped,), str(tmp_path / "out"))
    plan = LogicalPlan(ctx, RootNode(ctx, [sink]))
    assert choose_transports(plan, "mpi", mpi_world=True) == {grouped.id}
    assert hashed.shuffle_transport == "mpi"
    exchange = shuffle_exchange(plan.nodes)
    assert exchange["senders"] == {hashed.id: {"name": hashed.name, "nbuckets": 4, "nested": False,
                                               "split": hashed.map_split}}
    assert exchange["readers"] == {grouped.id: [(0, hashed.id)]}
    assert choose_transports(plan, "files", mpi_world=True) == set() and hashed.shuffle_transport == "files"


@pytest.mark.parametrize("why", ["not an MPI world", "plan root", "named", "reader takes all buckets",
                                 "reader reads paths", "reader placed", "node says files"])
def test_a_shuffle_keeps_files_when_buckets_cannot_stay_where_they_are_read(tmp_path, why):
    options = {"name": "mine"} if why == "named" else {"shuffle": "files"} if why == "node says files" else {}
    ctx, _src, hashed, grouped = _plan(tmp_path, **options)
    if why == "plan root":
        root = hashed
    elif why == "reader takes all buckets":
        root = LimitNode(ctx, (hashed,), 3)
    elif why == "reader reads paths":
        root = PythonScriptNode(ctx, (hashed,), process_func=lambda rt, inputs, out: True)
    elif why == "reader placed":
        root = SqlEngineNode(ctx, (hashed,), "SELECT * FROM {0}", cpus=1)
    else:
        root = grouped
    plan = LogicalPlan(ctx, root)
    assert choose_transports(plan, "mpi", mpi_world=why != "not an MPI world") == set()
    assert {n.shuffle_transport for n in plan.nodes if hasattr(n, "nbuckets")} == {"files"}
    assert shuffle_exchange(plan.nodes) is None


def test_a_node_may_ask_for_mpi_when_the_job_says_files(tmp_path):
    ctx, _src, _hashed, grouped = _plan(tmp_path, shuffle="mpi")
    plan = LogicalPlan(ctx, SqlEngineNode(ctx, (grouped,), "SELECT * FROM {0}"))
    assert choose_transports(plan, "files", mpi_world=True) == {grouped.id}
    assert [n.shuffle_transport for n in plan.nodes if hasattr(n, "nbuckets")] == ["mpi"]


def test_the_dataframe_api_takes_the_choice_per_shuffle(tmp_path, monkeypatch):
    import mpipipe

    monkeypatch.setenv("SP_EARLY_START", "0")  # no executors: nothing runs here
    sp = mpipipe.init(platform="local")
    df = sp.from_arrow(pa.table({"x": list(range(10))}))
    assert df.repartition(3, hash_by="x", shuffle="mpi").node.shuffle == "mpi"
    assert df.repartition(3, by="x % 3", shuffle="files").node.shuffle == "files"
    assert df.repartition(3, hash_by="x").node.shuffle is None  # the job's --shuffle
    with pytest.raises(PlanError, match="shuffle"):
        df.repartition(3, shuffle="mpi")  # a split by files or rows moves no buckets


def test_bad_shuffle_values_are_refused(tmp_path):
    with pytest.raises(PlanError, match="shuffle must be 'files' or 'mpi'"):
        _plan(tmp_path, shuffle="memory")
    with pytest.raises(ConfigError, match="expected one of files, mpi"):
        build_config({"shuffle": "rdma"})
    with pytest.raises(ConfigError, match="size such as 4GB"):
        build_config({"shuffle_memory": "lots"})
    assert build_config({"shuffle": "MPI", "shuffle_memory": "2GiB"}).shuffle_memory == 2 << 30


@pytest.mark.parametrize("nested,split", [(False, 1), (False, 3), (True, 1), (True, 2)])
def test_each_bucket_goes_to_the_rank_of_the_partition_that_reads_it(nested, split):
    nb, inputs = 4, 3
    paths = [f"/o/part-{t}" for t in range(inputs * split)]
    readers = nb * inputs if nested else nb
    read_by = {}
    for q in range(readers):
        for folder in bucket_folders_of(paths, q, nb, nested, split):
            read_by.setdefault(folder, []).append(q)
    for t, path in enumerate(paths):
        for b in range(nb):
            folder = f"{path}/__mpipipe_bucket={b}"
            if folder in read_by:
                assert read_by[folder] == [reader_of(t, b, nb, nested, split)]
    assert sum(len(v) for v in read_by.values()) == len(read_by)  # every bucket has one reader
    assert [owner_rank(q, 4) for q in range(5)] == [1, 2, 3, 1, 2]


# --- a rank's store --------------------------------------------------------------------------------


def _store(tmp_path, budget, monkeypatch):
    monkeypatch.setattr(shuffle_store, "MEMORY_BASE", str(tmp_path / "shm"))
    os.makedirs(tmp_path / "shm")
    store = ShuffleStore.for_rank(str(tmp_path / "job"), f"job.1.r1.{os.getpid()}", budget, str(tmp_path / "disk"))
    store.prepare()
    return store


def _write(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def test_the_store_keeps_buckets_in_memory_up_to_its_budget_then_on_disk(tmp_path, monkeypatch):
    store = _store(tmp_path, 1000, monkeypatch)
    out = str(tmp_path / "job" / "outputs" / "hash" / "part-0")
    staging = store.staging(store.tier_for(600), "a")
    assert staging.startswith(store.memory_root)
    os.makedirs(os.path.join(staging, "__mpipipe_bucket=0"))
    _write(os.path.join(staging, "__mpipipe_bucket=0"), "data_0.arrow", b"x" * 600)
    here = store.publish(staging, out)
    assert here == store.local(out) and not os.path.islink(here) and store.memory_used() == 600
    # past the budget: the bytes go to disk, reached through a link where the path says
    bucket = os.path.join(out, "__mpipipe_bucket=1")
    staging = store.staging(store.tier_for(600), "b")
    assert staging.startswith(store.disk_root)
    _write(staging, "data_0.arrow", b"y" * 600)
    here = store.publish(staging, bucket)
    assert os.path.islink(here) and os.path.realpath(here).startswith(os.path.realpath(store.disk_root))
    with open(os.path.join(store.resolve(bucket), "data_0.arrow"), "rb") as f:
        assert f.read() == b"y" * 600
    assert store.memory_used() == 600
    # a path written to the job directory by a run before (a files shuffle) is read where it is
    old = str(tmp_path / "job" / "outputs" / "hash" / "part-7")
    os.makedirs(old)
    assert store.resolve(old) == old and store.resolve(out) == store.local(out)
    store.remove(bucket)
    assert not os.path.lexists(store.local(bucket)) and not os.listdir(os.path.join(store.disk_root, "hash", "part-0"))
    store.close()
    assert not os.path.exists(store.memory_root) and not os.path.exists(store.disk_root)


def test_a_store_without_budget_is_all_on_disk(tmp_path, monkeypatch):
    store = _store(tmp_path, 0, monkeypatch)
    assert store.memory_root is None and store.tier_for(1) == store.disk_root


def test_stores_of_ranks_that_died_are_removed_and_others_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(shuffle_store, "MEMORY_BASE", str(tmp_path / "shm"))
    base = tmp_path / "shm" / f"mpipipe-shuffle-{os.getuid()}"
    done = python("-c", "import os; print(os.getpid())")  # a pid that is gone now
    dead, alive = base / f"job.1.r1.{done.stdout.strip()}", base / f"job.1.r2.{os.getpid()}"
    for d in (dead, alive):
        os.makedirs(d / "hash")
    sweep_dead(str(tmp_path / "disk"))
    assert not dead.exists() and alive.exists()


# --- real runs -------------------------------------------------------------------------------------


def _env(tmp_path, job, shuffle, **extra):
    env = env_for_tests({"SP_PROGRESS_INTERVAL": "0", "SP_DATA_ROOT": str(tmp_path / "jobs"), "SP_JOB_ID": job,
                         "SP_SHUFFLE": shuffle, "SP_SHUFFLE_SPILL_DIR": str(tmp_path / "spill")})
    env.update(extra)
    return env


def _tables(out):
    return {os.path.basename(p): pq.read_table(p) for p in glob.glob(os.path.join(out, "*.parquet"))}


def _same(got, want, what):
    assert sorted(got) == sorted(want) and want, what
    for name, table in sorted(want.items()):
        assert table.num_rows > 0, name
        assert_rows(got[name], table, ordered=name not in UNORDERED, what=f"{what}: {name}")


def _no_store_left(job):
    for base in ("/dev/shm", "/tmp"):
        assert not glob.glob(os.path.join(base, f"mpipipe-shuffle-{os.getuid()}", f"{job}.*")), base


def test_every_reader_gets_the_same_rows_over_mpi_as_from_files(tmp_path, inputs):
    results = {}
    for mode, extra in (("files", {}), ("mpi", {}), ("spill", {"SP_SHUFFLE_MEMORY": "1"}),
                        ("faults", {"SP_INJECT_FAULTS": "rate=0.5,kinds=kill+segfault+exception,seed=3"})):
        out = str(tmp_path / f"out-{mode}")
        for part in ("plan", "dataframe"):
            job = f"{part}-{mode}"
            env = _env(tmp_path, job, "files" if mode == "files" else "mpi", **extra)
            done = mpiexec(4, FILES_SCRIPT, inputs, out, part, env=env, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            if mode == "faults":
                assert int(re.search(r"(\d+) retried", done.stderr).group(1)) > 0, done.stderr[-3000:]
            _no_store_left(job)
        outputs = os.listdir(tmp_path / "jobs" / f"plan-{mode}" / "outputs")
        # the buckets read the plain way never reach the job directory; the limit reads every bucket: files
        assert ("user_partition" in outputs) == (mode == "files") and "hash_partition" in outputs
        assert ("column_partition" in os.listdir(tmp_path / "jobs" / f"dataframe-{mode}" / "outputs")) == \
            (mode == "files")
        logs = "".join(open(p).read() for p in glob.glob(str(tmp_path / "jobs" / f"*-{mode}" / "logs" / "rank-*" /
                                                             "executor.log")))
        if mode != "files":
            sent = [int(n) for n in re.findall(r"shuffle: sent (\d+) bucket", logs)]
            assert sum(sent) > 0, logs[-3000:]
            # once a shuffle's readers are done, every rank frees its buckets
            assert len(re.findall(r"dropped the buckets of .*user_partition", logs)) == 3, logs[-3000:]
        if mode == "spill":
            assert sum(int(n) for n in re.findall(r"(\d+) bytes spilled to disk", logs)) > 0, logs[-3000:]
        results[mode] = _tables(out)
    for mode in ("mpi", "spill", "faults"):
        _same(results[mode], results["files"], mode)


def _files_answer(tmp_path, inputs) -> str:
    """The folder of mpi_shuffle.py's results with its shuffles in files: what the runs below must give."""
    want = str(tmp_path / "want")
    done = mpiexec(4, SCRIPT, inputs, want, env=_env(tmp_path, "want", "files"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return want


def test_a_run_that_stopped_after_its_map_tasks_runs_them_again(tmp_path, inputs):
    want = _files_answer(tmp_path, inputs)
    out = str(tmp_path / "out")
    os.makedirs(out)
    open(os.path.join(out, "fail"), "w").close()
    env = _env(tmp_path, "again", "mpi", SP_MAX_RETRIES="1")
    done = mpiexec(4, SCRIPT, inputs, out, "--fail-partition", "2", env=env, timeout=300)
    assert done.returncode == 1 and "partition 2 fails on purpose" in done.stderr, done.stderr[-3000:]
    os.unlink(os.path.join(out, "fail"))
    done = mpiexec(4, SCRIPT, inputs, out, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the map tasks' buckets were in the stopped world's memory: those of the shuffle whose reader had not
    # finished ran again; the other shuffle's readers all finished, so its map tasks are reused with them
    ran = int(re.search(r"(\d+) tasks ran", done.stderr).group(1))
    reused = int(re.search(r"(\d+) reused from the journal", done.stderr).group(1))
    assert reused > 0 and ran > 1, done.stderr[-2000:]
    oks = collections.Counter((r["n"], r["k"]) for r in read_records(str(tmp_path / "jobs" / "again" / "journal.log"))
                              if r.get("s") == "ok" and "k" in r)
    by_node = collections.defaultdict(set)
    for (name, _key), count in oks.items():
        by_node[name].add(count)
    assert by_node["hash_partition"] == {2} and by_node["hash_partition-2"] == {1}, dict(by_node)
    _same(_tables(out), _tables(want), "run again")
    _no_store_left("again")


def test_the_local_platform_uses_files(tmp_path, inputs):
    out = str(tmp_path / "out")
    env = _env(tmp_path, "local", "mpi", SP_PLATFORM="local", SP_NUM_EXECUTORS="2")
    done = python(SCRIPT, inputs, out, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hash_partition" in os.listdir(tmp_path / "jobs" / "local" / "outputs")
    log = open(tmp_path / "jobs" / "local" / "logs" / "rank-0.log").read()
    assert "keeps files: the job does not run in an MPI world" in log


def test_kill_9_of_the_whole_world_in_the_middle_of_the_readers_resumes(tmp_path, inputs):
    want = _files_answer(tmp_path, inputs)
    out = str(tmp_path / "out")
    os.makedirs(out)
    open(os.path.join(out, "slow"), "w").close()
    root = str(tmp_path / "kjobs")
    env = _env(tmp_path, "killed", "mpi", SP_DATA_ROOT=root)
    argv = [os.path.join(BIN, "mpiexec"), "-n", "4", sys.executable, SCRIPT, inputs, out]
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def sorted_some() -> bool:
        try:
            return any(r.get("s") == "ok" and "checked_sort" in str(r.get("o", "")) for r in records(root))
        except AssertionError:
            return False
    try:
        wait_for(sorted_some, 120, "the readers of the shuffle to start finishing")
    finally:
        kill_tree(proc)  # every rank and worker, by SIGKILL: their stores stay behind
    left = glob.glob(f"/dev/shm/mpipipe-shuffle-{os.getuid()}/killed.*")
    assert left, "the killed ranks' stores should still be there"
    os.unlink(os.path.join(out, "slow"))
    done = mpiexec(4, SCRIPT, inputs, out, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(re.search(r"(\d+) reused from the journal", done.stderr).group(1)) > 0, done.stderr[-2000:]
    _same(_tables(out), _tables(want), "after kill -9")
    _no_store_left("killed")  # the next ranks on the host removed the dead ranks' stores
