"""The data examples (groupby, sort, dedup) on the local platform and in a 4-rank MPI world.

Each run generates its own small input under its --data-root (or reads files
a test wrote, with -i); its output folder is read back with DuckDB and
compared with DuckDB's answer over the same input in this process. The runs
that should succeed all start at once in a small background pool (fixture
`runs`), each in its own process group with a timeout; the error cases run
in the foreground.
"""
import datetime
import glob
import math
import os
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from helpers import BIN, REPO, mpiexec, python, run

EXAMPLES = os.path.join(REPO, "examples")
SIZES = ("--rows", "6000", "--files", "3", "--partitions", "3", "--splits", "2")  # a few seconds a run
HAS_MPIEXEC = os.path.exists(os.path.join(BIN, "mpiexec"))
HOWS = ["local", "mpi"] if HAS_MPIEXEC else ["local"]


def script(name):
    return os.path.join(EXAMPLES, f"{name}.py")


def read(files, query="SELECT * FROM t"):
    """Rows of Parquet files through DuckDB (folder names are never taken as columns)."""
    con = duckdb.connect()
    try:
        lst = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({lst}, hive_partitioning = false)")
        return con.sql(query).fetchall()
    finally:
        con.close()


def output_files(folder):
    return sorted(glob.glob(os.path.join(folder, "*.parquet")))


def generated_files(data_root, name):
    files = sorted(glob.glob(os.path.join(data_root, "example-data", f"{name}-*", "*.parquet")))
    assert len(files) == 3, files
    return files


