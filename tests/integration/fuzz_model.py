"""The fuzz test's model of the worker: what should come of each message it sent (docs/protocol.md
and the worker's checks, replayed in order), and the checks of what came back
against it."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

from reqrep.worker.consumer import ConsumerStats
from tests.integration.fuzz_messages import HANDLERS, JSON, KNOWN_METHODS, Spec, wire

MAX_BYTES = 2500  # the fuzz test's max_message_bytes: some bodies and results are too large

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


def _int_header(headers: dict[str, Any] | None, name: str) -> int | None:
    value = (headers or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_json_content_type(content_type: str | None) -> bool:
    """docs/protocol.md: ``application/json``, matched case-insensitively, parameters allowed."""
    return bool(content_type) and str(content_type).split(";", 1)[0].strip().lower() == JSON


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """The protocol: a number too large for a double (``1e400``) is refused, not infinity."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a double")
    return value


def _clip(text: str) -> str:
    """The protocol: a message longer than 2,000 characters is cut there, saying how much."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= 2000:
        return text
    return text[:2000] + f"... [{len(text) - 2000} more chars]"


def expect_handled(method: str, body: bytes) -> Expect:
    """What running the demo handler on ``body`` should answer."""
    try:
        payload = json.loads(
            body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
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
    try:  # as the protocol's reply: compact UTF-8 JSON (a lone surrogate is not UTF-8)
        reply = {"ok": True, "result": result}
        text = json.dumps(reply, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        encoded = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return Expect("handled", reply=True, code="handler_error", error_type="SerializationError")
    if len(encoded) > MAX_BYTES:
        return Expect("handled", reply=True, code="handler_error", error_type="MessageTooLarge")
    return Expect("handled", reply=True, ok=True, result=json.loads(encoded)["result"])


Answered = dict[tuple[bytes | None, bytes], tuple[Sent, Expect]]  # (method, key) -> first


def _judge(sent: Sent, answered: Answered) -> Expect:
    """The worker's checks, in its order (worker/consumer.py), for a delivered message."""
    spec = sent.spec
    if not wire(sent.reply_to) or not wire(sent.correlation_id):
        return Expect("rejected")
    deadline = _int_header(sent.headers, "x-deadline")
    if deadline is not None and deadline < sent.published_ms:
        return Expect("expired")
    # No poison here: every message is a first delivery, and on a first delivery the worker
    # ignores an x-delivery-count header (the publisher wrote it, not the broker).
    # The protocol: the key is scoped by service and method; only a reply from running the
    # handler is kept (a body that is not JSON is refused before the handler runs).
    message_id = wire(spec.message_id) or None
    key = None if message_id is None else (wire(spec.method), message_id)
    if key is not None and key in answered:
        original, first = answered[key]
        return dataclasses.replace(first, outcome="duplicate", original=original)
    refused = _refusal(spec)
    if refused is not None:
        return refused
    expect = expect_handled((wire(spec.method) or b"").decode("utf-8"), spec.body)
    if key is not None and expect.outcome == "handled" and expect.error_type != "BadRequest":
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
    method = wire(spec.method)
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


def build_model(sent: list[Sent], broker_expired: set[str], calls: int) -> Model:
    answered: Answered = {}
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
    if wire(properties.correlation_id) != wire(sent.correlation_id):
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


def check(
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
        by_id.setdefault(wire(properties.correlation_id), []).append((properties, body))
    first_reply: dict[str, bytes] = {}
    for message, expect in model.fates:
        if message.spec.reply_to != "mine":
            continue
        got = by_id.pop(wire(message.correlation_id), []) if wire(message.correlation_id) else []
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
                and wire(m.correlation_id) == wire(properties.correlation_id)
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
