"""The one small interface between ranks, and its local (socket pair) implementation.

Sends never block (a full peer must not deadlock two ranks that both send);
`poll` returns whatever has arrived. Idle callers back off politely instead of
spinning, so oversubscribed ranks leave the cores to the ones working.
"""
from __future__ import annotations

import pickle
import select
import socket
import time
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Tuple

from mpipipe.execution.framing import FrameReader, _HEADER


class PeerLost(Exception):
    """A peer rank went away (its process died or closed its end)."""

    def __init__(self, rank: int) -> None:
        super().__init__(f"rank {rank} is gone")
        self.rank = rank


class Transport(ABC):
    rank: int
    size: int
    peer_buffers = False  # whether executor ranks can send each other raw buffers (an MPI world's can)

    @abstractmethod
    def send(self, dest: int, msg: Any) -> None:
        """Queue a message for `dest`; never blocks."""

    @abstractmethod
    def poll(self) -> List[Tuple[int, Any]]:
        """All (source, message) pairs that have arrived, without waiting."""

    def wait(self, timeout: float) -> None:
        """Sleep until something may have arrived or `timeout` passed (default: just sleep)."""
        time.sleep(timeout)

    def pending_sends(self) -> int:
        return 0

    def close(self) -> None:
        """Flush what can be flushed and release resources."""


class Backoff:
    """Polite idling: short sleeps that double up to `cap` while nothing happens."""

    def __init__(self, start: float = 20e-6, cap: float = 1e-3) -> None:
        self.start = start
        self.cap = cap
        self.delay = start

    def reset(self) -> None:
        self.delay = self.start

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return d


class _Peer:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.out = bytearray()
        self.reader = FrameReader()
        self.closed = False


class PipeTransport(Transport):
    """Rank 0 holds one socket per executor rank; an executor holds one socket to rank 0."""

    def __init__(self, rank: int, size: int, socks: Dict[int, socket.socket]) -> None:
        self.rank = rank
        self.size = size
        self._peers = {r: _Peer(s) for r, s in socks.items()}
        self._by_fd = {p.sock.fileno(): r for r, p in self._peers.items()}

    def send(self, dest: int, msg: Any) -> None:
        peer = self._peers[dest]
        if peer.closed:
            raise PeerLost(dest)
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        peer.out += _HEADER.pack(len(data))
        peer.out += data
        self._flush(dest, peer)

    def _flush(self, rank: int, peer: _Peer) -> None:
        while peer.out and not peer.closed:
            try:
                n = peer.sock.send(peer.out)
            except BlockingIOError:
                return
            except (BrokenPipeError, ConnectionResetError):
                peer.closed = True
                raise PeerLost(rank)
            del peer.out[:n]

    def pending_sends(self) -> int:
        return sum(len(p.out) for p in self._peers.values())

    def poll(self) -> List[Tuple[int, Any]]:
        out: List[Tuple[int, Any]] = []
        for rank, peer in self._peers.items():
            if peer.out:
                self._flush(rank, peer)
        fds = [p.sock for p in self._peers.values() if not p.closed]
        if not fds:
            return out
        readable, _, _ = select.select(fds, [], [], 0)
        for sock in readable:
            rank = self._by_fd[sock.fileno()]
            peer = self._peers[rank]
            while True:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    data = b""
                if not data:
                    peer.closed = True
                    out.extend((rank, m) for m in peer.reader.feed(b""))
                    raise PeerLost(rank)
                out.extend((rank, m) for m in peer.reader.feed(data))
                if len(data) < (1 << 20):
                    break
        return out

    def wait(self, timeout: float) -> None:
        fds = [p.sock for p in self._peers.values() if not p.closed]
        wfds = [p.sock for p in self._peers.values() if p.out and not p.closed]
        if fds:
            select.select(fds, wfds, [], timeout)
        else:
            time.sleep(timeout)

    def close(self) -> None:
        deadline = time.monotonic() + 5.0
        while self.pending_sends() and time.monotonic() < deadline:
            try:
                for rank, peer in self._peers.items():
                    self._flush(rank, peer)
            except PeerLost:
                break
            time.sleep(0.001)
        for p in self._peers.values():
            try:
                p.sock.close()
            except OSError:
                pass


def socket_from_fd(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)


def make_pair() -> Tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b

