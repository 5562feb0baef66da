"""Sort: 10,000,000 records of 100 bytes, global sort by key, on mpipipe against DuckDB alone and Polars.

    python scripts/bench/sort.py                       # 10,000,000 records, 3 rounds
    BENCH_QUICK=1 python scripts/bench/sort.py         # 500,000 records

Makes the input once (8 Parquet files under mpipipe-jobs/bench-data, seeded:
key = 10 random bytes (BLOB), payload = 90 bytes (BLOB: the record's number in
16 hex digits and 74 filler letters), as in the sort benchmark's gensort
records), then runs, alternating:

- mpipipe: examples/sort.py on the local platform with 2 executors: split
  into 8 row ranges, sample keys, pick 7 bounds, tag each row with its range,
  partition by range into 8, ORDER BY key in each, copy the 8 files to the
  output folder (range-partitioned: file i holds keys <= those of file i+1);
- DuckDB alone, 2 threads: `COPY (SELECT * ... ORDER BY key) TO 'sorted.parquet'`
  (one file: DuckDB's multi-file COPY options write row groups in parallel and
  do not keep the order across files);
- Polars, 2 threads: `scan_parquet(...).sort("key").sink_parquet(PartitionBy(dir,
  max_rows_per_file=rows/8))`: 8 files in order;
- smallpond (scripts/bench/smallpond_side.py sort, its own scheduler, 1 executor
  with 2 slots), with its default intervals and with its test harness's: tag
  each row with its range from the key's first hex digit (the keys are uniform),
  shuffle by that tag into 8, ORDER BY key in each. Its file names do not say
  which range a file holds, so its files are checked in the order of their
  first keys.

The time is the whole command, from outside. Each output is then checked:
record count, keys in order within and across its files (in file-name
order), and the same records as the input (count and XOR of a hash of each (key, payload)).
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

MPIPIPE = "mpipipe (local, 2 executors)"
DUCKDB = "DuckDB (1 process, 2 threads)"
POLARS = "Polars lazy (2 threads)"
SMALLPOND = B.SMALLPOND_DATA
SMALLPOND_FAST = B.SMALLPOND_DATA_FAST


def write_input(folder: str, rows: int, files: int, seed: int = 7, random_filler: bool = False) -> None:
    """`rows` records in `files` Parquet files. The payload's 74 filler bytes are one repeated letter (as in
    gensort's ASCII records: the files compress to about a fifth), or with `random_filler` random bytes (they
    do not compress: 10,000,000 records make about 1.07 GB)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = os.path.join(folder, f".complete-{rows}-{files}")
    if os.path.exists(marker):
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    hexdigits = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    start = 0
    for f in range(files):
        n = (f + 1) * rows // files - f * rows // files
        rng = np.random.default_rng([seed, f])
        keys = rng.integers(0, 256, size=(n, 10), dtype=np.uint8)
        ids = np.arange(start, start + n, dtype=np.uint64)
        payload = np.empty((n, 90), dtype=np.uint8)
        for j in range(16):
            payload[:, j] = hexdigits[((ids >> np.uint64(4 * (15 - j))) & np.uint64(15)).astype(np.intp)]
        if random_filler:
            payload[:, 16:] = rng.integers(0, 256, size=(n, 74), dtype=np.uint8)
        else:
            payload[:, 16:] = (ord("A") + (ids % np.uint64(26)).astype(np.uint8))[:, None]

        def blob(a, width):
            return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(a.tobytes())]) \
                     .cast(pa.binary())

        pq.write_table(pa.table({"key": blob(keys, 10), "payload": blob(payload, 90)}),
                       os.path.join(folder, f"part-{f:05d}.parquet"))
        start += n
    open(marker, "w").close()


# hash(a, b) is hash(a) combined with hash(b) in a way that an XOR over rows separates again (the XOR of
# hash(k_i, p_i) does not change when payloads move between keys); hashing the sum of the two hashes does not
PAIR = "hash(hash({a}) // 2 + hash({b}) // 2)"


def fingerprint(files) -> dict:
    """Record count and XOR of a hash of each (key, payload): the same for any order of the same records."""
    import duckdb

    con = duckdb.connect(config={"threads": 2})
    con.execute("SET enable_progress_bar = false")
    n, x = con.execute(f"SELECT count(*), bit_xor({PAIR.format(a='key', b='payload')}) "
                       f"FROM read_parquet({list(files)!r})").fetchone()
    return {"rows": n, "xor": str(x)}


