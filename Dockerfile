# syntax=docker/dockerfile:1
# Build stage: compile wheels for the package and its dependencies.
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY webhook ./webhook
# The dependencies exactly as locked, each file checked against its hash (the server
# relies on aiohttp internals: a new release must arrive by a new lock, which the tests
# have seen, never by a rebuild), then the package alone.
RUN python -m pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock \
    && python -m pip wheel --wheel-dir /wheels --no-deps .

# Runtime stage: no compilers, no pip cache, a non-root numeric user.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels pod-runtime-webhook==0.1.0
COPY policies /etc/webhook/policies
# A numeric UID lets the kubelet verify runAsNonRoot without an /etc/passwd entry.
USER 65532:65532
ENV WEBHOOK_POLICIES=/etc/webhook/policies WEBHOOK_CERT_DIR=/etc/webhook/certs
EXPOSE 8443
ENTRYPOINT ["webhook", "serve"]
