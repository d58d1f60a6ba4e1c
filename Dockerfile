# syntax=docker/dockerfile:1
# ollama-guard admission webhook image (design §13).
#   docker build -t ghcr.io/ollama-guard/ollama-guard:0.1.0 .
# Stage 1 builds wheels for the package and all its dependencies; the final stage installs
# them from a bind mount (BuildKit, the default builder), so neither the wheels nor any
# build tool ends up in the image.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel . --wheel-dir /wheels

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# uvicorn[standard] brings uvloop and httptools (binary wheels): `serve` runs on them, and the
# build fails here rather than shipping an image that would fall back to asyncio + h11.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
    && python -c "import uvloop, httptools"
# A numeric user, so runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
# Without --tls-cert, `serve` writes development certificates under ./certs: keep them in /tmp.
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["ollama-guard"]
CMD ["serve"]
