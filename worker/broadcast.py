"""Broadcast calls on the worker's side: a call that every worker of a service answers.

A ``broadcast`` control message (``common/control.py``) carries a method (the header
``x-reqrep-method``) and a payload (the body, JSON), as a request does, and reaches every worker
of the service through its control queue. Each worker runs it as it runs a request, on a
handler thread or the handler loop (context, tracing, metrics, the caller's deadline), and
answers the asker with the reply a call would get, tagged with its id. Unlike a request it is
acknowledged when it arrives, as everything on the control queue is: a worker that dies while
it runs leaves it unanswered (the asker reports that worker as missing), and no other worker
runs it instead.

At most ``limit`` broadcasts (the worker's concurrency) run or wait here at once: whoever may
publish to the control exchange could otherwise queue handler runs without end, as the request
queue's prefetch prevents for requests. One more is answered at once with a ``TooManyPending``
error.

A plain service (``worker/plain.py``) takes no broadcasts: its workers answer
``method_not_found``, as workers of older versions do.

Threads: ``on_message`` on the worker's I/O thread; a job's answer is handed back to it with
``submit`` (the Link's) from the handler thread or loop that ran it.
"""

from __future__ import annotations

from collections.abc import Callable

from reqrep.common import control, envelope, serialization, topology, tracecontext
from reqrep.common._transport import Delivery
from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError
from reqrep.worker import admission
from reqrep.worker.control import Answer
from reqrep.worker.job import Job
from reqrep.worker.service import Service

__all__ = ["Broadcasts"]


class Broadcasts:
    """Turns broadcasts into jobs, and their replies into answers.

    ``dispatch`` hands a job to a handler thread or the loop (the Worker's, which never
    blocks); ``submit`` runs a function on the I/O thread (the Link's).
    """

    def __init__(
        self,
        service: Service,
        settings: Settings,
        dispatch: Callable[[Job], None],
        submit: Callable[[Callable[[], None]], None],
        *,
        limit: int,
    ) -> None:
        self._service = service
        self._max_bytes = settings.max_message_bytes
        self._dispatch = dispatch
        self._submit = submit
        self._limit = limit
        self.in_flight = 0  # dispatched, not yet answered (I/O thread)
        self.received = 0  # broadcasts run here

    def on_message(self, delivery: Delivery, answer: Answer) -> None:
        """A broadcast (its reply_to and correlation_id were checked): run it, or answer at
        once why not."""
        props = delivery.properties
        headers = props.headers if isinstance(props.headers, dict) else {}
        method = headers.get(control.METHOD_HEADER)
        problem = self._refusal(method, props.content_type, len(delivery.body))
        handler = self._service.get(method) if isinstance(method, str) else None
        if problem is None and handler is None:
            problem = envelope.ErrorInfo(
                envelope.METHOD_NOT_FOUND,
                "MethodNotFound",
                f"service {self._service.name!r} has no method {method!r}",
                {"methods": self._service.methods},
            )
        if problem is None and self.in_flight >= self._limit:
            problem = envelope.ErrorInfo(
                envelope.HANDLER_ERROR,
                "TooManyPending",
                f"this worker runs {self.in_flight} broadcasts already; try again later",
            )
        if problem is not None or handler is None:
            answer(envelope.error_body(problem or _no_method()))
            return
        self.received += 1
        self.in_flight += 1
        self._dispatch(
            Job(
                0,  # no delivery tag of the request queue: nothing to settle
                -1,
                str(method),
                props.correlation_id,
                props.reply_to,
                None,
                delivery.body,
                handler,
                admission.deadline_of(headers),
                trace=tracecontext.extract(headers),
                delivery=delivery,
                answer=lambda body: self._submit(lambda: self._done(answer, body)),
            )
        )

    def _done(self, answer: Answer, body: bytes | None) -> None:
        """A broadcast job is over: its answer goes out (None: none, it was skipped)."""
        self.in_flight -= 1
        if body is not None:
            answer(body)

    def _refusal(
        self, method: object, content_type: object, size: int
    ) -> envelope.ErrorInfo | None:
        try:
            topology.check_name("method", method)
        except ConfigError:
            return _no_method()
        if not serialization.is_json_content_type(content_type):
            return envelope.ErrorInfo(
                envelope.BAD_REQUEST,
                "BadRequest",
                f"content_type must be {serialization.CONTENT_TYPE!r}, got {content_type!r}",
            )
        if size > self._max_bytes:
            return envelope.ErrorInfo(
                envelope.BAD_REQUEST,
                "MessageTooLarge",
                f"broadcast body of {size} bytes exceeds max_message_bytes={self._max_bytes}",
            )
        return None


def _no_method() -> envelope.ErrorInfo:
    return envelope.ErrorInfo(
        envelope.BAD_REQUEST,
        "BadRequest",
        f"a broadcast names its method in the header {control.METHOD_HEADER!r}",
    )
