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
    assert cmp["ratios"] == [{"alternative": "other", "metric": "time (s)", "key": "wall", "mpipipe": "me", "ratio": 2.0}]
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
