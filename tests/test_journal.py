"""Tests for mpipipe.execution.journal: the record format and Journal replay after crashes."""
from __future__ import annotations

import os
import zlib

import pytest

from mpipipe.execution import journal as journal_mod
from mpipipe.execution.journal import (JOURNAL_NAME, Journal, decode, encode, encode_ok, encode_ok_batch, expand,
                                      read_records)


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
