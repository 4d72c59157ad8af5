"""The worker's admission rules, as pure functions (no broker)."""

from __future__ import annotations

import dataclasses

import pytest

from reqrep.common import Settings
from reqrep.common.envelope import BAD_REQUEST, METHOD_NOT_FOUND, POISON_REQUEST, ErrorInfo
from reqrep.worker import Service
from reqrep.worker.admission import (
    Delivery,
    Expired,
    Passed,
    Poison,
    Unanswerable,
    classify,
    screen,
)

SETTINGS = Settings(max_redeliveries=2, max_message_bytes=100)
NOW_MS = 1_000_000.0
GOOD = Delivery(
    method="echo",
    correlation_id="c1",
    reply_to="amq.gen-1",
    content_type="application/json",
    message_id="k1",
    headers={"x-deadline": int(NOW_MS) + 5000},
    redelivered=False,
    size=10,
)


def _with(**changes: object) -> Delivery:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


def test_a_good_request_passes_with_its_deadline() -> None:
    assert screen(GOOD, SETTINGS, NOW_MS) == Passed(int(NOW_MS) + 5000, 0)


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        ({"reply_to": None}, "reply_to"),
        ({"reply_to": ""}, "reply_to"),
        ({"reply_to": b"\xff"}, "reply_to"),
        ({"correlation_id": None}, "correlation_id"),
        ({"correlation_id": ""}, "correlation_id"),
    ],
)
def test_unanswerable(changes: dict[str, object], missing: str) -> None:
    assert screen(_with(**changes), SETTINGS, NOW_MS) == Unanswerable(missing)


def test_past_its_deadline() -> None:
    late = _with(headers={"x-deadline": int(NOW_MS) - 1})
    assert screen(late, SETTINGS, NOW_MS) == Expired(int(NOW_MS) - 1)


@pytest.mark.parametrize("headers", [None, "junk", {"x-deadline": "soon"}, {"x-deadline": True}])
def test_a_deadline_that_is_not_a_number_is_ignored(headers: object) -> None:
    assert isinstance(screen(_with(headers=headers), SETTINGS, NOW_MS), Passed)


def test_poison_on_delivery_max_redeliveries_plus_one() -> None:
    """max_redeliveries=2: deliveries 1 and 2 run; delivery 3, after two deaths, is refused."""
    counted = {"x-delivery-count": 2}
    assert screen(_with(headers=counted, redelivered=False), SETTINGS, NOW_MS) == Passed(None, 0)
    verdict = screen(_with(headers=counted, redelivered=True), SETTINGS, NOW_MS)
    assert isinstance(verdict, Poison)
    assert verdict.deliveries == 3
    assert verdict.error.code == POISON_REQUEST
    assert verdict.error.details == {"delivery_count": 3}
    assert "delivered 3 times" in verdict.error.message
    assert "died on each of the 2 before" in verdict.error.message
    below = _with(headers={"x-delivery-count": 1}, redelivered=True)
    assert screen(below, SETTINGS, NOW_MS) == Passed(None, 1)


def _service() -> Service:
    service = Service("svc")
    service.add("echo", lambda payload: payload)
    return service


def test_classify_finds_the_handler() -> None:
    handler = classify(GOOD, _service(), SETTINGS)
    assert not isinstance(handler, ErrorInfo)
    assert handler("x") == "x"


@pytest.mark.parametrize(
    ("changes", "code", "error_type"),
    [
        ({"method": None}, BAD_REQUEST, "BadRequest"),
        ({"method": b"\xff"}, BAD_REQUEST, "BadRequest"),
        ({"content_type": "text/plain"}, BAD_REQUEST, "BadRequest"),
        ({"content_type": b"\xff"}, BAD_REQUEST, "BadRequest"),
        ({"size": 101}, BAD_REQUEST, "MessageTooLarge"),
        ({"method": "nope"}, METHOD_NOT_FOUND, "MethodNotFound"),
    ],
)
def test_classify_refuses(changes: dict[str, object], code: str, error_type: str) -> None:
    refused = classify(_with(**changes), _service(), SETTINGS)
    assert isinstance(refused, ErrorInfo)
    assert (refused.code, refused.type) == (code, error_type)


def test_a_floating_point_deadline_counts_too() -> None:
    """Clients in other languages may send the deadline as a double (AMQP ``d``)."""
    late = _with(headers={"x-deadline": NOW_MS - 1.5})
    assert screen(late, SETTINGS, NOW_MS) == Expired(int(NOW_MS) - 2)
    early = _with(headers={"x-deadline": NOW_MS + 5000.0})
    assert screen(early, SETTINGS, NOW_MS) == Passed(int(NOW_MS) + 5000, 0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"123", "123"])
def test_a_deadline_of_another_type_is_ignored(value: object) -> None:
    assert screen(_with(headers={"x-deadline": value}), SETTINGS, NOW_MS) == Passed(None, 0)
