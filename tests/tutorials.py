"""The RabbitMQ tutorial's RPC client and server (``tests/third_party/rabbitmq_tutorials/``),
run unmodified, each in a child process, against the test broker.

They connect with ``pika.ConnectionParameters(host="localhost")``: port 5672, guest. The test
broker may listen elsewhere (``AMQP_URL``), so the child runs a shim first: in that process
only, ``pika.ConnectionParameters`` becomes a subclass that takes the test broker's address
and credentials, then the script runs as ``__main__``. The test process's pika is untouched.
On a broker at 127.0.0.1:5672 with guest the shim changes nothing the script would see.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "third_party" / "rabbitmq_tutorials"
CLIENT = FOLDER / "rpc_client.py"
SERVER = FOLDER / "rpc_server.py"
QUEUE = "rpc_queue"  # the queue both scripts name

_SHIM = """
import os, runpy, sys
import pika

broker = pika.URLParameters(os.environ["AMQP_URL"])


class TestBroker(pika.ConnectionParameters):
    def __init__(self, host="localhost", **options):
        options.setdefault("port", broker.port)
        options.setdefault("virtual_host", broker.virtual_host)
        options.setdefault("credentials", broker.credentials)
        super().__init__(host=broker.host if host == "localhost" else host, **options)


pika.ConnectionParameters = TestBroker  # this child process only
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def _argv(script: Path) -> list[str]:
    return [sys.executable, "-c", _SHIM, str(script)]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": url, "PYTHONUNBUFFERED": "1"}


def run_client(url: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``rpc_client.py`` (it asks for fib(30) and prints the answer) to its end. It waits
    for its reply without a timeout of its own: ``timeout`` bounds it here."""
    return subprocess.run(
        _argv(CLIENT), env=_env(url), capture_output=True, text=True, timeout=timeout, check=False
    )


def start_server(url: str) -> subprocess.Popen[str]:
    """Start ``rpc_server.py`` (it declares its queue, then serves until killed)."""
    return subprocess.Popen(
        _argv(SERVER),
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_server(server: subprocess.Popen[str]) -> str:
    """Stop the server (it has no shutdown of its own) and return what it printed."""
    server.terminate()
    try:
        out, _ = server.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        out, _ = server.communicate(timeout=10)
    return out
