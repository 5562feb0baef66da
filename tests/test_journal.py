"""Tests for mpipipe.execution.journal: the record format and Journal replay after crashes."""
from __future__ import annotations

import json
import os
import re
import stat
import zlib

import pytest

from mpipipe.execution import journal as journal_mod
from mpipipe.execution.journal import (END, FAILED, JOURNAL_NAME, KIND, NODES, OK, OK_BATCH, RUN, Journal, JournalTail,
                                      decode, encode, encode_ok, encode_ok_batch, end_record, expand, failed_record,
                                      is_attempt, kind, nodes_record, ok_batch_record, ok_record, read_raw_records,
                                      read_records, run_record, split_key, task_key)


def ok(key, **extra):
    return {"s": "ok", "k": key, **extra}


def failed(key, **extra):
    return {"s": "failed", "k": key, **extra}


def replay(job_dir):
    """Task key -> the record a re-run would reuse."""
    done = Journal(str(job_dir)).replay_by_node()
    return {f"{fp}:{p}": rec for fp, parts in done.items() for p, rec in parts.items()}


def write_journal(job_dir, records, fresh=False):
    j = Journal(str(job_dir))
    j.open(fresh=fresh)
    for rec in records:
        j.append(rec)
    j.close()
    return j


# --- record format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", [
    {},
    ok("abc:0", o="/x/y", v=[1, 2.5, None, True], log=["/l", 1, 2]),
    {"type": "run", "argv": ["a b", "é", "\n"], "nested": {"k": {"z": 0}}},
])
def test_encode_decode_round_trip(record):
    line = encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line[8:9] == b" "
    assert int(line[:8], 16) == zlib.crc32(line[9:-1])
    assert decode(line) == record


@pytest.mark.parametrize("output, value, logref", [
    (None, None, ("/logs/rank-1/worker-0.log", 0, 120)),
    ("/out/a b/\"q\"/é/part-00001", {"rows": 3, "bytes": 10, "x": [1.5, "é", None]}, ("/l", 7, None)),
    ("/o", 0, None),
    (None, "text\nwith newline", ["/l", None, None]),
])
def test_the_fast_ok_encoder_writes_the_same_bytes_as_the_general_one(output, value, logref):
    t0, t1 = 1795240646.988086, 1795240647.25
    line = encode_ok("f00d:12", "node_1.x-y", 12, 1, 3, t0, t1, output, value, logref)
    rec = ok("f00d:12", n="node_1.x-y", p=12, a=1, r=3, t0=t0, t1=t1, o=output)
    if value is not None:
        rec["v"] = value
    rec["log"] = list(logref) if logref is not None else None
    assert line == encode(rec)
    assert decode(line) == rec


def test_encode_falls_back_to_str_for_unknown_types():
    rec = decode(encode({"k": "a", "path": object}))
    assert rec == {"k": "a", "path": str(object)}


