#!/bin/sh
# pip, with the image build's optional sources (see the Dockerfile's header): run as
# `sh pip.sh ARGS...` inside a RUN that mounts the secrets ca_bundle and pip_index_url.
#   ca_bundle      CA certificates (PEM) trusted besides pip's own: pip gets a bundle of both.
#   pip_index_url  the index pip uses instead of PyPI. pip hides its password in what it prints.
# Either may be absent or empty: pip then runs as it would without this script.
set -eu
secrets=/run/secrets
if [ -s "$secrets/ca_bundle" ]; then
    # pip's own trust (certifi, as pip vendors it), then the extra certificates.
    certifi=$(python -c 'from pip._vendor import certifi; print(certifi.where())')
    bundle=$(mktemp)
    trap 'rm -f "$bundle"' EXIT
    cat "$certifi" "$secrets/ca_bundle" >"$bundle"
    export PIP_CERT="$bundle"
fi
if [ -s "$secrets/pip_index_url" ]; then
    PIP_INDEX_URL=$(cat "$secrets/pip_index_url")
    export PIP_INDEX_URL
fi
python -m pip "$@"
