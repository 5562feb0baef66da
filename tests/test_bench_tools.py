"""The benchmark harness's own logic: medians and ratios, the sort check, the journal span, stopping a run.

No benchmark runs here (timings never fail the suite); these are the parts whose mistakes would make a
benchmark print wrong figures or a wrong verdict.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "bench"))
import benchlib as B  # noqa: E402
import sort as sort_bench  # noqa: E402
from mpipipe.execution.journal import encode  # noqa: E402


def runs_of(**tools):
    """tool -> list of times; None marks a failed run."""
    return {t: [{"status": "ok", "wall": v} if v is not None else {"status": "timeout"} for v in vals]
            for t, vals in tools.items()}


def test_summary_is_median_min_max_of_the_ok_runs_only():
    runs = runs_of(a=[3.0, None, 1.0, 2.0])["a"]
    assert B.metric(runs, "wall") == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert B.metric(runs_of(a=[None])["a"], "wall") is None


def test_compare_gives_mpipipe_over_each_alternative_and_counts_failed_runs():
    cmp = B.compare(runs_of(me=[2.0, 4.0, 3.0], other=[1.0, 1.5, 2.0], broken=[None, None, None]),
                    [("wall", "time (s)", "s")], ["me"], ["wall"])
    assert cmp["ratios"] == [{"alternative": "other", "metric": "time (s)", "key": "wall", "mpipipe": "me",
                              "ratio": 2.0}]
    rows = {r[0]: r for r in cmp["rows"]}
    assert rows["me"][1:] == ["3.00 (2.00–4.00)", "3/3"]
    assert rows["broken"][1:] == ["n/a", "0/3 (timeout)"]  # no ratio against a tool that never finished


@pytest.mark.parametrize("value, unit, shown", [(0.123, "s", "0.12"), (12.34, "s", "12.3"), (1234.5, "s", "1,234"),
                                                (22.66, "us", "22.7"), (172.4, "us", "172"), (44112.3, "/s", "44,112")])
def test_number_formats(value, unit, shown):
    assert B.fmt_num(value, unit) == shown


def test_ratio_format_keeps_two_significant_digits_when_tiny():
    assert B.fmt_ratio(0.000174) == "0.00017" and B.fmt_ratio(3.444) == "3.44" and B.fmt_ratio(None) == "n/a"


def write_keys(path, keys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": pa.array(keys, pa.binary()), "payload": pa.array([b"p" * 90] * len(keys))}), path)


def test_the_sort_check_sees_order_within_and_across_files(tmp_path):
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    write_keys(a, [bytes([0] * 9 + [i]) for i in range(5)])
    write_keys(b, [bytes([1] + [0] * 9), bytes([1] + [0] * 8 + [7])])
    assert sort_bench.keys_in_order([a, b]) == (True, 7)
    assert sort_bench.keys_in_order([b, a]) == (False, 7)  # each file sorted, the files not
    write_keys(a, [bytes([0] * 10), bytes([0] * 9 + [2]), bytes([0] * 9 + [1])])
    assert sort_bench.keys_in_order([a]) == (False, 3)
    # a key differing only in its last two bytes (past the first eight) is still compared
    write_keys(a, [bytes([5] * 8 + [1, 0]), bytes([5] * 8 + [0, 9])])
    assert sort_bench.keys_in_order([a]) == (False, 2)


def test_files_of_a_range_partitioned_output_are_ordered_by_their_first_key(tmp_path):
    paths = []
    for name, first in (("x", 9), ("y", 1), ("z", 5)):
        paths.append(str(tmp_path / f"{name}.parquet"))
        write_keys(paths[-1], [bytes([first] * 10)])
    assert [os.path.basename(p) for p in sorted(paths, key=sort_bench.first_key)] == ["y.parquet", "z.parquet",
                                                                                       "x.parquet"]


def test_the_records_fingerprint_ignores_order_and_sees_a_changed_record(tmp_path):
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    keys = [bytes([i] * 10) for i in range(4)]
    write_keys(a, keys)
    write_keys(b, list(reversed(keys)))
    assert sort_bench.fingerprint([a]) == sort_bench.fingerprint([b])
    write_keys(b, keys[:3] + [bytes([9] * 10)])
    assert sort_bench.fingerprint([a]) != sort_bench.fingerprint([b])


def test_journal_span_is_the_last_runs_start_to_end(tmp_path):
    lines = [{"type": "run", "time": 100.0}, {"type": "end", "time": 103.0}, {"s": "ok", "k": "f:0"},
             {"type": "run", "time": 200.0}, {"s": "ok", "k": "f:1"}, {"type": "end", "time": 204.5}]
    (tmp_path / "journal.log").write_bytes(b"".join(encode(r) for r in lines))
    assert B.journal_span(str(tmp_path)) == 4.5
    (tmp_path / "journal.log").write_bytes(b"".join(encode(r) for r in lines[:5]))  # the last run never ended
    assert B.journal_span(str(tmp_path)) is None


def test_a_run_past_its_timeout_is_stopped_with_its_whole_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(60)\n")
    t0 = time.monotonic()
    rec = B.run([sys.executable, "-c", script], timeout=2, label="sleeper")
    assert rec["status"] == "timeout" and time.monotonic() - t0 < 30
    child = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it became our zombie (it is not our child: it is init's)
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the run's own child process outlived the timeout")


def test_smallpond_runs_twice_with_its_defaults_and_with_its_test_harness_intervals(tmp_path):
    cmds = B.smallpond_data_commands("sort", "/in", 8, str(tmp_path))
    assert list(cmds) == [B.SMALLPOND_DATA, B.SMALLPOND_DATA_FAST]
    default, fast = cmds.values()
    assert "--fast" not in default and fast[-1] == "--fast"
    for tool, cmd in cmds.items():
        assert cmd[2:7] == ["sort", "--input", "/in", "--partitions", "8"]
        assert cmd[cmd.index("--output") + 1] == B.smallpond_output("sort", str(tmp_path), tool)
    # the two never share a work folder or an output folder (each run empties its own first)
    for flag in ("--work", "--output"):
        assert default[default.index(flag) + 1] != fast[fast.index(flag) + 1]


# --- the user-script benchmarks (user_pipelines.py): memory, profile, answer checks, the scripts themselves ---

import glob  # noqa: E402
import json  # noqa: E402

import groupby as groupby_bench  # noqa: E402
import jobprofile  # noqa: E402
import user_pipelines as U  # noqa: E402
from mpipipe.execution.journal import end_record, ok_record, run_record  # noqa: E402

ALLOCATE = "b = bytearray({mb} * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep({sleep})"


def test_peak_memory_is_the_largest_descendant_even_in_its_own_session_or_orphaned():
    # a child in a session of its own (as mpiexec's proxies start ranks), reaped by its parent
    nested = ("import os, subprocess, sys\n"
              f"subprocess.run([sys.executable, '-c', {ALLOCATE.format(mb=150, sleep=1.0)!r}], "
              "preexec_fn=os.setsid)\n")
    rec = B.run([sys.executable, "-c", nested], timeout=60, memory=True, label="nested")
    assert rec["status"] == "ok" and rec["peak_rss_mb"] >= 150
    assert rec["peak_rss_reaped_mb"] >= 150  # wait4 saw it through its parent
    assert rec["peak_rss_polled_mb"] >= 150 and "bytearray" in rec["largest_process"]  # so did the sampler
    # a child its parent never waits for: only the sampler sees it
    orphan = ("import subprocess, sys\n"
              f"subprocess.Popen([sys.executable, '-c', {ALLOCATE.format(mb=120, sleep=2.0)!r}])\n")
    rec = B.run([sys.executable, "-c", orphan], timeout=60, memory=True, label="orphan")
    assert rec["status"] == "ok" and rec["peak_rss_mb"] >= 120 > rec["peak_rss_reaped_mb"]
    assert rec["linger"] > 0.5  # the time is the command's own, up to its exit; its orphan lived on


def test_a_measured_run_keeps_the_exit_code_and_what_the_command_reported():
    rec = B.run([sys.executable, "-c", "print('BENCH_RESULT {\"inner\": 1.5}'); raise SystemExit(3)"], timeout=60,
                memory=True, label="exit3")
    assert rec["status"] == "error" and rec["rc"] == 3 and rec["inner"] == 1.5


def test_union_of_intervals():
    assert jobprofile.union_seconds([]) == 0
    assert jobprofile.union_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4


def write_job(job_dir, nodes, attempts, runs, started=None):
    """A job directory as rank 0 leaves it: job.json (nodes: (name, kind, npartitions)) and a journal of
    `runs`: (start, end, pid) and attempts: (name, partition, rank, t0, t1, run index)."""
    os.makedirs(job_dir, exist_ok=True)
    with open(os.path.join(job_dir, "job.json"), "w") as f:
        json.dump({"started": started,
                   "nodes": [{"id": i, "name": n, "kind": k, "npartitions": p, "fingerprint": f"fp{i}"}
                             for i, (n, k, p) in enumerate(nodes)]}, f)
    fps = {n: f"fp{i}" for i, (n, _, _) in enumerate(nodes)}
    lines = []
    for r, (start, end, pid) in enumerate(runs):
        lines.append(run_record("j", fps, executors=2, platform="local", total=3, pid=pid, time=start))
        lines += [ok_record(f"{fps[n]}:{p}", n, p, 0, rank, t0, t1, None) for n, p, rank, t0, t1, ri in attempts
                  if ri == r]
        lines.append(end_record("succeeded", time=end))
    with open(os.path.join(job_dir, "journal.log"), "wb") as f:
        f.write(b"".join(encode(rec) for rec in lines))


def test_the_profile_splits_the_wall_time_and_sums_tasks_per_node(tmp_path):
    job = str(tmp_path / "job")
    write_job(job, [("src", "source", 1), ("parts", "hash_partition", 1), ("agg", "sql", 2)],
              [("src", 0, 1, 0.0, 1.0, 0),  # an earlier process's run: left out
               ("src", 0, 1, 102.0, 102.5, 1), ("parts", 0, 1, 102.5, 104.0, 1),
               ("agg", 0, 1, 105.0, 107.0, 1), ("agg", 1, 2, 105.0, 106.0, 1)],
              [(0.0, 1.0, 11), (101.0, 107.5, 22)], started=100.25)
    p = jobprofile.profile(job, started=100.0, ended=108.0)
    assert [(n["node"], n["kind"], n["tasks"], n["task_s"]) for n in p["nodes"]] == [
        ("src", "source", 1, 0.5), ("parts", "hash_partition", 1, 1.5), ("agg", "sql", 2, 3.0)]
    assert (p["wall_s"], p["before_run_s"], p["run_to_first_task_s"], p["tasks_span_s"], p["after_last_task_s"]) \
        == (8.0, 1.0, 1.0, 5.0, 1.0)
    assert (p["before_job_s"], p["job_to_run_s"], p["last_task_to_run_end_s"], p["run_end_to_exit_s"]) \
        == (0.25, 0.75, 0.5, 0.5)
    assert p["no_task_running_s"] == 1.0  # 104..105: nothing ran
    assert p["busy_share"] == 0.5  # 5 task-seconds on 2 executors over 5 s
    text = "\n".join(jobprofile.lines(p))
    assert "hash_partition" in text and "no task ran for 1.00 s" in text
    assert jobprofile.profile(str(tmp_path / "nothing")) is None


def write_groups(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [r[0] for r in rows], "n": [r[1] for r in rows], "s": [r[2] for r in rows],
                             "t": [r[3] for r in rows]}), path)


def test_the_group_by_check_compares_every_group_with_duckdbs(tmp_path):
    ref, a, b = (str(tmp_path / f"{x}.parquet") for x in "rab")
    write_groups(ref, [(1, 2, 0.5, "x"), (2, 1, 3.0, "y"), (3, 4, 1e12, "z")])
    write_groups(a, [(2, 1, 3.0, "y")])
    write_groups(b, [(1, 2, 0.5, "x"), (3, 4, 1e12 * (1 + 1e-12), "z")])  # summed in another order
    assert groupby_bench.check_files("t", [a, b], ref).endswith("3 groups, 7 rows, agrees with DuckDB")
    write_groups(b, [(1, 2, 0.5, "x"), (3, 4, 1e12, "w")])
    assert "DIFFERS from DuckDB: 1 groups" in groupby_bench.check_files("t", [a, b], ref)
    write_groups(b, [(1, 2, 0.5, "x"), (2, 1, 3.0, "y"), (3, 4, 1e12, "z")])  # key 2 twice
    assert "DIFFERS" in groupby_bench.check_files("t", [a, b], ref)
    assert groupby_bench.check_files("t", [], ref) == "t: no output files"


def test_the_records_fingerprint_sees_a_payload_moved_to_another_key(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    keys = [bytes([i] * 10) for i in range(3)]
    pq.write_table(pa.table({"key": keys, "payload": [b"p0", b"p1", b"p2"]}), a)
    pq.write_table(pa.table({"key": keys, "payload": [b"p1", b"p0", b"p2"]}), b)
    assert sort_bench.fingerprint([a]) != sort_bench.fingerprint([b])


def test_the_order_fingerprint_is_row_for_row_across_files(tmp_path):
    one, x, y = (str(tmp_path / f"{n}.parquet") for n in ("one", "x", "y"))
    keys = [bytes([0] * 9 + [i]) for i in range(6)]
    write_keys(one, keys)
    write_keys(x, keys[:2])
    write_keys(y, keys[2:])
    assert sort_bench.order_fingerprint([x, y]) == sort_bench.order_fingerprint([one])
    assert sort_bench.order_fingerprint([y, x]) != sort_bench.order_fingerprint([one])
    write_keys(y, [keys[3], keys[2]] + keys[4:])  # two neighbours swapped
    assert sort_bench.order_fingerprint([x, y]) != sort_bench.order_fingerprint([one])


def test_the_sort_check_wants_order_the_inputs_records_and_duckdbs_keys_row_for_row(tmp_path):
    ref, x, y = (str(tmp_path / f"{n}.parquet") for n in ("ref", "x", "y"))
    keys = [bytes([0] * 9 + [i]) for i in range(4)]
    write_keys(ref, keys)
    write_keys(x, keys[:2])
    write_keys(y, keys[2:])
    expected = sort_bench.fingerprint([ref])
    assert U.sort_check("t", [x, y], expected, [ref], 4).endswith(": ok")
    assert "row for row the same keys as DuckDB's" in U.sort_check("t", [x, y], expected, [ref], 4)
    assert "keys NOT in order" in U.sort_check("t", [y, x], expected, [ref], 4)
    assert U.sort_check("t", [x, y], expected, None, 5).endswith("WRONG")  # a record missing
    assert U.sort_check("t", [], expected, None, 4) == "t: no output files"


def test_user_scripts_run_as_written_locally_or_under_mpiexec(tmp_path):
    local, env = U.user_command("sort_dataframe.py", "/in", "/out", 8, 2, "/work", "local")
    assert local[1:] == [os.path.join(U.USER, "sort_dataframe.py"), "-i", "/in/*.parquet", "-n", "8", "-o", "/out"]
    assert (env["SP_PLATFORM"], env["SP_NUM_EXECUTORS"], env["SP_DATA_ROOT"]) == ("local", "2", "/work")
    mpi, env = U.user_command("sort_dataframe.py", "/in", "/out", 8, 2, "/work", "mpi")
    assert mpi[1:3] == ["-n", "3"] and mpi[3:] == local and "SP_PLATFORM" not in env


def test_the_median_run_is_the_middle_successful_one():
    runs = [{"status": "ok", "wall": 3.0, "rep": 1}, {"status": "timeout", "rep": 2},
            {"status": "ok", "wall": 1.0, "rep": 3}, {"status": "ok", "wall": 2.0, "rep": 4}]
    assert U.median_run(runs)["rep"] == 4
    assert U.median_run(runs[:2])["rep"] == 1 and U.median_run([runs[1]]) is None


@pytest.mark.slow
def test_the_user_scripts_give_duckdbs_answers_on_a_tiny_input(tmp_path):
    """The three user scripts, run as the benchmark runs them (local platform, 2 executors), on a few thousand
    rows: their answers agree with DuckDB's, and their profile and memory are read."""
    gin, sin, work = str(tmp_path / "gin"), str(tmp_path / "sin"), str(tmp_path / "work")
    groupby_bench.make_input(gin, 4000, 2)
    sort_bench.write_input(sin, 3000, 2)
    ref = str(tmp_path / "ref.parquet")
    groupby_bench.alone("duckdb", gin, ref, 1)
    for script, inp in (("groupby_plan.py", gin), ("groupby_dataframe.py", gin), ("sort_dataframe.py", sin)):
        tool = f"mpipipe {script}"
        out = {tool: "" if script == "groupby_plan.py" else str(tmp_path / f"{script}-out")}
        argv, env = U.user_command(script, inp, out[tool] or None, 4, 2, work, "local")
        rec = B.run(argv, timeout=120, env=env, label=script, memory=True)
        assert rec["status"] == "ok", rec.get("error")
        assert rec["peak_rss_mb"] > 20
        files = U.output_files(tool, out, work, {tool: (script, "")})
        if script.startswith("groupby"):
            assert groupby_bench.check_files(tool, files, ref).endswith("agrees with DuckDB")
        else:
            expected = sort_bench.fingerprint(glob.glob(os.path.join(sin, "*.parquet")))
            assert U.sort_check(tool, files, expected, None, 3000).endswith(": ok")
        p = jobprofile.profile(os.path.join(work, U.job_id(script)), rec["start"], rec["start"] + rec["wall"])
        assert p is not None and sum(n["tasks"] for n in p["nodes"]) >= 1 + 1 + 4
        assert {"hash_partition", "column_partition"} & {n["kind"] for n in p["nodes"]}
