"""Test helpers that talk to the broker directly, with bare pika (never through reqrep)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import pika
import pika.exceptions


class Admin:
    """A BlockingConnection for test set-up, inspection and clean-up (one thread only)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self._open_channel()

    def _open_channel(self) -> Any:
        channel = self._connection.channel()
        channel.confirm_delivery()  # publish() returns once the message is in the queue
        return channel

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()

    def _chan(self) -> Any:
        if self._connection.is_closed:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        if self.channel.is_closed:
            self.channel = self._open_channel()
        return self.channel

    def _do(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(channel)``; once more on a fresh connection if the broker dropped ours
        (a test may have restarted it)."""
        try:
            return fn(self._chan())
        except pika.exceptions.AMQPConnectionError:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
            self.channel = self._open_channel()
            return fn(self.channel)

    def queue_exists(self, name: str) -> bool:
        return self._exists(lambda channel: channel.queue_declare(name, passive=True))

    def exchange_exists(self, name: str) -> bool:
        return self._exists(lambda channel: channel.exchange_declare(name, passive=True))

    def _exists(self, look: Callable[[Any], object]) -> bool:
        """Whether a passive declaration succeeds (the broker answers 404 otherwise)."""
        try:
            look(self._chan())
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def consumer_count(self, name: str) -> int:
        return int(self._chan().queue_declare(name, passive=True).method.consumer_count)

    def message_count(self, name: str) -> int:
        return int(self._chan().queue_declare(name, passive=True).method.message_count)

    def delete_queue(self, name: str) -> None:
        self._do(lambda channel: channel.queue_delete(name))

    def delete_service_queues(self, prefix: str, service: str) -> None:
        """A service's request queue and dead-letter queue."""
        self.delete_queue(f"{prefix}{service}")
        self.delete_queue(f"{prefix}{service}.dead")

    def delete_exchange(self, name: str) -> None:
        self._do(lambda channel: channel.exchange_delete(name))

    def get_one(self, queue: str, timeout: float) -> tuple[Any, Any, bytes] | None:
        """Consume one message of ``queue`` (auto-ack), blocking until it comes or ``timeout``."""
        channel = self._chan()
        try:
            for method, properties, body in channel.consume(
                queue, auto_ack=True, inactivity_timeout=timeout
            ):
                return None if method is None else (method, properties, body)
        finally:
            channel.cancel()
        return None

    def publish(self, queue: str, body: bytes, properties: pika.BasicProperties) -> None:
        self._chan().basic_publish("", queue, body, properties)


_Q = TypeVar("_Q", bound="BareReplyQueue")


class BareReplyQueue:
    """A bare-pika connection with an exclusive, server-named queue to receive replies on.

    Subclasses say what to do with each reply in ``_on_reply``. One thread only.
    """

    def __init__(self, url: str, *, confirm: bool = False) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            self.channel = self.connection.channel()
            if confirm:
                self.channel.confirm_delivery()
            self.queue: str = self.channel.queue_declare("", exclusive=True).method.queue
            self.channel.basic_consume(self.queue, self._on_reply, auto_ack=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self: _Q) -> _Q:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def pump(self, seconds: float) -> None:
        """Let pika deliver what has arrived, for up to ``seconds``."""
        self.connection.process_data_events(time_limit=seconds)

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        raise NotImplementedError


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition in another process (no event to wait on), bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q ARGS`` against the test broker's node (``RABBITMQ_NODENAME``)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


def close_connections(name_part: str, reason: str = "test") -> int:
    """Close the broker's connections whose connection_name contains ``name_part``."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in out.splitlines()[1:]:  # the first line is the header
        pid, _, props = line.partition("\t")
        if '{"connection_name","' in props and name_part in props:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, reason],
                capture_output=True,
                check=True,
                timeout=60,
            )
            closed += 1
    return closed


class WorkerProcess:
    """``reqrep worker ...`` as a child process, its stderr read line by line on a thread."""

    started: ClassVar[list[WorkerProcess]] = []  # so the session can kill any a test left

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reqrep", "worker", *args],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        WorkerProcess.started.append(self)

    @classmethod
    def kill_leftovers(cls) -> int:
        """SIGKILL every worker process a test left running. A supervisor's children notice
        their parent is gone (``--parent-pid``) and drain and exit by themselves."""
        killed = 0
        for worker in cls.started:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)
                killed += 1
        cls.started.clear()
        return killed

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> list[str]:
        """Wait for ``count`` new stderr lines containing ``text``."""
        found: list[str] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {text!r} line within {timeout}s; log:\n{''.join(self.log)}"
                ) from None
            if text in line:
                found.append(line)
        return found

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"worker {self.proc.pid} did not exit within {timeout}s of SIGTERM; log:\n"
                + "".join(self.log)
            ) from None
        finally:
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
