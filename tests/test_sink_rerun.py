"""A sink's folder lives outside the job directory: removing it makes the next run write it again."""
import os
import shutil

import duckdb
import pytest

from helpers import python

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines", "sink_again.py")


@pytest.mark.timeout(180)
def test_removed_sink_folder_is_written_again_and_nothing_else_reruns(tmp_path):
    out = tmp_path / "result folder with 'quotes'"
    args = ["--out", str(out), "--data-root", str(tmp_path / "jobs"), "--num-executors", "1"]
    first = python(SCRIPT, *args, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "3 tasks ran" in first.stderr
    want = duckdb.sql("SELECT sum(x * x) FROM range(100) t(x)").fetchall()
    shutil.rmtree(out)
    again = python(SCRIPT, *args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "1 tasks ran" in again.stderr and "2 reused from the journal" in again.stderr
    files = sorted(p for p in os.listdir(out) if p.endswith(".parquet"))
    assert files and os.path.exists(out / "_MPIPIPE_SINK")
    con = duckdb.connect()
    got = con.execute("SELECT sum(y) FROM read_parquet(?)", [[str(out / f) for f in files]]).fetchall()
    assert got == want
    third = python(SCRIPT, *args, timeout=120)
    assert third.returncode == 0 and "0 tasks ran" in third.stderr, third.stderr
