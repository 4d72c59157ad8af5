"""Fuzzing a running worker with arbitrary requests, published with bare pika.

The promise under test: whatever lands in a service's request queue, the worker keeps serving
correct calls; each bad message gets an error reply or is dead-lettered or dropped (rejected,
expired); none is delivered over and over; the worker's connection never dies.

Each example publishes one message straight into ``demo_worker.queue`` and then makes one real
call. The queue is FIFO and the worker judges deliveries in order on its I/O thread, so once the
call returns the message has been judged (its handler, if it got one, may still be running).
After all examples a model replays the messages in order, as README's "Wire protocol" and the
worker's checks describe them, and everything observed must match it: each reply, each
dead-lettered message and each of the worker's counters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pika
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.consumer import ConsumerStats
from reqrep.worker.demo import add, echo, fail
from tests.support import Admin, BareReplyQueue

JSON = "application/json"
# More for a soak run, e.g. REQREP_FUZZ_EXAMPLES=3000 pytest --timeout 600 ...
EXAMPLES = int(os.environ.get("REQREP_FUZZ_EXAMPLES", "150"))
MAX_BYTES = 2500  # this module's max_message_bytes: some bodies and results are too large
SETTLE = 20.0  # seconds: the longest the final phase waits for replies and dead letters
# Handlers that could block a pool thread (sleep, whoami) or burn CPU (fib) are never called.
AVOIDED = {"sleep", "fib", "whoami"}
HANDLERS = {"echo": echo, "add": add, "fail": fail}
KNOWN_METHODS = AVOIDED | set(HANDLERS)


@pytest.fixture
def settings(amqp_url: str, prefix: str) -> Settings:
    """tests/conftest.py's settings, with a size limit that fuzzed bodies cross both ways."""
    return Settings(
        url=amqp_url,
        timeout=10.0,
        connect_timeout=5.0,
        queue_prefix=prefix,
        max_message_bytes=MAX_BYTES,
    )


# -- the listener: an exclusive callback queue of our own -------------------------------------


