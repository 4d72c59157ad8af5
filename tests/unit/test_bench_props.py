"""bench.props without a broker: the properties it flips are those the protocol lists, the bytes
each adds, the order of its pairs, and which run of a pair is "with"."""

from __future__ import annotations

import re
from typing import Any

from bench.cases.raw_props import NOT_MEASURED, PROPERTIES, reply_properties, request_properties
from bench.props import added_bytes
from bench.props._cli import parse_args
from bench.props._run import measured, pair_order, summarize
from tests.unit.doc_text import ROOT

PROTOCOL = ROOT / "docs" / "protocol.md"


def _table_names(heading: str) -> set[str]:
    """The property and header names of the table under ``heading`` in docs/protocol.md."""
    lines = PROTOCOL.read_text().splitlines()
    start = lines.index(heading) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## "))
    names = set()
    for line in lines[start:end]:
        found = re.match(r"\| (?:header )?`([^`]+)` \|", line)
        if found:
            names.add(found.group(1))
    return names


def test_every_property_of_the_protocol_is_measured_or_says_why_not() -> None:
    requests = {p.name for p in PROPERTIES if p.side == "request"}
    replies = {p.name.removeprefix("reply.") for p in PROPERTIES if p.side == "reply"}
    documented = _table_names("## Request (requestor to worker)")
    assert documented - set(NOT_MEASURED) <= requests
    assert _table_names("## Reply (worker to requestor)") <= replies
    # and what is measured beyond the tables: the publish's flags and the exchange
    assert requests - documented == {"mandatory", "exchange"}
    assert all(prop.needed_by for prop in PROPERTIES)


def test_the_usual_request_carries_what_reqrep_puts_on_an_untraced_call() -> None:
    props = request_properties((), correlation_id="c" * 32, reply_to="amq.gen-x", durable=True)
    assert (props.delivery_mode, props.content_type, props.type) == (2, "application/json", "echo")
    assert props.message_id == props.correlation_id
    assert props.expiration == "30000"
    assert set(props.headers) == {"x-deadline"}
    traced = request_properties(
        ("traceparent", "x-deadline"), correlation_id="c", reply_to="q", durable=False
    )
    assert traced.delivery_mode == 1
    assert set(traced.headers) == {"traceparent"}
    reply = reply_properties((), correlation_id="c", user_id="guest")
    assert (reply.content_type, reply.type, reply.user_id) == ("application/json", "reply", None)


def test_the_bytes_each_property_adds() -> None:
    assert added_bytes("mandatory", True) == (0, 0)  # a flag bit of basic.publish
    assert added_bytes("delivery_mode", True) == (1, 0)
    assert added_bytes("expiration", True) == (1 + len("30000"), 0)
    assert added_bytes("message_id", True) == (1 + 32, 0)
    # the whole headers table: its length, then the key, a type octet and an int64
    assert added_bytes("x-deadline", True) == (4 + 1 + len("x-deadline") + 1 + 8, 0)
    assert added_bytes("exchange", True) == (len("reqrep.requests"), 0)
    # 32 hex digits instead of a 6-digit counter, in correlation_id and message_id; and the reply
    assert added_bytes("correlation_id", True) == (2 * 26, 26)
    assert added_bytes("reply.type", True) == (0, 1 + len("reply"))
    assert added_bytes("reply_to", True) == (1 + 30, 0)
    assert added_bytes("reply.user_id", False) == (0, 1 + len("guest"))


def test_pairs_alternate_direction_and_order() -> None:
    props = measured()[:2]
    first = pair_order(props, 1)
    assert first == [(props[0], False), (props[0], True), (props[1], False), (props[1], True)]
    assert pair_order(props, 2) == [
        (props[1], True),
        (props[1], False),
        (props[0], True),
        (props[0], False),
    ]
    assert "reply_to" not in {p.name for p in measured()}
    assert parse_args(["--only", "x-deadline"]).only == ["x-deadline"]


def _run(prop: str, flipped: bool, calls_per_s: float, round_no: int = 1) -> dict[str, Any]:
    result = {"calls_per_s": calls_per_s, "latency_ms": {"p50": 1000.0 / calls_per_s}}
    cpu = {"client": 10.0, "server": 10.0, "broker": 10.0}
    return {
        "property": prop,
        "flipped": flipped,
        "round": round_no,
        "ok": True,
        "result": result,
        "cpu_us_per_call": cpu,
    }


def test_with_is_the_usual_run_or_for_an_occasional_property_the_flipped_one() -> None:
    runs = [
        _run("expiration", False, 900.0),  # usual: with it
        _run("expiration", True, 1000.0),
        _run("traceparent", False, 1000.0),  # usual: without it
        _run("traceparent", True, 800.0),
        _run("type", False, 1000.0),  # a pair with one run only is left out
    ]
    rows = {row["property"]: row for row in summarize(runs)}
    assert rows["expiration"]["ratio"]["calls_per_s"] == 0.9
    assert rows["traceparent"]["ratio"]["calls_per_s"] == 0.8
    assert rows["traceparent"]["ratio"]["client_us"] == 1.0
    assert rows["type"]["rounds"] == 0
    assert rows["type"]["ratio"]["calls_per_s"] is None
    assert not rows["reply_to"]["measured"]
