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


def test_poison_only_on_a_redelivery_above_the_limit() -> None:
    counted = {"x-delivery-count": 3}
    assert screen(_with(headers=counted, redelivered=False), SETTINGS, NOW_MS) == Passed(None, 0)
    verdict = screen(_with(headers=counted, redelivered=True), SETTINGS, NOW_MS)
    assert isinstance(verdict, Poison)
    assert verdict.deliveries == 4
    assert verdict.error.code == POISON_REQUEST
    at_limit = _with(headers={"x-delivery-count": 2}, redelivered=True)
    assert screen(at_limit, SETTINGS, NOW_MS) == Passed(None, 2)


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
