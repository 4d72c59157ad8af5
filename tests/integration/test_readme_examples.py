"""The README's examples, run as a user would paste them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from reqrep import Service

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(first_line: str) -> str:
    """The README's python code block that starts with ``first_line``."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"one README block should start with {first_line!r}"
    return found[0]


def test_the_testing_example_passes_under_pytest(tmp_path: Path, amqp_url: str) -> None:
    (tmp_path / "test_billing.py").write_text(_block("# test_billing.py"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_asyncio_example_defines_an_async_handler() -> None:
    namespace: dict[str, object] = {}
    exec(_block("import asyncio"), namespace)  # noqa: S102 - the README's own code
    service = namespace["service"]
    assert isinstance(service, Service)
    assert service.is_async("lookup")
    assert asyncio.iscoroutinefunction(namespace["main"])