def test_decode_torn_line_without_newline():
    line = encode(ok("k1"))
    assert decode(line[:-1]) is None
    assert decode(line[: len(line) // 2]) is None
    assert decode(b"") is None


def test_decode_bad_crc():
    line = encode(ok("k1"))
    crc = int(line[:8], 16)
    assert decode(b"%08x" % (crc ^ 1) + line[8:]) is None
    # a damaged body no longer matches the CRC
    assert decode(line.replace(b"k1", b"k2")) is None


def test_decode_bad_json_and_non_dict():
    for body in (b"{not json", b"[1, 2]", b"\"text\"", b"\xff\xfe"):
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        assert decode(line) is None, body


def test_decode_bad_header():
    body = b'{"k":"a"}'
    assert decode(b"zzzzzzzz %s\n" % body) is None
    assert decode(b"%08x_%s\n" % (zlib.crc32(body), body)) is None


BATCH_ITEMS = [  # (partition, attempt, t0, t1, output, value, logref, value file); paths in the job directory
    (4, 0, 1795240646.988086, 1795240646.988191, None, None, ("logs/rank-1/worker-0.log", 10, 52), None),
    (5, 2, 1795240646.988201, 1795240647.5, "outputs/node/part-00005", {"rows": 3}, ("logs/rank-1/worker-1.log", 0,
                                                                                     None), None),
    (9, 0, 1795240646.9, 1795240646.95, None, [1, "é"], None, None),
    (11, 1, 1795240646.9, 1795240647.95, None, None, None, "values/node/p11.a1.r3.42.json"),
]


def within(job_dir, path):
    return None if path is None else f"{job_dir}/{path}"


def batch_records(job_dir, items=BATCH_ITEMS):
    """The scheduler's "ok" records of these tasks (what encode_ok_batch takes)."""
    out = []
    for p, a, t0, t1, o, v, logref, vf in items:
        rec = ok(f"f00d:{p}", n="node", p=p, a=a, r=3, t0=t0, t1=t1, o=within(job_dir, o))
        if v is not None:
            rec["v"] = v
        if vf is not None:
            rec["vf"] = vf
        rec["log"] = (within(job_dir, logref[0]), *logref[1:]) if logref else None
        out.append(rec)
    return out


def test_a_batch_record_reads_back_as_one_ok_record_per_task(tmp_path):
    line = encode_ok_batch("f00d", "node", 3, batch_records(tmp_path))
    (tmp_path / JOURNAL_NAME).write_bytes(encode(ok("f00d:1", v=0)) + line)
    got = list(read_records(str(tmp_path / JOURNAL_NAME)))
    assert got[0] == ok("f00d:1", v=0)
    assert [r["k"] for r in got[1:]] == ["f00d:4", "f00d:5", "f00d:9", "f00d:11"]
    for rec, (p, a, t0, t1, o, v, logref, vf) in zip(got[1:], BATCH_ITEMS):
        assert (rec["s"], rec["n"], rec["p"], rec["a"], rec["r"], rec["o"]) == ("ok", "node", p, a, 3,
                                                                                within(tmp_path, o))
        assert rec.get("v") == v and ("v" in rec) == (v is not None)
        assert rec.get("vf") == vf and ("vf" in rec) == (vf is not None)
        assert rec["log"] == ([within(tmp_path, logref[0]), *logref[1:]] if logref else None)
        assert abs(rec["t0"] - t0) < 2e-6 and abs(rec["t1"] - t1) < 2e-6  # kept to the microsecond
    assert expand(decode(line)) == got[1:]


def test_a_value_file_reference_is_written_by_both_encoders():
    """A value too large for the journal is named by its file ("vf", relative to the job directory)."""
    t0, t1 = 1795240646.988086, 1795240647.25
    line = encode_ok("f00d:3", "big", 3, 0, 1, t0, t1, None, None, None, "values/big/p3.a0.r1.9.json")
    rec = ok("f00d:3", n="big", p=3, a=0, r=1, t0=t0, t1=t1, o=None, vf="values/big/p3.a0.r1.9.json", log=None)
    assert line == encode(rec) and decode(line) == rec
    small = ok("f00d:4", n="big", p=4, a=0, r=1, t0=t0, t1=t1, o=None, v=1, log=None)
    batch = decode(encode_ok_batch("f00d", "big", 1, [dict(rec, log=None), small]))
    assert batch["vf"] == ["values/big/p3.a0.r1.9.json", None] and batch["v"] == [None, 1]
    assert expand(batch) == [rec, small]
    assert "vf" not in decode(encode_ok_batch("f00d", "big", 1, [small, dict(small, p=5)]))


def test_replay_by_node_takes_batches_and_single_records_alike(tmp_path):
    j = Journal(str(tmp_path))
    j.open()
    j.append_line(encode_ok_batch("f00d", "node", 1, batch_records(tmp_path)))
    j.append(ok("f00d:5", v="again"))  # a later outcome of the same task wins
    j.append(ok("beef:0", n="b", o=f"{tmp_path}/outputs/b/part-00000"))
    j.append(failed("beef:1"))
    j.close()
    done = Journal(str(tmp_path)).replay_by_node()
    assert sorted(done) == ["beef", "f00d"]
    assert sorted(done["f00d"]) == [4, 5, 9, 11] and done["f00d"][5]["v"] == "again"
    assert done["f00d"][9]["v"] == [1, "é"] and done["f00d"][11]["vf"] == "values/node/p11.a1.r3.42.json"
    assert list(done["beef"]) == [0]
    assert set(replay(tmp_path)) == {"f00d:4", "f00d:5", "f00d:9", "f00d:11", "beef:0"}


# --- Journal -----------------------------------------------------------------------------------------


def test_replay_returns_last_ok_record_per_key(tmp_path):
    write_journal(tmp_path, [
        ok("a:0", v=1),
        failed("b:0", error="boom"),
        ok("a:0", v=2),
        {"type": "run", "argv": []},
        ok("b:1", v=3),
        failed("a:1"),
    ])
    done = replay(tmp_path)
    assert set(done) == {"a:0", "b:1"}
    assert done["a:0"]["v"] == 2
    assert done["b:1"]["v"] == 3


def test_a_later_failure_does_not_undo_an_earlier_success(tmp_path):
    write_journal(tmp_path, [ok("a:0", v=1), failed("a:0")])
    assert replay(tmp_path)["a:0"]["v"] == 1


def test_nothing_is_written_before_flush(tmp_path):
    j = Journal(str(tmp_path))
    j.open()
    j.append(ok("a:0"))
    assert replay(tmp_path) == {}
    j.flush()
    assert set(replay(tmp_path)) == {"a:0"}
    j.close()


def test_maybe_flush_waits_for_the_interval(tmp_path):
    j = Journal(str(tmp_path), flush_every=10.0)
    j.open()
    j.append(ok("a:0"))
    j.maybe_flush(j._last_flush + 1.0)
    assert replay(tmp_path) == {}
    j.maybe_flush(j._last_flush + 11.0)
    assert set(replay(tmp_path)) == {"a:0"}
    j.close()


def test_missing_and_zero_length_journal_replay_to_empty(tmp_path):
    assert replay(tmp_path) == {}
    (tmp_path / JOURNAL_NAME).write_bytes(b"")
    assert replay(tmp_path) == {}


def test_torn_last_record_is_ignored_and_the_next_run_starts_a_fresh_line(tmp_path):
    write_journal(tmp_path, [ok("a:0", v=1)])
    path = tmp_path / JOURNAL_NAME
    torn = encode(ok("b:0", v=2))[:-7]
    with open(path, "ab") as f:
        f.write(torn)  # a crash in the middle of a write
    assert set(replay(tmp_path)) == {"a:0"}

    write_journal(tmp_path, [ok("c:0", v=3), ok("d:0", v=4)])
    data = path.read_bytes()
    assert torn + b"\n" + encode(ok("c:0", v=3)) in data
    done = replay(tmp_path)
    assert {k: r["v"] for k, r in done.items()} == {"a:0": 1, "c:0": 3, "d:0": 4}


def test_open_adds_no_newline_after_a_clean_end(tmp_path):
    write_journal(tmp_path, [ok("a:0")])
    write_journal(tmp_path, [ok("b:0")])
    assert (tmp_path / JOURNAL_NAME).read_bytes() == encode(ok("a:0")) + encode(ok("b:0"))


def test_damaged_middle_line_is_skipped(tmp_path):
    lines = [encode(ok(f"k:{i}", v=i)) for i in range(3)]
    lines[1] = lines[1].replace(b"k:1", b"k:9")
    (tmp_path / JOURNAL_NAME).write_bytes(b"".join(lines))
    assert [r["k"] for r in read_records(str(tmp_path / JOURNAL_NAME))] == ["k:0", "k:2"]


def test_fresh_moves_the_old_journal_aside(tmp_path):
    write_journal(tmp_path, [ok("a:0")])
    old_bytes = (tmp_path / JOURNAL_NAME).read_bytes()
    write_journal(tmp_path, [ok("b:0")], fresh=True)
    assert set(replay(tmp_path)) == {"b:0"}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(JOURNAL_NAME + ".") and p.name.endswith(".old")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == old_bytes


def test_fresh_without_an_old_journal(tmp_path):
    write_journal(tmp_path, [ok("a:0")], fresh=True)
    assert os.listdir(tmp_path) == [JOURNAL_NAME]
    assert set(replay(tmp_path)) == {"a:0"}


def test_two_fresh_runs_in_the_same_second_keep_both_old_journals(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod.time, "strftime", lambda fmt, *a: "20240101-000000")
    write_journal(tmp_path, [ok("first:0")])
    write_journal(tmp_path, [ok("second:0")], fresh=True)
    write_journal(tmp_path, [ok("third:0")], fresh=True)
    aside = sorted(p.read_bytes() for p in tmp_path.iterdir() if p.name.endswith(".old"))
    assert aside == sorted([encode(ok("first:0")), encode(ok("second:0"))])


def test_close_is_idempotent_and_flush_after_close_is_harmless(tmp_path):
    j = write_journal(tmp_path, [ok("a:0")])
    j.close()
    j.append(ok("b:0"))
    j.flush()
    assert set(replay(tmp_path)) == {"a:0"}


# --- record kinds: a constructor each, one reader --------------------------------------------------------------

PLAN = {"square": "f00d", "total": "beef"}


def every_kind(job_dir):
    """One record of each kind a run writes (batches aside), with paths inside `job_dir`."""
    logref = (f"{job_dir}/logs/rank-1/worker-0.log", 10, 52)
    return [
        run_record("job-1", PLAN, executors=2, platform="mpi", total=6, pid=42, time=100.0),
        nodes_record({"late": "cafe"}, time=100.5),
        ok_record("f00d:0", "square", 0, 0, 1, 101.0, 101.5, None, value={"rows": 3, "x": [1.5, "é", None]},
                  log=logref),
        ok_record("f00d:1", "square", 1, 2, 1, 101.0, 101.25, f"{job_dir}/outputs/square/part-00001",
                  value_file="values/square/p1.a2.r1.7.json"),
        failed_record("f00d:2", "square", 2, 0, 2, 101.0, 101.125, "ValueError: bad", log=logref),
        failed_record("beef:0", "total", 0, 1, 0, 102.0, 102.0, "it needs cuda(mem=80GiB)",
                      log=(f"{job_dir}/logs/rank-0.log", 0, None), where="rank 0 (placement)"),
        end_record("failed", time=103.0),
    ]


def as_made(rec):
    """A record as read back, with its kind under KIND (read_records gives run, nodes and end records theirs
    under "type")."""
    return {KIND: kind(rec), **{k: v for k, v in rec.items() if k not in ("s", "type")}}


def line_as_before(rec):
    """A journal line as versions before this one wrote it: the same CRC and compact JSON, the kind of run,
    nodes and end records under "type"."""
    if rec.get(KIND) in (RUN, NODES, END):
        rec = {"type": rec[KIND], **{k: v for k, v in rec.items() if k != KIND}}
    body = json.dumps(rec, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def test_every_record_kind_reads_back_as_it_was_made(tmp_path):
    made = every_kind(tmp_path)
    write_journal(tmp_path, made)
    got = list(read_records(str(tmp_path / JOURNAL_NAME)))
    assert [kind(r) for r in got] == [RUN, NODES, OK, OK, FAILED, FAILED, END]
    assert [as_made(r) for r in got] == made
    assert [is_attempt(r) for r in got] == [False, False, True, True, True, True, False]
    # stored: every kind under the one key
    assert [r[KIND] for r in read_raw_records(str(tmp_path / JOURNAL_NAME))] == [r[KIND] for r in made]
    assert not [r for r in read_raw_records(str(tmp_path / JOURNAL_NAME)) if "type" in r]


def test_the_constructors_give_what_the_scheduler_wrote():
    assert run_record("j", PLAN, executors=3, platform="local", total=9, pid=7, time=1.5) == {
        "s": "run", "job": "j", "time": 1.5, "pid": 7, "executors": 3, "platform": "local", "total": 9, "plan": PLAN}
    assert nodes_record({"n": "ff"}, time=2.0) == {"s": "nodes", "time": 2.0, "plan": {"n": "ff"}}
    assert end_record("interrupted", time=3.0) == {"s": "end", "status": "interrupted", "time": 3.0}
    assert failed_record("ff:1", "n", 1, 0, 2, 1.0, 2.0, "boom", ["/l", 0, 9], None) == {
        "s": "failed", "k": "ff:1", "n": "n", "p": 1, "a": 0, "r": 2, "t0": 1.0, "t1": 2.0, "e": "boom",
        "log": ["/l", 0, 9], "where": None}
    assert run_record("j", {}, executors=1, platform="mpi", total=0)["pid"] == os.getpid()
    assert task_key("ff", 12) == "ff:12" and split_key("ab:cd:12") == ("ab:cd", "12")


def test_ok_record_is_the_record_of_the_fast_encoder(tmp_path):
    for rec in every_kind(tmp_path):
        if kind(rec) == OK:
            assert encode(rec) == encode_ok(rec["k"], rec["n"], rec["p"], rec["a"], rec["r"], rec["t0"], rec["t1"],
                                            rec["o"], rec.get("v"), rec["log"], rec.get("vf"))


def test_a_batch_made_by_its_constructor_reads_back_as_its_ok_records(tmp_path):
    oks = [ok_record(f"f00d:{p}", "square", p, a, 3, t0, t1, o and f"{tmp_path}/{o}", value=v,
                     log=logref and (f"{tmp_path}/{logref[0]}", *logref[1:]), value_file=vf)
           for p, a, t0, t1, o, v, logref, vf in [
               (4, 0, 100.0, 100.5, None, None, ("logs/rank-1/worker-0.log", 10, 52), None),
               (5, 2, 100.25, 101.0, "outputs/square/part-00005", {"rows": 3}, None, None),
               (9, 0, 100.125, 100.25, None, None, None, "values/square/p9.a0.r3.42.json")]]
    batch = ok_batch_record("f00d", "square", 3, oks)
    assert kind(batch) == OK_BATCH and encode(batch) == encode_ok_batch("f00d", "square", 3, oks)
    j = Journal(str(tmp_path))
    j.open()
    j.append(batch)
    j.append_line(encode_ok_batch("f00d", "square", 3, oks))
    j.close()
    assert [r[KIND] for r in read_raw_records(str(tmp_path / JOURNAL_NAME))] == [OK_BATCH, OK_BATCH]
    assert list(read_records(str(tmp_path / JOURNAL_NAME))) == oks + oks  # times exact: binary fractions


def test_a_task_range_record_made_from_columns_is_the_batch_of_its_ok_records(tmp_path):
    """ok_run_record (what rank 0 writes for a task range's successes, straight from the columns its worker
    reported) gives the record ok_batch_record gives for the same tasks' ok records."""
    from mpipipe.execution.journal import ok_run_record

    log = f"{tmp_path}/logs/rank-1/worker-0.log"
    t0, t1 = [100.0, 100.25, 100.5], [100.125, 100.5, 101.0]
    outs = [None, f"{tmp_path}/outputs/square/part-00008", None]
    for attempt, values, logpath in [(0, [None, {"rows": 3}, 7], log), (2, [None, None, None], None)]:
        offsets = [10, 10, 52, 60]
        oks = [ok_record(f"f00d:{7 + i}", "square", 7 + i, attempt, 3, t0[i], t1[i], outs[i], value=values[i],
                         log=None if logpath is None else (logpath, offsets[i], offsets[i + 1])) for i in range(3)]
        made = ok_run_record("f00d", "square", 3, 7, attempt, t0, t1, outs, values, logpath, offsets)
        assert made == ok_batch_record("f00d", "square", 3, oks)
        assert expand(decode(encode(made))) == oks


def test_a_batch_of_task_ranges_and_lone_tasks_is_made_from_the_ranges_columns_as_from_their_records(tmp_path):
    """Several pieces reported in one message (ranges' RangeBlocks and lone tasks' records, in any order) make
    the batch record their records make, the ranges' columns taken without a record per task."""
    from mpipipe.execution.journal import RangeBlock

    log = f"{tmp_path}/logs/rank-1/worker-0.log"
    a = RangeBlock("f00d", "square", 7, 0, 3, [100.0, 100.25], [100.125, 100.5],
                   [None, f"{tmp_path}/outputs/square/part-00008"], [None, {"rows": 3}], log, [10, 10, 52])
    b = RangeBlock("f00d", "square", 12, 2, 3, [101.0, 101.5, 102.0], [101.25, 101.75, 102.5], [None] * 3,
                   [None] * 3, f"{tmp_path}/logs/rank-1/worker-1.log", [0, 4, 4, 9])
    lone = ok_record("f00d:9", "square", 9, 1, 3, 100.75, 100.875, None, value=5, log=(log, 52, 60))
    for pieces in ([a, lone, b], [b, a], [lone, a]):
        oks = [r for piece in pieces for r in (piece.records() if type(piece) is RangeBlock else [piece])]
        assert ok_batch_record("f00d", "square", 3, pieces) == ok_batch_record("f00d", "square", 3, oks)
        assert encode_ok_batch("f00d", "square", 3, pieces) == encode_ok_batch("f00d", "square", 3, oks)
        assert [dict(r) for r in expand(decode(encode_ok_batch("f00d", "square", 3, pieces)))] == [
            dict(r, log=list(r["log"])) for r in oks]


def test_a_journal_in_the_earlier_format_reads_the_same(tmp_path):
    """Journals on users' disks keep the kind of run, nodes and end records under "type": they read, replay
    and resume exactly like journals of this version."""
    made = every_kind(tmp_path) + [run_record("job-1", {"square": "f00e"}, executors=2, platform="mpi", total=6,
                                              pid=43, time=200.0)]
    path = tmp_path / JOURNAL_NAME
    batch = encode_ok_batch("f00d", "square", 1, [ok_record("f00d:3", "square", 3, 0, 1, 101.0, 101.5, None)])

    write_journal(tmp_path, made)
    with open(path, "ab") as f:
        f.write(batch)
    now = list(read_records(str(path)))
    j = Journal(str(tmp_path))
    now_done, now_plan = j.replay_by_node(), j.previous_plan

    path.write_bytes(b"".join(line_as_before(r) for r in made) + batch)
    assert [r.get("type") for r in read_raw_records(str(path))][:2] == [RUN, NODES]  # the old layout indeed
    before = list(read_records(str(path)))
    j = Journal(str(tmp_path))
    assert before == now and len(before) == len(made) + 1
    assert j.replay_by_node() == now_done and sorted(now_done["f00d"]) == [0, 1, 3]
    assert j.previous_plan == now_plan == {"square": "f00e", "total": "beef", "late": "cafe"}


def test_run_nodes_and_end_records_are_read_with_their_kind_under_type(tmp_path):
    """What read_records gives code that still tests rec.get("type") == "run" or takes a record with an "s"
    for a task attempt: kind() reads it either way."""
    write_journal(tmp_path, [run_record("j", PLAN, executors=1, platform="mpi", total=1), nodes_record({}),
                             end_record("succeeded")])
    got = list(read_records(str(tmp_path / JOURNAL_NAME)))
    assert [r.get("type") for r in got] == ["run", "nodes", "end"] and not [r for r in got if "s" in r]
    assert [kind(r) for r in got] == [RUN, NODES, END]


def test_append_stores_a_record_given_in_the_earlier_format_in_this_one(tmp_path):
    write_journal(tmp_path, [{"type": "end", "status": "succeeded", "time": 1.0}, {"type": "other", "x": 1}])
    assert list(read_raw_records(str(tmp_path / JOURNAL_NAME))) == [end_record("succeeded", time=1.0),
                                                                      {"type": "other", "x": 1}]


def test_a_tail_reads_what_the_journal_gained_as_read_records_does(tmp_path):
    path = tmp_path / JOURNAL_NAME
    tail = JournalTail(str(path))
    assert tail.read() == (False, [])  # no journal yet
    made = every_kind(tmp_path)
    lines = [encode(r) for r in made]
    path.write_bytes(lines[0] + lines[1] + lines[2][:9])  # the last line is still being written
    again, got = tail.read()
    assert not again and [kind(r) for r in got] == [RUN, NODES]
    assert tail.read() == (False, [])
    batch = encode_ok_batch("f00d", "square", 1, [ok_record(f"f00d:{p}", "square", p, 0, 1, 1.0, 2.0, None)
                                                  for p in (7, 8)])
    foreign = encode(ok_record("f00d:9", "square", 9, 0, 1, 1.0, 2.0, "/elsewhere/outputs/square/part-00009"))
    with open(path, "ab") as f:
        f.write(lines[2][9:] + b"".join(lines[3:]) + b"garbage\n" + batch + foreign)
    again, more = tail.read()
    assert not again and [kind(r) for r in more] == [OK, OK, FAILED, FAILED, END, OK, OK]  # the foreign one dropped
    assert got + more == list(read_records(str(path)))
    os.replace(path, tmp_path / "journal.log.old")  # --fresh moves it aside
    path.write_bytes(encode(end_record("succeeded")))
    again, got = tail.read()
    assert again and [kind(r) for r in got] == [END]


# package modules (relative to mpipipe/) that name "s" or "type" in a way that is not reading a journal record
NOT_JOURNAL = {
    "flags.py": "argparse keyword arguments (kw['type'])",
    "steps/sink.py": "the sink's marker file ({'type': 'copy', ...})",
    "execution/driver.py": "argparse keyword arguments of smallpond's flags ({'type': int})",
    "steps/partial_agg.py": "DuckDB's parse trees as JSON (node['type'])",
}
# modules that still build journal records as dict literals; remove each entry once the module calls the
# journal's constructors (run_record, nodes_record, end_record, ok_record, failed_record)
NOT_YET_CONSTRUCTORS = {
    "execution/outcomes.py": "ok records of single tasks, kept in memory as dicts",
}
RECORD_KEY = re.compile(r"""\.get\(\s*["'](?:s|type)["']"""  # rec.get("s")
                        r"""|\[\s*["'](?:s|type)["']\s*\]"""  # rec["type"]
                        r"""|[{,]\s*["'](?:s|type)["']\s*:"""  # {"s": ...}
                        r"""|\\?"(?:s|type)\\?":\s*\\?["']""")  # '{"s":"ok"' in encoded text


def test_no_module_but_the_journal_tells_records_apart_by_their_keys():
    """Every reader dispatches with journal.kind() and the kind constants, every writer uses its constructors:
    the record layout lives in mpipipe/execution/journal.py alone."""
    import mpipipe

    root = os.path.dirname(mpipipe.__file__)
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if not name.endswith(".py") or rel in ("execution/journal.py", *NOT_JOURNAL, *NOT_YET_CONSTRUCTORS):
                continue
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if RECORD_KEY.search(line):
                        found.append(f"mpipipe/{rel}:{n}: {line.strip()}")
    assert not found, "journal records read or built outside mpipipe.execution.journal:\n" + "\n".join(found)


def test_the_key_pattern_sees_what_it_is_meant_to():
    for text in ['if rec.get("s") == "ok":', "kind = rec.get('type')", 'r["s"]', '{"type": "run", "time": 1}',
                 'x = {"k": 1, "s": OK}', """b'{"s":"ok","k":'""", """if b'"type":"run"' in line"""]:
        assert RECORD_KEY.search(text), text
    for text in ['rec.get("status")', 'rec["k"]', 'kind(rec) == RUN', '{"size": 1}', 'x.get("n")']:
        assert not RECORD_KEY.search(text), text


# --- writing a file whole or not at all (mpipipe.atomic: job.json, state.json, values, reports, ...) -----------


def test_atomic_write_replaces_the_file_whole_with_the_mode_asked_for(tmp_path):
    from mpipipe.atomic import atomic_write

    path = tmp_path / "state.json"
    path.write_text("old")
    old_umask = os.umask(0o077)
    try:
        atomic_write(str(path), "new é")
        assert path.read_text(encoding="utf-8") == "new é" and stat.S_IMODE(path.stat().st_mode) == 0o600
        atomic_write(str(path), b"script", mode=0o750)  # whatever the umask takes away
        assert stat.S_IMODE(path.stat().st_mode) == 0o750
        os.umask(0o022)
        atomic_write(str(path), b"shared", mode=None, sync=True)  # mode None: as open() would make it
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"shared"
    finally:
        os.umask(old_umask)
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from mpipipe.atomic import atomic_file, temp_path

    path = tmp_path / "job.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(str(path)) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["job.json"]
    stale = tmp_path / os.path.basename(temp_path(str(path)))  # a crash's leftover, with a mode too open
    stale.write_bytes(b"x" * 100)
    stale.chmod(0o666)
    with atomic_file(str(path)) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["job.json"]


def test_write_private_file_is_an_owner_only_atomic_write(tmp_path):
    from mpipipe.ownership import write_private_file

    path = tmp_path / "v.json"
    write_private_file(str(path), b"[1]")
    assert path.read_bytes() == b"[1]" and stat.S_IMODE(path.stat().st_mode) == 0o600
