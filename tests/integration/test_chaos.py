"""A short chaos run: workers SIGKILLed and every connection reset while calls are in flight.

The full benchmark is ``python -m bench.chaos``; this is the same code, smaller and paced so
that several kills and cuts land while calls run (about 15 s).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest

from bench.chaos import ChaosConfig, run_chaos


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_calls_survive_killed_workers_and_cut_connections(amqp_url: str) -> None:
    if not _loopback(amqp_url):
        pytest.skip("the fault proxy only fronts a broker on a loopback address")
    config = ChaosConfig(
        calls=600,
        workers=2,
        kill_every=1.5,
        cut_every=2.0,
        concurrency=32,
        idempotent_share=0.5,
        timeout=10.0,
        rate=50.0,  # 600 calls over ~12 s: several kills and cuts hit calls in flight
        max_seconds=90.0,
        url=amqp_url,
    )
    result = run_chaos(config)
    summary = "\n".join(f"{label}: {value}" for label, value, _ in result.rows())
    assert result.calls_sent == 600, summary
    assert result.workers_killed >= 3, summary
    assert result.connection_cuts >= 3, summary
    assert result.lost == 0, f"{summary}\n{result.samples}"
    assert result.hung == 0, f"{summary}\n{result.samples}"
    assert result.idempotent_sent == 300, summary
    assert result.idempotent_succeeded == result.idempotent_sent, f"{summary}\n{result.samples}"
    assert not result.harness_errors, summary
    # Every call that succeeded ran at least once: the side-effect log cannot be short.
    assert result.side_effects >= result.succeeded, summary