def order_fingerprint(files) -> dict:
    """Record count and XOR of a hash of each (key, position), the position counted across the files in this
    order: the same for two outputs only when they hold the same keys at the same places (row for row)."""
    import duckdb
    import pyarrow.parquet as pq

    files = list(files)
    bases, at = [], 0
    for path in files:
        bases.append((path, at))
        at += pq.ParquetFile(path).metadata.num_rows
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET enable_progress_bar = false")
    con.execute("CREATE TEMP TABLE bases (filename VARCHAR, base BIGINT)")
    if bases:
        con.executemany("INSERT INTO bases VALUES (?, ?)", bases)
    n, x = con.execute(f"SELECT count(*), bit_xor(hash(hash(d.key) // 2 + b.base + d.file_row_number)) "
                       f"FROM read_parquet({files!r}, filename = true, file_row_number = true) d "
                       f"JOIN bases b USING (filename)").fetchone() if files else (0, None)
    return {"rows": n, "xor": str(x)}


def keys_in_order(files) -> tuple:
    """(ordered?, rows): keys compared as 10-byte big-endian numbers, within and across the files in this order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    prev, rows, ok = None, 0, True
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=1 << 20, columns=["key"]):
            col = batch.column(0).cast(pa.binary(10))
            a = np.frombuffer(col.buffers()[1], dtype=np.uint8)[col.offset * 10:(col.offset + len(col)) * 10]
            a = a.reshape(-1, 10)
            if not len(a):
                continue
            hi = a[:, :8].copy().view(">u8").ravel()
            lo = a[:, 8:].copy().view(">u2").ravel()
            ok = ok and bool(((hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] >= lo[:-1]))).all())
            if prev is not None:
                ok = ok and prev <= (int(hi[0]), int(lo[0]))
            prev = (int(hi[-1]), int(lo[-1]))
            rows += len(a)
    return ok, rows


def first_key(path: str) -> bytes:
    """A file's first key (files of a range-partitioned output, in range order)."""
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["key"]).column(0)
    return col[0].as_py() if len(col) else b""


def alone(engine: str, input_dir: str, output: str, rows: int, parts: int, threads: int) -> None:
    t0 = time.perf_counter()
    os.makedirs(output, exist_ok=True)
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(config={"threads": threads})
        con.execute("SET enable_progress_bar = false")
        con.execute(f"COPY (SELECT * FROM read_parquet('{input_dir}/*.parquet') ORDER BY key) "
                    f"TO '{output}/sorted.parquet' (FORMAT parquet)")
    else:
        os.environ["POLARS_MAX_THREADS"] = str(threads)
        import polars as pl

        (pl.scan_parquet(os.path.join(input_dir, "*.parquet"))
           .sort("key")
           .sink_parquet(pl.PartitionBy(output, max_rows_per_file=math.ceil(rows / parts)), mkdir=True))
    print("BENCH_RESULT " + json.dumps({"inner": time.perf_counter() - t0}), flush=True)


