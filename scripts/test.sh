#!/usr/bin/env bash
# Install the project and its test tools into a virtualenv, then run every check:
# ruff (lint + format), mypy, pytest. Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -q   # just the unit tests
#
# Integration tests need a RabbitMQ: $AMQP_URL, else 127.0.0.1:5672, else testcontainers (Docker).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${REQREP_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "== ruff"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
echo "== mypy"
"$venv/bin/python" scripts/typecheck.py
echo "== pytest"
"$venv/bin/python" -m pytest "$@"
