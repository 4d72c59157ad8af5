# reqrep worker / CLI image.
#
#   docker build -t reqrep .
#   docker run --rm -e AMQP_URL=amqp://user:pass@host:5672/%2F reqrep          # demo worker
#   docker run --rm -e AMQP_URL=... reqrep call echo '{"hello": "world"}' --service demo
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
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb')).get('project', {}).get('dependencies', []); open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project itself (README.md is pyproject's `readme`). Installed as a regular (non-editable)
# package, so the sources are removed afterwards and nothing shadows the installed packages.
# reqrep/ links common/, requestor/ and worker/ in: the wheel holds the one package `reqrep`.
COPY README.md ./
COPY reqrep/ reqrep/
COPY common/ common/
COPY requestor/ requestor/
COPY worker/ worker/
RUN pip install --no-cache-dir --no-deps . \
 && cd / && rm -rf /tmp/src

WORKDIR /home/reqrep
USER 10001:10001

# The worker drains in-flight calls on SIGTERM (give it ~30 s: see stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["reqrep"]
CMD ["worker", "reqrep.worker.demo:service"]
