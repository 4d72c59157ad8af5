"""common/_pika_writes.py (held writes) and common/_pika_reads.py (one read per event).

pika's own plaintext transport and selector I/O loop, over a local socket pair: what reaches the
other end, in which order, and when pika is asked to watch for writability."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from reqrep.common._pika_deliver import use_fast_deliveries
from reqrep.common._pika_reads import RECV_BYTES, install_single_reads
from reqrep.common._pika_writes import (
    coalesce_pika_writes,
    flush_pika_writes,
    hold_pika_writes,
)

LIMIT = 10.0  # seconds any loop below may run


class _Connection:
    """What the transport's protocol points at: reqrep's mark lives here."""

    _transport: Any = None


class _Protocol:
    def __init__(self, connection: _Connection) -> None:
        self.conn = connection
        self.received: list[bytes] = []
        self.lost: list[BaseException | None] = []

    def connection_made(self, _transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, error: BaseException | None) -> None:
        self.lost.append(error)


class _Pair:
    """A pika transport on one end of a socket pair; ``peer`` is the other end."""

    def __init__(self, *, marked: bool) -> None:
        assert coalesce_pika_writes() is True
        assert install_single_reads() is True
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.ours = ours
        self.loop = IOLoop()
        self.nbio = SelectorIOServicesAdapter(self.loop)
        self.watch: list[str] = []  # set_writer / remove_writer calls, in order
        self._spy("set_writer")
        self._spy("remove_writer")
        self.connection = _Connection()
        if marked:
            use_fast_deliveries(self.connection)
        self.protocol = _Protocol(self.connection)
        self.transport: Any = _AsyncPlaintextTransport(ours, self.protocol, self.nbio)
        self.connection._transport = self.transport

    def _spy(self, name: str) -> None:
        original = getattr(self.nbio, name)

        def spy(*args: Any) -> Any:
            self.watch.append(name)
            return original(*args)

        setattr(self.nbio, name, spy)

    def peer_reads(self, size: int) -> bytes:
        """Everything the peer has received, up to ``size`` bytes (waits at most LIMIT)."""
        got = bytearray()
        self.peer.settimeout(LIMIT)
        while len(got) < size:
            chunk = self.peer.recv(size - len(got))
            if not chunk:
                break
            got += chunk
        return bytes(got)

    def peer_has_nothing(self) -> bool:
        self.peer.setblocking(False)
        try:
            self.peer.recv(1)
        except BlockingIOError:
            return True
        return False

    def run_until(self, done: Any) -> None:
        """Turn pika's loop until ``done()`` (checked every millisecond), at most LIMIT."""
        deadline = time.monotonic() + LIMIT

        def check() -> None:
            if done() or time.monotonic() > deadline:
                self.loop.stop()
            else:
                self.loop.call_later(0.001, check)

        self.loop.call_later(0, check)
        self.loop.start()
        assert done(), "the loop ran out of time"

    def close(self) -> None:
        if self.transport._state != self.transport._STATE_COMPLETED:  # not aborted by a test
            self.transport.abort()
        self.ours.close()
        self.peer.close()
        self.loop.close()


@pytest.fixture
def pair() -> Iterator[_Pair]:
    made = _Pair(marked=True)
    yield made
    made.close()


def test_held_writes_wait_for_the_flush_then_go_out_in_one_piece(pair: _Pair) -> None:
    hold_pika_writes(pair.connection)
    for frame in (b"method", b"header", b"body"):
        pair.transport.write(frame)
    assert pair.peer_has_nothing()
    flush_pika_writes(pair.connection)
    assert pair.peer_reads(16) == b"methodheaderbody"
    assert pair.watch == []  # no writability watcher was set, none removed
    assert not pair.transport._tx_buffers


def test_writes_nobody_holds_go_pikas_way(pair: _Pair) -> None:
    pair.transport.write(b"frame")
    assert pair.watch == ["set_writer"]  # pika waits for writability, as it always did
    flush_pika_writes(pair.connection)
    assert pair.peer_reads(5) == b"frame"
    assert pair.watch == ["set_writer", "remove_writer"]


