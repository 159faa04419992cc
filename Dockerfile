# The connector proxy in every mode, from one image (make image):
#
#   podman run -p 7004:7004 -p 50051:50051 -v proxy-jobs:/var/lib/connector-proxy spiff-connector-proxy
#   podman run spiff-connector-proxy --grpc-only      # the gRPC server alone
#   podman run spiff-connector-proxy --shim-only      # the REST shim alone
#   podman run -e CONNECTOR_PROXY_JOBS_BROKER_URL=amqp://... spiff-connector-proxy --worker --workers 2
#
# Settings are the README's environment variables. The embedded job store lives on the volume
# /var/lib/connector-proxy (owned by uid 10001, the user the proxy runs as).

# --- the runtime dependencies, as listed in pyproject.toml, and those of the extras in EXTRAS ---
FROM python:3.11-slim AS requirements
# Comma-separated extras to install too, e.g. --build-arg EXTRAS=otel (traces; README "Tracing").
ARG EXTRAS=""
COPY pyproject.toml /src/
RUN python -c "import os, tomllib; project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [name for name in os.environ['EXTRAS'].split(',') if name]; \
print('\n'.join(project['dependencies'] + [d for name in extras for d in project['optional-dependencies'][name]]))" \
        > /requirements.txt

# --- build: the wheel (hatchling's hook generates the gRPC code) and a venv holding it ---------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The dependencies first, in a layer of their own: it is rebuilt only when the list changes,
# not for a change to the code or to another part of pyproject.toml.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

COPY pyproject.toml hatch_build.py README.md ./
COPY protos protos
COPY server server
COPY rest_shim rest_shim
COPY jobs jobs
COPY connector_proxy connector_proxy
COPY connectors connectors

# pip builds the wheel in an isolated environment with build-system.requires (hatchling,
# grpcio-tools), installs it without touching the dependencies above, then leaves the venv.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/spiff-connector-proxy --help > /dev/null

# --- runtime: the venv alone, no compilers, build tools or caches ----------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="spiff-connector-proxy" \
      org.opencontainers.image.description="A spiff-arena connector proxy whose commands are protobuf services: REST shim, gRPC server, job runner and job workers." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="python:3.11-slim"

# The artifacts connector's PDF engine (WeasyPrint) lays text out with pango, which brings
# fontconfig and harfbuzz; DejaVu is the fonts documents get unless they embed their own.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --gid 10001 connector-proxy \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/connector-proxy --no-create-home \
        --shell /usr/sbin/nologin connector-proxy \
    && mkdir -p /var/lib/connector-proxy \
    && chown 10001:10001 /var/lib/connector-proxy \
    && chmod 0700 /var/lib/connector-proxy

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONNECTOR_PROXY_HOST=0.0.0.0 \
    CONNECTOR_PROXY_JOBS_DB=/var/lib/connector-proxy/jobs.sqlite3

VOLUME /var/lib/connector-proxy
WORKDIR /var/lib/connector-proxy
USER 10001:10001

# REST (CONNECTOR_PROXY_PORT) and gRPC (CONNECTOR_PROXY_GRPC_PORT).
EXPOSE 7004 50051

# SIGTERM: readiness and health turn "not serving", calls in flight get
# CONNECTOR_PROXY_SHUTDOWN_GRACE seconds (30) before they are cancelled. SIGKILL follows after
# the stop timeout (podman and docker: 10 s, `run --stop-timeout`; Kubernetes:
# terminationGracePeriodSeconds, 30 s): give it more than the grace and any drain delay.
STOPSIGNAL SIGTERM

# GET /readiness on the REST port (the default and --shim-only modes); with --grpc-only, gRPC
# health on CONNECTOR_PROXY_GRPC_PORT; worker processes pass while they run (connector_proxy/probe.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "connector_proxy.probe"]

ENTRYPOINT ["spiff-connector-proxy"]
