"""mpipipe's own steps never load pandas (about 0.3 s of CPU per process) when the user's code does not: DuckDB
and pyarrow would each load it just to check an object's type."""
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_binding_a_plans_sql_loads_no_pandas(tmp_path):
    for i in range(2):
        pq.write_table(pa.table({"key": [i, i + 1], "val": [1.0, 2.0], "tag": ["a", "b"]}), tmp_path / f"p{i}.parquet")
    out = _python(f"""
        import sys
        from mpipipe.logical.dataset import ParquetDataSet
        from mpipipe.logical.node import Context, DataSourceNode, HashPartitionNode, LogicalPlan, SqlEngineNode
        ctx = Context()
        src = DataSourceNode(ctx, ParquetDataSet([{str(tmp_path / 'p0.parquet')!r}, {str(tmp_path / 'p1.parquet')!r}]))
        parts = HashPartitionNode(ctx, (src,), npartitions=4, hash_columns=["key"])
        sql = SqlEngineNode(ctx, (parts,), "select key, count(*) as n, sum(val) as s, min(tag) as t from {{0}} "
                            "group by key")
        plan = LogicalPlan(ctx, sql)
        assert "combining the partial aggregates" in plan.explain(), plan.explain()
        print("pandas" in sys.modules)
        """)
    assert out == "False"


def test_register_arrow_leaves_pandas_unloaded_and_dataframes_still_work():
    out = _python("""
        import sys
        import duckdb
        import pyarrow as pa
        from mpipipe.data.duckdb_tables import register_arrow, register_empty
        con = duckdb.connect()
        register_empty(con, "e", pa.schema([("a", pa.int64()), ("s", pa.string())]))
        table = duckdb.connect().sql("select range as a from range(3)").to_arrow_table()
        register_arrow(con, "t", table)
        rows = con.execute("select count(*) from e").fetchall()[0][0]
        print(rows, con.execute("select sum(a) from t").fetchall()[0][0], "pandas" in sys.modules)
        import pandas as pd
        register_arrow(con, "d", pd.DataFrame({"b": [4, 5]}))
        print(con.execute("select sum(b) from d").fetchall()[0][0])
        """)
    assert out.splitlines() == ["0 3 False", "9"]


def test_splitting_rows_into_bucket_files_loads_no_pandas(tmp_path):
    """A map task's rows into one IPC file per bucket, each bucket's rows in their order, without pandas."""
    out = _python(f"""
        import os, sys
        import duckdb
        from mpipipe.steps import ipcfile
        con = duckdb.connect()
        data = con.sql("select range as x, (range * 7) % 5 as b from range(1000)").to_arrow_table()
        rows = data.drop_columns(["b"])
        files = ipcfile.BucketFiles(lambda k: os.path.join({str(tmp_path)!r}, str(k)), rows.schema)
        files.write_split(rows, data.column("b").combine_chunks(), 6)
        files.close(6)
        got = [ipcfile.open_table(os.path.join({str(tmp_path)!r}, str(k), "data_0.arrow")).column("x").to_pylist()
               for k in range(6)]
        print(got == [[x for x in range(1000) if (x * 7) % 5 == k] for k in range(6)], "pandas" in sys.modules)
        """)
    assert out == "True False"
