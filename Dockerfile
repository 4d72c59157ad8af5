# reqrep worker / CLI image.
#
#   docker build -t reqrep .
#   docker run --rm -e AMQP_URL=amqp://user:pass@host:5672/%2F reqrep          # demo worker
#   docker run --rm -e AMQP_URL=... reqrep call echo '{"hello": "world"}' --service demo
#
# Build options (docker-compose.yml passes each from the variable named after the arrow):
#   --build-arg REQREP_EXTRAS=metrics,otel      <- REQREP_EXTRAS: extras of pyproject.toml to
#                                                  install too (tools: `reqrep bench`)
#   --secret id=ca_bundle,src=/path/ca.pem      <- REQREP_BUILD_CA_BUNDLE (a file): CA certificates
#                                                  pip trusts besides its own, for a proxy that
#                                                  intercepts TLS
#   --secret id=pip_index_url,env=VAR           <- REQREP_BUILD_PIP_INDEX_URL: the package index
#                                                  pip uses instead of PyPI (it may hold a token)
# The two secrets need BuildKit (Compose v2 builds with it). They are mounted only while pip runs,
# so neither reaches the image, its layers or `docker history`.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user (numeric id so runAsNonRoot-style checks can verify it).
RUN groupadd --system --gid 10001 reqrep \
 && useradd --system --uid 10001 --gid reqrep --home-dir /home/reqrep --create-home reqrep

WORKDIR /tmp/src

# Dependencies first, from pyproject.toml alone, so this layer is reused while only code changes.
# deploy/image/pip.sh runs pip with the two secrets above when they are given.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca_bundle --mount=type=secret,id=pip_index_url \
    --mount=type=bind,source=deploy/image/pip.sh,target=/tmp/pip.sh \
    python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb')).get('project', {}).get('dependencies', []); open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && sh /tmp/pip.sh install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project itself (README.md is pyproject's `readme`), and the extras asked for. Installed
# as a regular (non-editable) package, so the sources are removed afterwards and nothing shadows
# the installed packages. pyproject.toml maps the four package folders into the one package
# reqrep; LICENSE is the license file its metadata names.
COPY README.md LICENSE ./
COPY reqrep/ reqrep/
COPY common/ common/
COPY requestor/ requestor/
COPY worker/ worker/
ARG REQREP_EXTRAS=""
RUN --mount=type=secret,id=ca_bundle --mount=type=secret,id=pip_index_url \
    --mount=type=bind,source=deploy/image/pip.sh,target=/tmp/pip.sh \
    sh /tmp/pip.sh install --no-cache-dir . \
 && if [ -n "$REQREP_EXTRAS" ]; then sh /tmp/pip.sh install --no-cache-dir ".[$REQREP_EXTRAS]"; fi \
 && cd / && rm -rf /tmp/src

WORKDIR /home/reqrep
USER 10001:10001

# The worker drains in-flight calls on SIGTERM (give it ~30 s: see stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["reqrep"]
CMD ["worker", "reqrep.worker.demo:service"]
