"""A handler the integration tests can hold at a gate, counting its runs."""

from __future__ import annotations

import threading

__all__ = ["Counted"]


class Counted:
    """A handler that counts its runs and can be held at a gate."""

    def __init__(self, *, gated: bool = False) -> None:
        self.runs = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        if not gated:
            self.release.set()

    def __call__(self, payload: object) -> object:
        self.runs += 1
        self.started.release()
        if not self.release.wait(30):
            raise TimeoutError("never released")
        return payload