class Listener(BareReplyQueue):
    """A BlockingConnection with an exclusive, server-named queue to point ``reply_to`` at.

    Replies are collected only while ``pump`` runs (on the test thread, bounded in time).
    """

    def __init__(self, url: str) -> None:
        self.replies: list[tuple[Any, bytes]] = []
        super().__init__(url)

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        self.replies.append((properties, body))

    def wait_for(self, count: int, timeout: float) -> list[tuple[Any, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.replies) < count and time.monotonic() < deadline:
            self.pump(0.05)
        return self.replies


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    with Listener(amqp_url) as reply_listener:
        yield reply_listener


# -- what to send --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Deadline:
    """An ``x-deadline`` relative to the moment of publishing, in milliseconds."""

    offset_ms: int


@dataclasses.dataclass(frozen=True)
class Spec:
    """One message as drawn; ``Sent`` is what it became once published."""

    body: bytes
    method: str | bytes | None
    content_type: str | None
    correlation_id: str | bytes | None  # made unique per message when not None or empty
    reply_to: str  # none | empty | mine | nowhere | self
    headers: dict[str, Any] | None
    message_id: str | bytes | None
    expiration: str | None
    delivery_mode: int | None


def _mostly(percent: int, usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """``usual`` about ``percent`` % of the time (nested ``one_of``s flatten into equal odds)."""
    return st.integers(0, 99).flatmap(lambda n: usual if n < percent else other)


_TEXT = st.text(max_size=50)  # at most 200 bytes of UTF-8: fits a short string with a prefix
_RAW = st.binary(min_size=1, max_size=50)  # often not UTF-8: pika hands such values over as bytes

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


_JSON_BODIES = st.builds(_dumps, _JSON_VALUES, st.booleans())
_SPECIAL_BODIES = st.sampled_from(
    [
        b"",
        b"null",
        b" 1 ",
        b"NaN",
        b"-Infinity",
        b"1e400",  # valid JSON; Python reads it as inf, which cannot be encoded back
        b'"\\ud800"',  # a lone surrogate: valid JSON text, not encodable as UTF-8
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b'{"a": 1, "b": 2}',
        b'{"a": "x", "b": 1}',
        b'{"a": 1e308, "b": 1e308}',
        b'{"a": [1], "b": [2]}',
        b'{"message": "boom"}',
        b"9" * 5000,  # more digits than Python converts to an int
        b'{"a": 1, "a": 2, "b": 3}',
        b"[1, 2,]",
        b"\xff\xfe\x00",
    ]
)
# Deep nesting: clearly within or clearly beyond Python's recursion limit on any thread.
_DEEP_BODIES = (st.integers(1, 200) | st.integers(3000, 6000)).map(lambda n: b"[" * n + b"]" * n)
_NUMBERS = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
_ADD_BODIES = st.one_of(
    st.builds(lambda a, b: _dumps({"a": a, "b": b}, True), _NUMBERS, _NUMBERS),
    st.builds(lambda a, b: _dumps({"a": a, "b": b}, False), _JSON_VALUES, _JSON_VALUES),
)
_FAIL_BODIES = st.one_of(
    st.builds(lambda m: _dumps({"message": m}, False), _JSON_VALUES),
    # Error messages around README's cut at 2,000 characters.
    st.integers(1990, 2010).map(lambda n: _dumps({"message": "m" * n}, True)),
)
# 4 bytes per 1e9 in the request, 13 in the reply (1000000000.0): results over the limit.
_GROWING_BODIES = st.integers(50, 400).map(lambda n: b"[" + b",".join([b"1e9"] * n) + b"]")
_BODIES = st.one_of(
    _ADD_BODIES,
    _FAIL_BODIES,
    _JSON_BODIES,
    st.binary(max_size=2000),
    st.builds(lambda b, cut: b[:cut], _JSON_BODIES, st.integers(0, 50)),  # truncated JSON
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    _SPECIAL_BODIES,
    _DEEP_BODIES,
    _GROWING_BODIES,
)


def _not_avoided(value: str | bytes) -> bool:
    return _wire(value) not in {m.encode() for m in AVOIDED}


_METHODS = _mostly(
    55,
    st.sampled_from(list(HANDLERS)),
    st.one_of(
        st.none(),
        st.sampled_from(["", "nope", "Echo", "echo "]),
        _TEXT.filter(_not_avoided),
        _RAW.filter(_not_avoided),
    ),
)
_CONTENT_TYPES = _mostly(
    60,
    st.sampled_from([JSON, "application/json; charset=utf-8", " Application/JSON ;x=y"]),
    st.one_of(st.none(), st.sampled_from(["APPLICATION/JSON", "text/plain", "", ";"]), _TEXT, _RAW),
)
_HEADER_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_HEADER_VALUES = st.recursive(
    _HEADER_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=6,
)
_PAST = st.one_of(
    st.builds(Deadline, st.integers(-(10**9), -1000)),
    st.sampled_from([0, -1, -(2**63)]),
)
_FUTURE = st.one_of(
    st.builds(Deadline, st.integers(600_000, 10**11)),
    st.just(2**63 - 1),
)
_GARBAGE_DEADLINES = st.one_of(
    st.sampled_from(["garbage", "", True, False, None, b"\x00", [1], {"ms": 1}]),
    st.text(max_size=20),
    # Far from now: a number of milliseconds near the present would make the outcome a race.
    st.integers(-(2**63), 2**63 - 1).filter(lambda v: abs(v - time.time() * 1000) > 3.6e6),
)
_DELIVERY_COUNTS = st.one_of(st.integers(-2, 9), st.sampled_from(["7", True, None, 2**40]))
_HEADERS = _mostly(
    45,
    st.none(),
    st.one_of(
        st.just({}),
        st.fixed_dictionaries({"x-deadline": _PAST}),
        st.fixed_dictionaries({"x-deadline": _FUTURE}),
        st.fixed_dictionaries({"x-deadline": _GARBAGE_DEADLINES}),
        st.fixed_dictionaries({"x-delivery-count": _DELIVERY_COUNTS}),
        st.fixed_dictionaries(
            {
                "x-deadline": _PAST | _FUTURE | _GARBAGE_DEADLINES,
                "x-delivery-count": _DELIVERY_COUNTS,
            }
        ),
        st.dictionaries(st.text(max_size=20), _HEADER_VALUES, max_size=4),
    ),
)
# A few shared keys, so that some messages share an idempotency key with an earlier one.
_MESSAGE_IDS = _mostly(
    50,
    st.none(),
    st.one_of(st.just(""), st.sampled_from(["k0", "k1", "k2"]), _TEXT, _RAW),
)


def _requests(method: str | bytes | None) -> st.SearchStrategy[Spec]:
    """Messages for ``method``; its handler's usual payloads are likelier than others."""
    body = _BODIES
    if method == "add":
        body = _mostly(50, _ADD_BODIES, _BODIES)
    elif method == "fail":
        body = _mostly(50, _FAIL_BODIES, _BODIES)
    elif method == "echo":
        body = _mostly(20, _GROWING_BODIES, _BODIES)
    return st.builds(
        Spec,
        body=body,
        method=st.just(method),
        content_type=_CONTENT_TYPES,
        correlation_id=_mostly(
            85, st.text(min_size=1, max_size=50) | _RAW, st.sampled_from([None, ""])
        ),
        reply_to=_mostly(
            65, st.just("mine"), st.sampled_from(["none", "empty", "nowhere", "self"])
        ),
        headers=_HEADERS,
        message_id=_MESSAGE_IDS,
        expiration=_mostly(80, st.none(), st.integers(0, 50).map(str) | st.just("60000")),
        delivery_mode=st.sampled_from([None, 1, 2]),
    )


_REQUESTS = _METHODS.flatmap(_requests)


# -- what was sent, and what should have come of it ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    """A message as published; ``app_id`` (which the worker ignores) names it in dead letters."""

    app_id: str
    spec: Spec
    reply_to: str | None
    correlation_id: str | bytes | None
    headers: dict[str, Any] | None
    published_ms: float

    def describe(self) -> str:
        fields = dataclasses.asdict(self.spec) | {"correlation_id": self.correlation_id}
        text = ", ".join(f"{k}={v!r:.80}" for k, v in fields.items() if k != "body")
        return f"{self.app_id}: body={self.spec.body!r:.80} {text}"


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the worker should do with one message (or one of its replies)."""

    outcome: str  # broker_expired | rejected | expired | poison | duplicate | refused | handled
    reply: bool = False
    ok: bool = False
    result: Any = None
    code: str | None = None
    error_type: str | None = None
    message: str | None = None  # checked when not None
    original: Sent | None = None  # for a duplicate: the message whose reply it repeats


def _wire(value: str | bytes | None) -> bytes | None:
    """A short string as it travels: pika sends str as UTF-8 and hands back bytes that are not."""
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else value


def _int_header(headers: dict[str, Any] | None, name: str) -> int | None:
    value = (headers or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_json_content_type(content_type: str | None) -> bool:
    """README: ``application/json``, matched case-insensitively, parameters allowed."""
    return bool(content_type) and str(content_type).split(";", 1)[0].strip().lower() == JSON


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _clip(text: str) -> str:
    """README: a message longer than 2,000 characters is cut there and says how much was cut."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= 2000:
        return text
    return text[:2000] + f"... [{len(text) - 2000} more chars]"


def _handled(method: str, body: bytes) -> Expect:
    """What running the demo handler on ``body`` should answer."""
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Expect("handled", reply=True, code="bad_request", error_type="BadRequest")
    try:
        result = HANDLERS[method](payload)
    except Exception as exc:  # noqa: BLE001 - the worker turns any handler failure into a reply
        return Expect(
            "handled",
            reply=True,
            code="handler_error",
            error_type=type(exc).__name__,
            message=_clip(str(exc)),
        )
    try:  # as README's reply: compact UTF-8 JSON (a lone surrogate is not UTF-8)
        reply = {"ok": True, "result": result}
        text = json.dumps(reply, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        encoded = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return Expect("handled", reply=True, code="handler_error", error_type="SerializationError")
    if len(encoded) > MAX_BYTES:
        return Expect("handled", reply=True, code="handler_error", error_type="MessageTooLarge")
    return Expect("handled", reply=True, ok=True, result=json.loads(encoded)["result"])


def _judge(sent: Sent, answered: dict[bytes, tuple[Sent, Expect]]) -> Expect:
    """The worker's checks, in its order (worker/consumer.py), for a delivered message."""
    spec = sent.spec
    if not _wire(sent.reply_to) or not _wire(sent.correlation_id):
        return Expect("rejected")
    deadline = _int_header(sent.headers, "x-deadline")
    if deadline is not None and deadline < sent.published_ms:
        return Expect("expired")
    # No poison here: every message is a first delivery, and on a first delivery the worker
    # ignores an x-delivery-count header (the publisher wrote it, not the broker).
    key = _wire(spec.message_id) or None
    if key is not None and key in answered:
        original, first = answered[key]
        return dataclasses.replace(first, outcome="duplicate", original=original)
    refused = _refusal(spec)
    if refused is not None:
        return refused
    expect = _handled((_wire(spec.method) or b"").decode("utf-8"), spec.body)
    if key is not None and expect.outcome == "handled":
        answered[key] = (sent, expect)
    return expect


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _refusal(spec: Spec) -> Expect | None:
    """The error reply the worker gives at once, without running a handler; None if none."""
    method = _wire(spec.method)
    if not method or not _utf8(method) or not _is_json_content_type(spec.content_type):
        return Expect("refused", reply=True, code="bad_request", error_type="BadRequest")
    if len(spec.body) > MAX_BYTES:
        return Expect("refused", reply=True, code="bad_request", error_type="MessageTooLarge")
    if method not in {name.encode() for name in KNOWN_METHODS}:
        return Expect("refused", reply=True, code="method_not_found", error_type="MethodNotFound")
    return None


@dataclasses.dataclass
class Model:
    """The expected fate of every message, given which ones the broker expired in the queue."""

    fates: list[tuple[Sent, Expect]]
    stats: dict[str, int]
    self_replies: int
    dead: Counter[str]  # app_id (or "reply") -> how many dead letters


def _model(sent: list[Sent], broker_expired: set[str], calls: int) -> Model:
    answered: dict[bytes, tuple[Sent, Expect]] = {}
    fates: list[tuple[Sent, Expect]] = []
    stats = Counter({"received": calls, "replied": calls})
    dead: Counter[str] = Counter()
    self_replies = 0
    for message in sent:
        if message.app_id in broker_expired:
            fates.append((message, Expect("broker_expired")))
            dead[message.app_id] += 1
            continue
        expect = _judge(message, answered)
        fates.append((message, expect))
        stats["received"] += 1
        if expect.outcome in ("rejected", "expired"):
            stats[expect.outcome] += 1
        if expect.outcome == "poison":
            stats["poisoned"] += 1
        elif expect.reply:
            stats["replied"] += 1
        if expect.outcome == "duplicate":
            stats["deduplicated"] += 1
        if expect.outcome in ("rejected", "poison"):
            dead[message.app_id] += 1
        if expect.reply and message.spec.reply_to == "nowhere":
            stats["replies_returned"] += 1
        if expect.reply and message.spec.reply_to == "self":
            # The reply lands in the request queue with no reply_to: rejected, dead-lettered.
            self_replies += 1
            stats["received"] += 1
            stats["rejected"] += 1
            dead["reply"] += 1
    counters = {f.name: stats[f.name] for f in dataclasses.fields(ConsumerStats)}
    return Model(fates, counters, self_replies, dead)


# -- checking what came back -----------------------------------------------------------------


def _reply_problems(sent: Sent, expect: Expect, properties: Any, body: bytes) -> list[str]:
    """How one reply differs from the protocol's reply and from what was expected."""
    problems: list[str] = []
    if _wire(properties.correlation_id) != _wire(sent.correlation_id):
        problems.append(f"correlation_id {properties.correlation_id!r}")
    if properties.content_type != JSON or properties.type != "reply":
        problems.append(f"properties {properties.content_type!r} {properties.type!r}")
    try:
        reply = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        return [*problems, f"body is not UTF-8 JSON ({exc}): {body!r:.200}"]
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return [*problems, f"not a reply object: {body!r:.200}"]
    if reply["ok"]:
        if not expect.ok or "result" not in reply or reply["result"] != expect.result:
            problems.append(f"got {body!r:.200}, expected {expect}")
        return problems
    error = reply.get("error")
    if not isinstance(error, dict) or not all(
        isinstance(error.get(k), str) for k in ("code", "type", "message")
    ):
        return [*problems, f"malformed error: {body!r:.200}"]
    if not isinstance(error.get("details"), dict):
        problems.append(f"details is not an object: {body!r:.200}")
    if expect.ok or (error["code"], error["type"]) != (expect.code, expect.error_type):
        problems.append(f"got {body!r:.200}, expected {expect}")
    elif expect.message is not None and error["message"] != expect.message:
        got, want = error["message"], expect.message
        problems.append(f"message ({len(got)} chars) ...{got[-60:]!r} != ...{want[-60:]!r}")
    if error["code"] == "method_not_found" and "echo" not in error["details"].get("methods", []):
        problems.append(f"details.methods does not list the methods: {body!r:.200}")
    return problems


def _check(
    model: Model,
    replies: list[tuple[Any, bytes]],
    dead: list[tuple[Any, bytes]],
    stats: dict[str, int],
) -> list[str]:
    """Everything observed that the model did not predict, and everything missing."""
    problems: list[str] = []
    if stats != model.stats:
        problems.append(f"worker stats {stats} != expected {model.stats}")
    return problems + _check_replies(model, replies) + _check_dead_letters(model, dead)


def _check_replies(model: Model, replies: list[tuple[Any, bytes]]) -> list[str]:
    """Exactly the replies the model predicts reached our queue, each as expected."""
    problems: list[str] = []
    by_id: dict[bytes | None, list[tuple[Any, bytes]]] = {}
    for properties, body in replies:
        by_id.setdefault(_wire(properties.correlation_id), []).append((properties, body))
    first_reply: dict[str, bytes] = {}
    for message, expect in model.fates:
        if message.spec.reply_to != "mine":
            continue
        got = by_id.pop(_wire(message.correlation_id), []) if _wire(message.correlation_id) else []
        want = 1 if expect.reply else 0
        if len(got) != want:
            problems.append(
                f"{len(got)} replies, expected {want} ({expect}) to {message.describe()}"
            )
            continue
        for properties, body in got:
            problems += [
                f"{p} in reply to {message.describe()}"
                for p in _reply_problems(message, expect, properties, body)
            ]
            first_reply[message.app_id] = body
            original = expect.original
            if original is not None and first_reply.get(original.app_id, body) != body:
                problems.append(f"duplicate {message.app_id} not answered as {original.app_id}")
    return problems + [f"unexpected replies {v!r:.300}" for v in by_id.values()]


def _check_dead_letters(model: Model, dead: list[tuple[Any, bytes]]) -> list[str]:
    """Exactly the dead letters the model predicts, each for the expected reason."""
    problems: list[str] = []
    letters: Counter[str] = Counter()
    for properties, body in dead:
        reasons = [d.get("reason") for d in (properties.headers or {}).get("x-death", [])]
        if properties.app_id is None and properties.type == "reply":
            # A reply the worker sent to its own request queue: check it as any other reply.
            letters["reply"] += 1
            to_self = [
                (m, e)
                for m, e in model.fates
                if m.spec.reply_to == "self"
                and _wire(m.correlation_id) == _wire(properties.correlation_id)
            ]
            if reasons[:1] != ["rejected"] or len(to_self) != 1:
                problems.append(f"dead-lettered reply {properties.correlation_id!r}: {reasons}")
                continue
            message, expect = to_self[0]
            problems += [
                f"{p} in dead-lettered reply to {message.describe()}"
                for p in _reply_problems(message, expect, properties, body)
            ]
            continue
        letters[properties.app_id] += 1
        fate = next((e for m, e in model.fates if m.app_id == properties.app_id), None)
        wanted = "expired" if fate is not None and fate.outcome == "broker_expired" else "rejected"
        if fate is None or reasons[:1] != [wanted]:
            problems.append(f"dead letter {properties.app_id!r} ({reasons}): expected {fate}")
    if letters != model.dead:
        problems.append(f"dead letters {dict(letters)} != expected {dict(model.dead)}")
    return problems


def _drain(admin: Admin, queue: str) -> list[tuple[Any, bytes]]:
    """Whatever is in ``queue`` now (basic_get: quorum queue counts lag)."""
    taken: list[tuple[Any, bytes]] = []
    for _ in range(10_000):
        method, properties, body = admin.channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        taken.append((properties, body))
    return taken


def _stats(worker: Worker) -> dict[str, int]:
    return dataclasses.asdict(worker.stats)


# -- the tests --------------------------------------------------------------------------------


def test_fuzzed_requests_never_break_the_worker(
    demo_worker: Worker, requestor: Requestor, admin: Admin, listener: Listener
) -> None:
    started = time.monotonic()
    nowhere = f"fuzz-nowhere-{uuid.uuid4().hex}"
    destinations = {
        "none": None,
        "empty": "",
        "mine": listener.queue,
        "nowhere": nowhere,
        "self": demo_worker.queue,
    }
    dead_letter_queue = f"{demo_worker.queue}.dead"
    sent: list[Sent] = []
    calls = 0

    def publish(spec: Spec) -> Sent:
        n = len(sent)
        correlation_id = spec.correlation_id
        if isinstance(correlation_id, str) and correlation_id:
            correlation_id = f"fz{n}-{correlation_id}"
        elif isinstance(correlation_id, bytes):
            correlation_id = f"fz{n}-".encode() + correlation_id
        now_ms = time.time() * 1000
        headers = spec.headers
        if headers is not None:
            headers = {
                k: int(now_ms + v.offset_ms) if isinstance(v, Deadline) else v
                for k, v in headers.items()
            }
        message = Sent(
            app_id=f"fuzz-{n}",
            spec=spec,
            reply_to=destinations[spec.reply_to],
            correlation_id=correlation_id,
            headers=headers,
            published_ms=now_ms,
        )
        properties = pika.BasicProperties(
            content_type=spec.content_type,
            headers=headers,
            delivery_mode=spec.delivery_mode,
            correlation_id=correlation_id,
            reply_to=message.reply_to,
            expiration=spec.expiration,
            message_id=spec.message_id,
            type=spec.method,
            app_id=message.app_id,
        )
        sent.append(message)  # before publishing: a message the broker took must be counted
        admin.publish(demo_worker.queue, spec.body, properties)
        return message

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(spec=_REQUESTS)
    def one_message_then_a_real_call(spec: Spec) -> None:
        nonlocal calls
        reconnects = demo_worker.reconnects
        message = publish(spec)
        calls += 1
        assert requestor.call("echo", calls, timeout=10) == calls, message.describe()
        assert demo_worker.reconnects == reconnects, f"worker reconnected: {message.describe()}"
        listener.pump(0)  # keep the listener's connection serviced

    one_message_then_a_real_call()
    examples = time.monotonic() - started

    # Handlers may still be running: wait (bounded) until what was observed matches the model.
    replies, dead = listener.replies, []
    deadline = time.monotonic() + SETTLE
    while True:
        listener.pump(0.05)
        dead += _drain(admin, dead_letter_queue)
        expired = {
            p.app_id
            for p, _ in dead
            if [d.get("reason") for d in (p.headers or {}).get("x-death", [])][:1] == ["expired"]
        }
        model = _model(sent, expired, calls)
        if not _check(model, replies, dead, _stats(demo_worker)) or time.monotonic() > deadline:
            break
    listener.pump(0.5)  # anything more would be a reply or dead letter too many
    dead += _drain(admin, dead_letter_queue)
    problems = _check(model, replies, dead, _stats(demo_worker))
    assert not problems, "\n".join(problems[:30])

    # Every delivery was settled exactly once, none was given back, nothing is left over.
    stats = demo_worker.stats
    assert stats.received == stats.replied + stats.rejected + stats.expired + stats.poisoned
    assert (stats.requeued, stats.stale, demo_worker.reconnects) == (0, 0, 0)
    broker_expired = sum(1 for _, e in model.fates if e.outcome == "broker_expired")
    assert stats.received + broker_expired == len(sent) + calls + model.self_replies
    # A finished drain means every delivery was settled before the worker closed: nothing
    # can have gone back to the queue.
    assert demo_worker.stop(5), "the worker did not drain: some delivery was never settled"
    assert _drain(admin, demo_worker.queue) == [], "requests left in the queue"
    outcomes = Counter(e.outcome for _, e in model.fates)
    answers = Counter(e.error_type or "ok" for _, e in model.fates if e.reply)
    print(  # shown with -s: what this run covered
        f"\n{len(sent)} messages, {calls} calls in {examples:.1f}s; outcomes {dict(outcomes)}; "
        f"answers {dict(answers)}; worker {_stats(demo_worker)}; "
        f"{len(replies)} replies, {len(dead)} dead letters"
    )


def test_content_type_that_is_not_utf8_is_refused_not_fatal(
    demo_worker: Worker, requestor: Requestor, admin: Admin, listener: Listener
) -> None:
    properties = pika.BasicProperties(
        type="echo",
        content_type=b"\xffapplication/json",
        correlation_id="not-utf8",
        reply_to=listener.queue,
    )
    admin.publish(demo_worker.queue, b"1", properties)
    replies = listener.wait_for(1, 10)
    assert len(replies) == 1
    reply_properties, body = replies[0]
    assert reply_properties.correlation_id == "not-utf8"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert demo_worker.reconnects == 0  # the connection survived the message
    assert requestor.call("echo", 1, timeout=10) == 1
