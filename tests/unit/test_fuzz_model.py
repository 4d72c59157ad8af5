"""The model the request fuzzer (tests/integration/test_fuzz_requests.py) checks the worker
against: it must agree with common/serialization.py, or the fuzz test fails for the wrong
reason."""

from __future__ import annotations

import pytest

from tests.integration.fuzz_model import expect_handled


@pytest.mark.parametrize(
    ("method", "body", "code", "error_type"),
    [
        ("echo", b"1e400", "bad_request", "BadRequest"),
        ("echo", b"[-1e400]", "bad_request", "BadRequest"),
        ("add", b'{"a": 1e308, "b": 1e308}', "handler_error", "SerializationError"),
    ],
)
def test_the_model_expects_what_the_worker_does_with_numbers_beyond_a_double(
    method: str, body: bytes, code: str, error_type: str
) -> None:
    expect = expect_handled(method, body)
    assert (expect.code, expect.error_type, expect.ok) == (code, error_type, False)