def run_example(name, how, base, *args):
    """One run of an example, on local (2 executors) or under mpiexec -n 4; returns (done, data_root, output)."""
    root, out = str(base / f"{name}-{how}" / "jobs"), str(base / f"{name}-{how}" / "out")
    args = ("--data-root", root, "-o", out) + args
    if how == "local":
        done = python(script(name), "--num-executors", "2", *args, timeout=120)
    else:
        done = mpiexec(4, script(name), *args, timeout=120)
    assert done.returncode == 0, f"{name} on {how} failed:\n{done.stdout}\n{done.stderr}"
    return done, root, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every successful run of this module, started together in the background, four at a time.

    The runs mostly wait (process start, imports, world set-up), so overlapping
    them keeps the module at a fraction of their summed time. Each is its own
    process group with a timeout (helpers.run). Tests take `runs[key].result()`.
    """
    base = tmp_path_factory.mktemp("examples")
    write_string_keys(str(base / "sort-strings"))
    ties = write_dedup_ties(str(base / "dedup-ties"))
    pool = ThreadPoolExecutor(4)
    futures = {}
    for name in ("groupby", "sort", "dedup"):
        for how in HOWS:
            futures[name, how] = pool.submit(run_example, name, how, base, *SIZES)
    futures["sort-strings"] = pool.submit(
        run_example, "sort", "local", base / "sort-strings", "-i", str(base / "sort-strings" / "in-*.parquet"),
        "--key", "name", "--partitions", "4", "--sample-rows", "50")
    futures["dedup-ties"] = pool.submit(run_example, "dedup", "local", base / "dedup-ties", "-i", *ties,
                                        "--id", "user", "--ts", "at")
    try:
        yield futures
    finally:
        pool.shutdown(wait=True)


def both(runs, name):
    """The local and the MPI run of an example, checked for what every example promises; {how: (done, root, out)}."""
    got = {how: runs[name, how].result() for how in HOWS}
    if len(got) == 2:  # the seeded generator wrote the same bytes on both runs
        for a, b in zip(generated_files(got["local"][1], name), generated_files(got["mpi"][1], name)):
            with open(a, "rb") as fa, open(b, "rb") as fb:
                assert fa.read() == fb.read(), (a, b)
    for how, (done, _root, out) in got.items():
        assert done.stdout.count(" rows in, ") == 1, done.stdout  # rank 0 alone prints the summary
        assert f"output: {out}" in done.stdout
        assert len(output_files(out)) == 3
        assert ("3 executor(s) on mpi" if how == "mpi" else "2 executor(s) on local") in done.stderr
    return got


def test_groupby_matches_duckdb(runs):
    for how, (done, root, out) in both(runs, "groupby").items():
        inputs = generated_files(root, "groupby")
        expected = read(inputs, "SELECT key, count(*), sum(val), min(tag) FROM t GROUP BY key ORDER BY key")
        got = read(output_files(out), "SELECT key, n, sum_val, min_tag FROM t ORDER BY key")
        assert len(got) == len(expected) > 1000, how
        for g, e in zip(got, expected):
            assert (g[0], g[1], g[3]) == (e[0], e[1], e[3]), (how, g, e)
            assert math.isclose(g[2], e[2], rel_tol=1e-9, abs_tol=1e-6), (how, g, e)
        for f in output_files(out):  # each partition's groups come ordered by key
            keys = [r[0] for r in read([f], "SELECT key FROM t")]
            assert keys == sorted(keys)
        assert f"6,000 rows in, {len(expected):,} groups out" in done.stdout


def test_sort_output_files_in_name_order_are_the_sorted_input(runs):
    for how, (done, root, out) in both(runs, "sort").items():
        expected = read(generated_files(root, "sort"), "SELECT * FROM t ORDER BY key")
        got = [row for f in output_files(out) for row in read([f])]
        assert len(expected) == 6000 and len(set(r[0] for r in expected)) == 6000  # unique keys: one right order
        assert got == expected, how
        sizes = [len(read([f])) for f in output_files(out)]
        assert min(sizes) > 0, sizes  # the sampled bounds spread the rows over every partition
        assert "6,000 rows in, 6,000 rows out in 3 file(s)" in done.stdout


def test_dedup_matches_duckdb(runs):
    for how, (done, root, out) in both(runs, "dedup").items():
        inputs = generated_files(root, "dedup")
        counts = read(inputs, "SELECT count(*), count(DISTINCT id), count(DISTINCT (id, ts, amount, note)) FROM t")[0]
        assert counts[0] > counts[2] > counts[1]  # exact duplicate rows, and several rows per id
        expected = sorted(read(inputs, """
            SELECT * FROM t
            QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts DESC, amount DESC, note DESC) = 1"""))
        got = sorted(read(output_files(out)))
        assert got == expected, how
        assert len({r[0] for r in got}) == len(got) == counts[1]
        assert f"6,000 rows in, {len(expected):,} rows out" in done.stdout


def write_parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path)


def write_string_keys(folder):
    """Two files of short string keys: many repeat, some are NULL."""
    import random

    rng = random.Random(7)
    words = ["".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 4))) for _ in range(400)]
    for i in range(2):
        names = [None if j % 97 == 0 else w for j, w in enumerate(words[i * 200:(i + 1) * 200])]
        write_parquet(os.path.join(folder, f"in-{i}.parquet"),
                      {"name": names, "n": list(range(i * 200, (i + 1) * 200))})
    return sorted(glob.glob(os.path.join(folder, "in-*.parquet")))


TIMES = [datetime.datetime(2024, 5, 1, h) for h in range(3)]
TIES = [  # (user, at, amount, note)
    (1, TIMES[0], 5.0, "old"), (1, TIMES[2], 1.0, "new"), (1, TIMES[1], 9.0, "mid"),
    (2, TIMES[1], 3.0, "a"), (2, TIMES[1], 3.0, "b"), (2, TIMES[0], 99.0, "z"),  # same time and amount: "b" wins
    (3, TIMES[2], 2.0, "x"), (3, TIMES[2], 2.0, "x"), (3, TIMES[2], 2.0, "x"),  # exact duplicates
    (4, TIMES[0], 7.0, "only"),
]


def write_dedup_ties(folder):
    names = ["user", "at", "amount", "note"]
    paths = [os.path.join(folder, "a.parquet"), os.path.join(folder, "b.parquet")]
    write_parquet(paths[0], {k: [r[i] for r in TIES[:5]] for i, k in enumerate(names)})
    write_parquet(paths[1], {k: [r[i] for r in TIES[5:]] for i, k in enumerate(names)})
    return paths


def test_sort_user_input_with_string_keys_duplicates_and_nulls(runs):
    done, root, out = runs["sort-strings"].result()
    assert "400 rows in, 400 rows out in 4 file(s)" in done.stdout
    inputs = sorted(glob.glob(os.path.join(root, "..", "..", "in-*.parquet")))  # what the run read (-i)
    assert len(inputs) == 2
    files = output_files(out)
    got = [row for f in files for row in read([f])]
    assert sorted(got, key=repr) == sorted(read(inputs), key=repr)  # the same rows
    assert [r[0] for r in got] == [r[0] for r in read(inputs, "SELECT name FROM t ORDER BY name")]  # in key order
    assert got[-1][0] is None  # NULL keys last, as in DuckDB's ORDER BY
    for f in files:  # equal keys never straddle two files
        others = {r[0] for g in files if g != f for r in read([g])}
        assert not {r[0] for r in read([f])} & others


def test_dedup_user_input_keeps_latest_and_breaks_ties_by_the_other_columns(runs):
    done, _root, out = runs["dedup-ties"].result()
    assert "10 rows in, 4 rows out (6 dropped)" in done.stdout
    assert sorted(read(output_files(out))) == [(1, TIMES[2], 1.0, "new"), (2, TIMES[1], 3.0, "b"),
                                               (3, TIMES[2], 2.0, "x"), (4, TIMES[0], 7.0, "only")]


def one_line_error(done):
    lines = done.stderr.strip().splitlines()
    assert lines and all(line.startswith("mpipipe: error: ") for line in lines), done.stderr
    assert "Traceback" not in done.stderr
    return lines


@pytest.mark.parametrize("name", ["groupby", "sort", "dedup"])
def test_missing_input_is_a_one_line_error(name, tmp_path):
    done = python(script(name), "-i", "/nonexistent/*.parquet", "--data-root", str(tmp_path / "jobs"), timeout=60)
    assert done.returncode == 2
    (line,) = one_line_error(done)
    assert "'/nonexistent/*.parquet' matches no file" in line
    assert not os.path.exists(tmp_path / "jobs" / "example-output")


@pytest.mark.skipif(not HAS_MPIEXEC, reason="the virtualenv has no mpiexec")
def test_missing_input_under_mpiexec_fails_with_only_that_error(tmp_path):
    done = mpiexec(4, script("groupby"), "-i", "/nonexistent/*.parquet", "--data-root", str(tmp_path / "jobs"),
                   timeout=60)
    assert done.returncode == 2
    # every rank builds the plan, so every rank reports the error (mpiexec may interleave their lines)
    message = "mpipipe: error: node 'source': input path '/nonexistent/*.parquet' matches no file"
    assert message in done.stderr and not done.stderr.replace(message, "").strip(), done.stderr


@pytest.mark.parametrize("name, args, message", [
    ("groupby", [], "SQL error"),  # an input without the val and tag columns
    ("sort", ["--key", "nope"], "sort key 'nope' is not a column"),
    ("dedup", ["--ts", "when"], "column(s) when not in the input"),
    ("groupby", ["--partitions", "0"], "--partitions must be at least 1"),
])
def test_wrong_columns_or_sizes_are_one_line_errors(name, args, message, tmp_path):
    write_parquet(tmp_path / "in.parquet", {"id": [1, 2], "key": [3, 4], "ts": [5, 6]})
    done = python(script(name), "-i", str(tmp_path / "in.parquet"), *args, "--data-root", str(tmp_path / "jobs"),
                  timeout=60)
    assert done.returncode == 2
    (line,) = one_line_error(done)
    assert message in line


def test_generated_input_is_written_once_when_ranks_race(tmp_path):
    """Four processes generate the same folder at the same moment: one complete folder, no leftovers."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {EXAMPLES!r})
        import common
        def write(folder):
            time.sleep(0.3)  # every process is writing when the first one renames
            for i in range(3):
                with open(os.path.join(folder, f"f{{i}}.txt"), "w") as f:
                    f.write(str(i) * 1000)
        common.generate_once(sys.argv[1], write)
        print(sorted(os.listdir(sys.argv[1])))
    """)
    folder = str(tmp_path / "data" / "gen")
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: run([sys.executable, "-c", code, folder], timeout=60, check=True), range(4)))
    assert {d.stdout.strip() for d in done} == {"['f0.txt', 'f1.txt', 'f2.txt']"}
    assert os.listdir(tmp_path / "data") == ["gen"]  # the losers' copies are gone
    for i in range(3):
        assert (tmp_path / "data" / "gen" / f"f{i}.txt").read_text() == str(i) * 1000
