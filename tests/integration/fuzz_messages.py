"""What tests/integration/test_fuzz_requests.py sends: hypothesis strategies that draw one
message for a worker's request queue (``REQUESTS``), and the names of the methods it may call."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from hypothesis import strategies as st

from reqrep.worker.demo import add, echo, fail

JSON = "application/json"
# Handlers that could block a pool thread (sleep, whoami), hold a call (nap) or burn CPU (fib)
# are never called.
AVOIDED = {"sleep", "nap", "fib", "whoami"}
HANDLERS = {"echo": echo, "add": add, "fail": fail}
KNOWN_METHODS = AVOIDED | set(HANDLERS)


def wire(value: str | bytes | None) -> bytes | None:
    """A short string as it travels: pika sends str as UTF-8 and hands back bytes that are not."""
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else value


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
        b"1e400",  # valid JSON, beyond a double: refused (Python would read it as inf)
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
    # Error messages around the protocol's cut at 2,000 characters.
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
    return wire(value) not in {m.encode() for m in AVOIDED}


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


REQUESTS = _METHODS.flatmap(_requests)
