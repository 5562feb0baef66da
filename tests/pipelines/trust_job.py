"""Small jobs for tests/test_data_trust.py: each scenario reads INPUT and writes under OUT.

    python trust_job.py SCENARIO INPUT OUT [--type link|copy|manifest] [--data-root DIR]

copy          read_parquet(INPUT) -> write_parquet(OUT/written) (DataFrame API)
plan-sink     DataSourceNode(ParquetDataSet(INPUT)) -> DataSinkNode(OUT/written, --type) (plan API)
changed       as plan-sink, but INPUT/f1.parquet is rewritten (fewer rows) after the plan is built
nullability   INPUT/with_nulls.parquet and INPUT/no_nulls.parquet (a BIGINT, b VARCHAR) through map, filter,
              partial_sql, a hash repartition and a row function: OUT/<data>.<step>.json holds the schema of
              to_arrow() and OUT/<data>.<step>.written is the step's write_parquet folder
script-sink   a PythonScriptNode (2 partitions) and a ComputeNode that write files that are not Parquet, and
              a DataSinkNode (--type) over both into OUT/written
script-union  the same two nodes through a UnionNode and a ConsolidateNode into one partition, then the sink
script-sql    a PythonScriptNode that writes only text, read by a SqlEngineNode (fails)
map-types     a row function whose values are integers in one partition and floats in the other (no
              schema=), summed by SQL over both partitions: OUT/result.json
map-types-schema  the same with schema=: OUT/result.json
map-nulls     a row function whose column is all None in one partition; OUT/result.json
map-empty     a row function (no schema=) over 3 partitions of which one is empty; OUT/result.json
"""
import argparse
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

import mpipipe
from mpipipe import ComputeNode
from mpipipe.logical import (ConsolidateNode, DataSinkNode, DataSourceNode, LogicalPlan, ParquetDataSet,
                             PythonScriptNode, SqlEngineNode, UnionNode)


def write_reports(runtime_ctx, inputs, output_path):
    with open(os.path.join(output_path, "report.txt"), "w") as f:
        f.write(f"partition {runtime_ctx.partition}\n")
    os.makedirs(os.path.join(output_path, "plots"))
    with open(os.path.join(output_path, "plots", "p.bin"), "wb") as f:
        f.write(bytes([runtime_ctx.partition]) * 10)
    return True


def write_notes(task):
    with open(os.path.join(task.output_dir, "notes.md"), "w") as f:
        f.write("# notes\n")
    return {"notes": 1}


def by_partition(r):
    """Integers for even ids, floats (x.5) for odd ones: the inferred type differs between partitions."""
    return {"id": r["id"], "x": r["id"] if r["id"] < 50 else r["id"] + 0.5}


def none_below_50(r):
    return {"id": r["id"], "x": None if r["id"] < 50 else r["id"]}


def doubled(r):
    return {"x": r["id"] * 2}


def schema_of(t):
    return [[f.name, str(f.type), f.nullable] for f in t.schema]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--type", default="copy")
    ap.add_argument("--data-root", required=True)
    args = ap.parse_args()
    sp = mpipipe.init(num_executors=1, data_root=args.data_root, max_retries=0)
    out = os.path.abspath(args.out)
    written = os.path.join(out, "written")
    os.makedirs(out, exist_ok=True)

    if args.scenario == "copy":
        sp.read_parquet(args.input).write_parquet(written)
    elif args.scenario in ("plan-sink", "changed"):
        src = DataSourceNode(sp.ctx, ParquetDataSet(args.input), name="src")
        sink = DataSinkNode(sp.ctx, src, written, type=args.type, name="sink")
        if args.scenario == "changed":
            pq.write_table(pa.table({"a": pa.array([1], pa.int64())}), os.path.join(args.input, "f1.parquet"))
        sp.run(LogicalPlan(sp.ctx, sink))
    elif args.scenario == "nullability":
        for data in ("with_nulls", "no_nulls"):
            df = sp.read_parquet(os.path.join(args.input, f"{data}.parquet")).repartition(2, by_rows=True)
            steps = {
                "map": df.map("a, b, a + 1 AS c"),
                "filter": df.filter("a > 0"),
                "sql": sp.partial_sql("SELECT b, sum(a) AS s, count(*) AS n FROM {0} GROUP BY b", df),
                "hash": df.repartition(3, hash_by="b"),
                "rowfn": df.map(lambda r: {"a": r["a"], "b": r["b"]},
                                schema=pa.schema([pa.field("a", pa.int64(), nullable=False), ("b", pa.string())])),
                "source": df,
            }
            for step, d in steps.items():
                with open(os.path.join(out, f"{data}.{step}.json"), "w") as f:
                    json.dump({"arrow": schema_of(d.to_arrow()), "pandas": [str(t) for t in d.to_pandas().dtypes]}, f)
                d.write_parquet(os.path.join(out, f"{data}.{step}.written"))
    elif args.scenario == "script-sink":
        src = DataSourceNode(sp.ctx, ParquetDataSet(args.input), name="src")
        script = PythonScriptNode(sp.ctx, src, write_reports, npartitions=2, name="reports")
        notes = ComputeNode(sp.ctx, write_notes, name="notes")
        sink = DataSinkNode(sp.ctx, [script, notes], written, type=args.type, name="sink")
        sp.run(LogicalPlan(sp.ctx, sink))
    elif args.scenario == "script-union":
        src = DataSourceNode(sp.ctx, ParquetDataSet(args.input), name="src")
        script = PythonScriptNode(sp.ctx, src, write_reports, npartitions=2, name="reports")
        notes = ComputeNode(sp.ctx, write_notes, name="notes")
        both = ConsolidateNode(sp.ctx, UnionNode(sp.ctx, [script, notes], name="union"), 1, name="together")
        sink = DataSinkNode(sp.ctx, both, written, type=args.type, name="sink")
        sp.run(LogicalPlan(sp.ctx, sink))
    elif args.scenario == "script-sql":
        src = DataSourceNode(sp.ctx, ParquetDataSet(args.input), name="src")
        script = PythonScriptNode(sp.ctx, src, write_reports, name="reports")
        sql = SqlEngineNode(sp.ctx, script, "SELECT count(*) AS n FROM {0}", name="count")
        sp.run(LogicalPlan(sp.ctx, sql))
    elif args.scenario in ("map-types", "map-types-schema", "map-nulls", "map-empty"):
        df = sp.from_items([{"id": i} for i in range(100)]).repartition(2, by_rows=True)
        if args.scenario == "map-empty":
            df = sp.from_items([{"id": i} for i in range(2)]).repartition(3, by_rows=True)
            mapped = df.map(doubled)
            t = mapped.to_arrow()
            result = {"columns": t.column_names, "x": t.column("x").to_pylist()}
        else:
            fn = none_below_50 if args.scenario == "map-nulls" else by_partition
            typed = args.scenario == "map-types-schema"
            schema = pa.schema([("id", pa.int64()), ("x", pa.float64())]) if typed else None
            mapped = df.map(fn, schema=schema)
            total = sp.partial_sql("SELECT sum(x) AS s, count(x) AS n FROM {0}", mapped.repartition(1))
            result = {"sql": total.take_all(), "arrow": mapped.to_arrow().column("x").to_pylist()}
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)
    else:
        sys.exit(f"unknown scenario {args.scenario}")


if __name__ == "__main__":
    main()
