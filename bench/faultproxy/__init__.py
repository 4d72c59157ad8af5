"""A loopback TCP proxy that breaks the network on purpose, for fault-injection tests.

``FaultProxy`` sits between AMQP clients and the broker on one machine. Tests point a client at
``proxy.url_netloc`` instead of the broker, then add latency, cut (RST) every connection,
blackhole the traffic (a silent partition), or refuse new connections (a broker that is down).

Safety: it binds an IPv4 loopback address only, and it only ever connects to the one upstream
address it was given, which must also be an IPv4 loopback literal (no name resolution).

Threads: one background *loop thread* (started by ``start()``) owns every socket and all
forwarding state; it runs a ``selectors`` event loop over non-blocking sockets (no thread per
connection). The *test thread* (any thread, really) calls the control methods; they hand their
change to the loop thread through a lock-protected queue plus a wake-up socketpair and return
once the loop has applied it, so a change is in force for every byte read after the call
returns. Everything is bounded: connections, buffered bytes per direction (the proxy stops
reading from a side whose bytes are not being delivered), latency, connect and drain times,
and how long a control call or ``stop()`` waits for the loop.

The parts: ``_proxy`` (``FaultProxy``: lifecycle, faults, the control hand-off and the loop
thread's select loop), ``_forward`` (what the loop thread does with bytes and sockets: accept,
read, delay, write, close) and ``_links`` (a proxied connection, its two ends and two pipes).
"""

from __future__ import annotations

from bench.faultproxy._proxy import FaultProxy

__all__ = ["FaultProxy"]