def main() -> None:
    a = B.data_workload_args(__doc__.splitlines()[0], 500_000 if B.quick() else 10_000_000)
    if a.alone:
        return alone(a.alone, a.input, a.output, a.rows, a.partitions, a.executors)

    input_dir = os.path.join(B.DATA, f"sort-{a.rows}rows-{a.files}files")
    work = os.path.join(B.WORK, "sort")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    write_input(input_dir, a.rows, a.files)
    print(f"sort: {a.rows:,} records of 100 bytes in {a.files} files under {os.path.relpath(input_dir)} "
          f"(ready in {time.perf_counter() - t0:.1f} s), {a.reps} rounds", flush=True)
    fp_path = os.path.join(input_dir, ".fingerprint-v2.json")
    if not os.path.exists(fp_path):
        B.write_json(fp_path, fingerprint(sorted(glob.glob(os.path.join(input_dir, "*.parquet")))))
    with open(fp_path) as f:
        expected = json.load(f)

    me = os.path.abspath(__file__)
    out = {t: os.path.join(work, name) for t, name in ((MPIPIPE, "mpipipe-out"), (DUCKDB, "duckdb-out"),
                                                      (POLARS, "polars-out"))}
    root = os.path.join(work, "mpipipe-root")
    cmds = {
        MPIPIPE: [B.PYTHON, os.path.join(B.REPO, "examples", "sort.py"), "-i", input_dir, "-o", out[MPIPIPE],
                  "--partitions", str(a.partitions), "--splits", str(a.partitions), "--platform", "local",
                  "--num-executors", str(a.executors), "--fresh", "--data-root", root, "--job-id", "bench-sort",
                  "--progress-interval", "0"],
        DUCKDB: [B.PYTHON, me, "--alone", "duckdb", "--input", input_dir, "--output", out[DUCKDB],
                 "--rows", str(a.rows), "--partitions", str(a.partitions), "--executors", str(a.executors)],
        POLARS: [B.PYTHON, me, "--alone", "polars", "--input", input_dir, "--output", out[POLARS],
                 "--rows", str(a.rows), "--partitions", str(a.partitions), "--executors", str(a.executors)],
    }
    envs = {}
    notes = []
    skip = B.smallpond_skip_reason()
    if skip:
        notes.append(skip)
    else:
        for tool, cmd in B.smallpond_data_commands("sort", input_dir, a.partitions, work).items():
            cmds[tool], envs[tool] = cmd, B.smallpond_env()
            out[tool] = B.smallpond_output("sort", work, tool)
    tools = list(cmds)

    def run_one(tool, rep):
        shutil.rmtree(out[tool], ignore_errors=True)  # not timed: every run writes into nothing
        if tool == MPIPIPE:
            shutil.rmtree(root, ignore_errors=True)
        rec = B.run(cmds[tool], 1800, env=envs.get(tool), label=tool)
        if tool in (SMALLPOND, SMALLPOND_FAST) and rec.get("first_task") and rec.get("last_task"):
            rec["data_tasks"] = rec["last_task"] - rec["first_task"]
        if tool == MPIPIPE and rec["status"] == "ok":  # the scheduler's run, from its journal
            rec["inner"] = B.journal_span(os.path.join(root, "bench-sort"))
        return rec

    runs = B.alternate(tools, a.reps, run_one, lambda tool, rec: f"{rec['wall']:7.2f} s")
    checks = []
    for tool in tools:
        if runs[tool][-1].get("status") != "ok":
            continue
        if tool in (SMALLPOND, SMALLPOND_FAST):
            files = sorted(glob.glob(os.path.join(out[tool], "**", "*.parquet"), recursive=True), key=first_key)
        else:
            files = sorted(glob.glob(os.path.join(out[tool], "*.parquet")), key=B.natural_key)
        ordered, n = keys_in_order(files)
        same = fingerprint(files) == expected
        verdict = "ok" if ordered and same and n == a.rows else "WRONG"
        checks.append(f"{tool}: {len(files)} file(s), {n:,} records, keys {'in order' if ordered else 'NOT in order'}, "
                      f"{'same records as the input' if same else 'records DIFFER from the input'}: {verdict}")
    metrics = [("wall", "time (s)", "s"), ("inner", "inside the process (s)", "s")]
    cmp = B.compare(runs, metrics, [MPIPIPE], ["wall"])
    notes += ["each tool writes Parquet with its own default compression: snappy (mpipipe, DuckDB), "
              "zstd (Polars, smallpond)",
              "mpipipe's plan writes the data four times (ranges tagged, partitioned, sorted, copied to the output "
              "folder), smallpond's three (tagged, shuffled, sorted); DuckDB and Polars once"]
    if SMALLPOND in runs:
        for tool in (SMALLPOND, SMALLPOND_FAST):
            spans = B.metric(runs[tool], "data_tasks")
            notes.append(f"{tool}: of its time, {B.fmt_summary(spans)} s from its first data task starting to its "
                         "last one ending")
        notes.append(B.SMALLPOND_INTERVALS)
    res = {"workload": "sort", "title": f"Sort: {a.rows:,} records of 100 bytes, global sort by a 10-byte key",
           "params": {"rows": a.rows, "files": a.files, "partitions": a.partitions, "reps": a.reps,
                      "executors": a.executors},
           "runs": runs, "tables": [{"columns": cmp["columns"], "rows": cmp["rows"]}], "ratios": cmp["ratios"],
           "checks": checks, "notes": notes, "commands": cmds}
    B.finish(res, a.out)


if __name__ == "__main__":
    main()
