"""Object-store datasets end to end: s3:// input listed and read through pyarrow.fs, s3:// sink, on local and MPI."""
import os

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow.fs import FileSelector
import pytest

from helpers import env_for_tests, mpiexec, python

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "pipelines", "s3_pipeline.py")


def _table(i):
    keys = [(j * 7 + i) % 50 for j in range(400)]
    return pa.table({"key": pa.array(keys, pa.int64()), "val": pa.array([float(j % 13) for j in range(400)])})


@pytest.fixture(scope="module")
def s3_input(s3):
    s3.make_bucket("mpipipe-data")
    bucket = "mpipipe-data"
    fs = s3.filesystem()
    tables = [_table(i) for i in range(3)]
    for i, t in enumerate(tables):
        pq.write_table(t, f"{bucket}/in/part-{i}.parquet", filesystem=fs, row_group_size=100)
    return s3, bucket, pa.concat_tables(tables)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("platform", ["local", "mpi"])
def test_s3_source_and_sink_match_duckdb(s3_input, tmp_path, platform):
    s3, bucket, table = s3_input
    out = f"s3://{bucket}/out-{platform}"
    env = env_for_tests(s3.env())
    args = ["--input", f"s3://{bucket}/in/*.parquet", "--output", out, "--data-root", str(tmp_path / "jobs")]
    if platform == "local":
        done = python(SCRIPT, *args, "--num-executors", "2", env=env, timeout=180)
    else:
        done = mpiexec(3, SCRIPT, *args, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    fs = s3.filesystem()
    names = sorted(i.path for i in fs.get_file_info(FileSelector(out[len("s3://"):])))
    assert any(n.endswith("_MPIPIPE_SINK") for n in names)
    got = ds.dataset([n for n in names if n.endswith(".parquet")], filesystem=fs, format="parquet").to_table()
    con = duckdb.connect()
    con.register("got", got)
    con.register("src", table)
    mine = con.sql("SELECT key, n, s FROM got ORDER BY key").fetchall()
    want = con.sql("SELECT key, count(*) AS n, sum(val) AS s FROM src GROUP BY key ORDER BY key").fetchall()
    assert mine == want
