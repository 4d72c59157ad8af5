"""Which thread is an I/O thread: so that code shared with users never runs user code there.

``ConnectionThread`` marks its thread when it starts. ``on_io_thread()`` is then true only on the
threads that own a pika connection, where nothing may block (pika's loop, its heartbeats and
every other call share that thread).
"""

from __future__ import annotations

import threading

__all__ = ["mark_io_thread", "on_io_thread"]

_local = threading.local()


def mark_io_thread() -> None:
    """Called once by an I/O thread, on itself."""
    _local.io = True


def on_io_thread() -> bool:
    """True on a thread that owns a pika connection."""
    return getattr(_local, "io", False)
