#!/usr/bin/env bash
# The pika side of CI's matrix, after the main test run (bash scripts/test.sh, newest pika, the
# short roads on):
#
#   1. the whole suite but the cluster tests, on the lowest pika pyproject allows, in a venv of
#      its own (.venv-pika-low): reqrep's short roads and guard are on for it, as for the newest;
#   2. the integration tests with REQREP_PIKA_FASTPATH=0: pika's own road everywhere, the guard
#      still on.
#
#   bash scripts/test-pika-matrix.sh            # both
#   bash scripts/test-pika-matrix.sh lowest     # or: fastpath-off
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
lowest=$("${PYTHON:-python3}" - <<'PY'
import re, sys
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
[pika] = [d for d in deps if d.startswith("pika")]
print(re.search(r">=\s*([0-9.]+)", pika).group(1))
PY
)

if [ "$which" = all ] || [ "$which" = lowest ]; then
    venv=.venv-pika-low
    if [ ! -x "$venv/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pika==$lowest"
    echo "== pytest on pika $("$venv/bin/python" -c 'import pika; print(pika.__version__)')"
    "$venv/bin/python" -m pytest -q -m "not cluster" -p no:cacheprovider
fi

if [ "$which" = all ] || [ "$which" = fastpath-off ]; then
    echo "== pytest tests/integration with REQREP_PIKA_FASTPATH=0"
    REQREP_PIKA_FASTPATH=0 .venv/bin/python -m pytest -q -m "integration and not cluster" \
        -p no:cacheprovider tests/integration
fi