def test_a_flush_ends_the_hold(pair: _Pair) -> None:
    hold_pika_writes(pair.connection)
    flush_pika_writes(pair.connection)  # nothing was written
    pair.transport.write(b"later")  # a heartbeat, say: not held, so pika sends it by itself
    assert pair.watch == ["set_writer"]
    pair.run_until(lambda: not pair.transport._tx_buffers)
    assert pair.peer_reads(5) == b"later"


def test_nothing_is_held_while_pika_still_has_frames_to_send(pair: _Pair) -> None:
    pair.transport.write(b"first")  # unsent, with pika watching for writability
    hold_pika_writes(pair.connection)
    pair.transport.write(b"second")
    assert not pair.transport._reqrep_held
    pair.run_until(lambda: not pair.transport._tx_buffers)
    assert pair.peer_reads(11) == b"firstsecond"
    assert pair.watch == ["set_writer", "remove_writer"]


def test_what_the_socket_cannot_take_goes_out_when_it_can(pair: _Pair) -> None:
    size = 8 * 1024 * 1024  # far more than a socket pair buffers
    payload = bytes(range(256)) * (size // 256)
    hold_pika_writes(pair.connection)
    pair.transport.write(payload[: size // 2])
    pair.transport.write(payload[size // 2 :])
    flush_pika_writes(pair.connection)
    assert pair.transport._tx_buffers  # the socket took only part of it
    assert pair.watch == ["set_writer"]  # the rest waits for writability, pika's way
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(pair.peer_reads(size)))
    reader.start()
    pair.run_until(lambda: not pair.transport._tx_buffers)
    reader.join(LIMIT)
    assert bytes(got) == payload  # whole and in order
    assert pair.watch == ["set_writer", "remove_writer"]


def test_a_socket_error_at_the_flush_aborts_the_connection_as_pika_would(pair: _Pair) -> None:
    pair.peer.close()
    hold_pika_writes(pair.connection)
    pair.transport.write(b"into the void")
    flush_pika_writes(pair.connection)  # raises nothing: pika's handler meets the error
    pair.run_until(lambda: bool(pair.protocol.lost))
    assert isinstance(pair.protocol.lost[0], OSError)


def test_a_marked_connection_reads_once_per_readable_event(pair: _Pair) -> None:
    data = bytes(range(256)) * 40  # 10 KB: pika reads 4 KB at a time
    pair.peer.sendall(data)
    pair.transport._consume()
    assert pair.protocol.received == [data]
    with pytest.raises(BlockingIOError):  # nothing more: pika's handler treats it as always
        pair.transport._consume()


def test_a_marked_connection_loses_nothing_beyond_one_read(pair: _Pair) -> None:
    data = bytes(range(256)) * (3 * RECV_BYTES // 256 + 7)
    sender = threading.Thread(target=pair.peer.sendall, args=(data,))
    sender.start()
    pair.run_until(lambda: sum(map(len, pair.protocol.received)) >= len(data))
    sender.join(LIMIT)
    assert b"".join(pair.protocol.received) == data
    assert len(pair.protocol.received) >= 4  # one read per turn of the loop, at most 64 KB


def test_a_marked_connection_sees_the_end_of_the_stream(pair: _Pair) -> None:
    pair.peer.shutdown(socket.SHUT_WR)
    with pytest.raises(_AsyncPlaintextTransport.RxEndOfFile):
        pair.transport._consume()


def test_a_connection_not_marked_keeps_pikas_reads() -> None:
    pair = _Pair(marked=False)
    try:
        data = bytes(range(256)) * 40
        pair.peer.sendall(data)
        with pytest.raises(BlockingIOError):  # pika reads until the socket is empty
            pair.transport._consume()
        assert b"".join(pair.protocol.received) == data
        assert len(pair.protocol.received) == 3  # 4 KB at a time
    finally:
        pair.close()
