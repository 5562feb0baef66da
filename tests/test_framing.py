"""Tests for mpipipe.execution.framing: length-prefixed pickles over pipes and the incremental reader."""
from __future__ import annotations

import os
import struct
import threading

import pytest

from mpipipe.execution.framing import FrameReader, read_exact, read_msg, write_msg

MESSAGES = [
    None,
    0,
    "text with ünïcode",
    b"\x00\xff" * 3,
    {"tid": 7, "status": "ok", "info": {"v": [1, 2.5, (3, "x")]}},
    list(range(1000)),
]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def frame(obj):
    """The bytes write_msg() puts on the wire for obj."""
    r, w = os.pipe()
    try:
        write_msg(w, obj)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(r)


def test_write_then_read_over_a_pipe(pipe):
    r, w = pipe
    for msg in MESSAGES:
        write_msg(w, msg)
    assert [read_msg(r) for _ in MESSAGES] == MESSAGES


def test_frame_is_a_big_endian_length_then_the_pickle():
    data = frame({"a": 1})
    (n,) = struct.unpack("!I", data[:4])
    assert n == len(data) - 4 > 0


def test_message_larger_than_the_pipe_buffer(pipe):
    r, w = pipe
    big = os.urandom(3 * 1024 * 1024)  # far above a pipe's 64 KiB buffer: the writer must block and resume
    writer = threading.Thread(target=write_msg, args=(w, big))
    writer.start()
    got = read_msg(r)
    writer.join(timeout=10)
    assert got == big


def test_read_on_a_closed_pipe_raises_eof(pipe):
    r, w = pipe
    write_msg(w, "last")
    os.close(w)
    assert read_msg(r) == "last"
    with pytest.raises(EOFError):
        read_msg(r)


def test_eof_in_the_middle_of_a_message(pipe):
    r, w = pipe
    data = frame("a message cut short")
    os.write(w, data[:-3])
    os.close(w)
    with pytest.raises(EOFError):
        read_msg(r)


def test_read_exact_collects_short_reads(pipe):
    r, w = pipe
    os.write(w, b"abc")
    os.write(w, b"defg")
    assert read_exact(r, 5) == b"abcde"
    assert read_exact(r, 2) == b"fg"


def test_frame_reader_message_split_across_feeds():
    data = frame(MESSAGES[4])
    reader = FrameReader()
    assert reader.feed(data[:2]) == []  # not even a whole header
    assert reader.feed(data[2:6]) == []  # header and a little body
    assert reader.feed(data[6:-1]) == []
    assert reader.feed(data[-1:]) == [MESSAGES[4]]
    assert reader.feed(b"") == []


def test_frame_reader_byte_by_byte():
    data = b"".join(frame(m) for m in MESSAGES)
    reader = FrameReader()
    out = []
    for i in range(len(data)):
        out.extend(reader.feed(data[i:i + 1]))
    assert out == MESSAGES


def test_frame_reader_several_messages_in_one_feed():
    reader = FrameReader()
    assert reader.feed(b"".join(frame(m) for m in MESSAGES)) == MESSAGES


def test_frame_reader_messages_and_a_partial_one_in_one_feed():
    first, second, third = frame("one"), frame("two"), frame({"three": 3})
    reader = FrameReader()
    assert reader.feed(first + second + third[:5]) == ["one", "two"]
    assert reader.feed(third[5:] + first) == [{"three": 3}, "one"]
    assert reader.feed(b"") == []


def test_frame_reader_empty_pickle_payloads():
    reader = FrameReader()
    data = frame("") + frame(b"") + frame([])
    assert reader.feed(data) == ["", b"", []]
