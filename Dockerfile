# pipelex-server: one image for both roles.
#
#   docker build -t pipelex-server .
#   docker run --rm -p 8081:8081 -v pipelex-data:/data pipelex-server            # HTTP API (the default command)
#   docker run --rm --no-healthcheck pipelex-server pipelex-server worker         # Temporal worker (EXECUTION_MODE=temporal)
#
# docker-compose.yml runs both roles with PostgreSQL, Temporal and an S3 server.
#
# - The build context is whitelisted by .dockerignore: pyproject.toml, requirements.lock, README.md, LICENSE, src/.
# - Dependencies are installed from PyPI with the lock as constraints; the [dev] extras are not installed.
# - The process runs as uid/gid 10001 and keeps its data in /data (DATA_DIR): the SQLite run store by default, and the
#   runtime's home (DATA_DIR/pipelex-home, which the server sets as PIPELEX_HOME itself). Mount a volume on /data when
#   the run store is SQLite; with DATABASE_URL (PostgreSQL) /data only holds the home, which is rebuilt at every boot.
# - The working directory, /home/pipelex, is empty: the server refuses to start next to a .env file or a .pipelex/.
# - tini is PID 1 and forwards SIGTERM/SIGINT to the server, which then shuts down gracefully (docs/deployment.md).
#   Allow it the time to (`docker stop -t 70`, compose `stop_grace_period`): open requests get up to 60 s.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv in /opt/venv with the project and its pinned dependencies -----------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /build

# The dependencies first, in their own layer: it is rebuilt only when pyproject.toml or the lock changes.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/dependencies.txt \
    && pip install -c requirements.lock -r /tmp/dependencies.txt

# Then the project itself (a regular, non-editable install: nothing of /build is needed at run time).
COPY README.md LICENSE ./
COPY src ./src
RUN pip install -c requirements.lock . \
    && pip check

# ---- runtime: the virtualenv on a clean base, no compilers, no build files -----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="pipelex-server" \
      org.opencontainers.image.description="REST API server that builds and executes Pipelex (MTHDS) pipelines" \
      org.opencontainers.image.licenses="MIT"

# tini from the base image's Debian release (not version-pinned: Debian replaces point releases in its archive).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pipelex \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /home/pipelex \
        --shell /usr/sbin/nologin pipelex \
    && install -d -o 10001 -g 10001 -m 0750 /home/pipelex /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/pipelex \
    DATA_DIR=/data \
    DO_NOT_TRACK=1 \
    LOG_FORMAT=json

WORKDIR /home/pipelex
USER 10001:10001

EXPOSE 8081

# Readiness of the HTTP role: /health/ready is 200 once the run store answers and the runtime has booted and warmed
# (/health only says the process serves; a failed runtime boot keeps it 200 but /health/ready 503). With the
# standard library (the slim image has no curl), bypassing any HTTP(S)_PROXY; a 503 raises, so the check fails.
# A worker container serves no HTTP: run it with --no-healthcheck (compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as r; sys.exit(0 if r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8081/health/ready', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["tini", "--"]
CMD ["pipelex-server", "serve", "--host", "0.0.0.0", "--port", "8081"]
