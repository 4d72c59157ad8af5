"""One ``recv()`` per readable event, for reqrep's own connections.

pika's plaintext transport reads a readable socket 4 KB at a time until ``recv()`` fails with
``EAGAIN``: every readable event costs one system call more than it reads, and that failure is an
exception raised through two pika layers and logged at debug level. In a serial run that is
one of the three ``recv()`` calls per call on each side (strace), and with 64 calls in flight
a batch of replies (about 16 KB) takes five reads, each appended to pika's frame buffer by
copying it whole.

On connections marked with ``use_fast_deliveries`` (``common/_pika_deliver.py``), ``_consume``
here makes one ``recv()`` of up to 64 KB and returns. Nothing is lost: pika's pollers are
level-triggered, so bytes still waiting (or arriving meanwhile) wake the loop again at once.
End of file and errors are raised as pika's own ``_consume`` raises them, to the same handler.
It replaces one method of pika (``_AsyncPlaintextTransport._consume``), once per process; other
connections, TLS ones included, keep pika's behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

from reqrep.common._pika_deliver import MARK

__all__ = ["install_single_reads"]

log = logging.getLogger("reqrep.connection")

RECV_BYTES = 64 * 1024  # pika's limit per readable event is 100 KB; one read stays under it

_applied = False


def install_single_reads() -> bool:
    """Install the one-read ``_consume`` once per process; False if pika's internals differ."""
    global _applied  # noqa: PLW0603 - a once-per-process patch
    if _applied:
        return True
    try:
        from pika.adapters.utils import io_services_utils  # noqa: PLC0415 - only when applying

        transport = io_services_utils._AsyncPlaintextTransport
        original = transport._consume
        transport._sigint_safe_recv  # noqa: B018 - present, or pika's internals differ
    except (ImportError, AttributeError):
        log.debug("pika internals differ; reads are pika's")
        return False

    def consume(self: Any) -> None:
        single = self.__dict__.get("_reqrep_single")
        if single is None:  # decided once per transport: is its connection one of ours?
            connection = getattr(self._protocol, "conn", None)
            single = self._reqrep_single = bool(getattr(connection, MARK, False))
        if not single:
            original(self)
            return
        data = self._sigint_safe_recv(self._sock, RECV_BYTES)
        if not data:
            log.debug("the broker closed the socket")
            raise self.RxEndOfFile()
        self._protocol.data_received(data)

    transport._consume = consume
    _applied = True
    return True
